"""The composite reward: hand-checked values, None policy, reference cache, TRL call form."""

from __future__ import annotations

import pytest

from editgrpo.annotators.chexpert_rules import RuleLabeler
from editgrpo.annotators.embeddings import build_embedder
from editgrpo.annotators.entities import LexiconEntityExtractor
from editgrpo.config import (
    EMBEDDER_NAMES,
    ENTITY_NAMES,
    LABELER_NAMES,
    RATESCORE_VERSION_NAMES,
    REWARD_COMPONENTS,
    RewardConfig,
)
from editgrpo.errors import UserError
from editgrpo.metrics.chexbert_f1 import pair_micro_f1
from editgrpo.metrics.radgraph_f1 import radgraph_f1_pair
from editgrpo.metrics.ratescore import RATESCORE_VERSIONS, ratescore_pair
from editgrpo.rewards.composite import CompositeReward

REF = "Mild cardiomegaly. Small left pleural effusion. No pneumothorax."


@pytest.fixture(scope="module")
def reward() -> CompositeReward:
    return CompositeReward()


def test_config_names_match_the_registries() -> None:
    from editgrpo.annotators.chexpert import LABELER_BACKENDS
    from editgrpo.annotators.embeddings import EMBEDDING_BACKENDS
    from editgrpo.annotators.entities import ENTITY_BACKENDS

    assert set(REWARD_COMPONENTS) == set(CompositeReward.COMPONENTS)
    assert set(LABELER_NAMES) == set(LABELER_BACKENDS)
    assert set(ENTITY_NAMES) == set(ENTITY_BACKENDS)
    assert set(EMBEDDER_NAMES) == set(EMBEDDING_BACKENDS)
    assert set(RATESCORE_VERSION_NAMES) == set(RATESCORE_VERSIONS)
    from editgrpo.annotators.entities import ENTITY_OUTPUTS
    from editgrpo.config import ENTITY_OUTPUTS as CONFIG_ENTITY_OUTPUTS

    assert {k: frozenset(v) for k, v in CONFIG_ENTITY_OUTPUTS.items()} == ENTITY_OUTPUTS


def test_a_backend_that_cannot_make_a_components_input_is_refused() -> None:
    # `rate` makes RaTE entities only: RadGraph F1 on it would be 0 for every text. Refused before
    # any model is loaded, with the fix.
    with pytest.raises(ValueError, match="graph_entities=radgraph"):
        CompositeReward(entities="rate")
    with pytest.raises(ValueError, match="entities=rate"):
        CompositeReward({"ratescore": 1.0}, entities="radgraph")
    from editgrpo.config import ConfigError, RewardConfig

    with pytest.raises(
        ConfigError, match="graph_entities = None: the 'rate' backend makes no RadGraph graphs"
    ):
        RewardConfig(entities="rate")
    assert not RewardConfig(entities="rate", graph_entities="radgraph").problems()


def test_graphs_from_a_separate_backend_score_like_a_shared_one(reward: CompositeReward) -> None:
    separate = CompositeReward(graph_entities="lexicon", graph_entity_options={"scope_words": 8})
    assert separate.graph_extractor is not separate.extractor and reward.graph_extractor is reward.extractor
    hyps = ["Mild cardiomegaly. No pleural effusion.", "Left lower lobe consolidation.", REF]
    assert separate.score(hyps, [REF] * 3) == reward.score(hyps, [REF] * 3)


def test_components_equal_the_metrics_on_the_annotations(reward: CompositeReward) -> None:
    hyp = "Mild cardiomegaly. No pleural effusion."
    (result,) = reward.score([hyp], [REF])
    labeler, extractor, embedder = RuleLabeler(), LexiconEntityExtractor(), build_embedder("lexical")
    h, r = extractor.extract_one(hyp), extractor.extract_one(REF)

    def rate(report):
        return [
            (e.rate_type, v)
            for e, v in zip(report.rate, embedder.embed([e.text for e in report.rate]), strict=True)
        ]

    expected = {
        "chexbert_micro14": pair_micro_f1(labeler.label_one(hyp), labeler.label_one(REF)),
        "radgraph_partial": radgraph_f1_pair(h.to_radgraph(), r.to_radgraph(), level="partial"),
        "ratescore": ratescore_pair(rate(h), rate(r), version="0.5"),
    }
    assert result.components == pytest.approx(expected)
    assert result.total == pytest.approx(sum(expected.values()))
    # Hand check of one component: hyp labels {Cardiomegaly} vs ref {Cardiomegaly, Pleural Effusion}
    # -> micro-F1 = 2*1 / (2*1 + 0 + 1) = 2/3.
    assert result.components["chexbert_micro14"] == pytest.approx(2 / 3)
    # The per-label breakdown agrees: cardiomegaly found, effusion missed, the rest negative.
    assert result.label_outcomes["Cardiomegaly"] == "tp"
    assert result.label_outcomes["Pleural Effusion"] == "fn"
    assert {v for k, v in result.label_outcomes.items() if k not in ("Cardiomegaly", "Pleural Effusion")} <= {
        "tn"
    }


def test_identical_report_scores_three_and_worse_reports_score_less(reward: CompositeReward) -> None:
    same, wrong = reward.score([REF, "No cardiomegaly. No effusion. Large pneumothorax."], [REF, REF])
    assert same.total == pytest.approx(3.0)
    assert wrong.total < same.total - 1.0


def test_weights_and_subsets() -> None:
    only = CompositeReward({"chexbert_micro14": 2.0})
    assert only.extractor is None and only.embedder is None  # unused annotators are not built
    (result,) = only.score(["Mild cardiomegaly."], [REF])
    assert result.components == {"chexbert_micro14": pytest.approx(2 / 3)}
    assert result.total == pytest.approx(4 / 3)
    with pytest.raises(ValueError, match="valid: radgraph_partial, chexbert_micro14, ratescore"):
        CompositeReward({"bleu": 1.0})
    with pytest.raises(ValueError, match="non-negative"):
        CompositeReward({"ratescore": -1.0})


def test_unscorable_samples_are_none_and_counted() -> None:
    reward = CompositeReward()
    results = reward.score([None, "Mild cardiomegaly."], [REF, None])  # type: ignore[list-item]
    assert [r.total for r in results] == [None, None]
    assert all(v is None for r in results for v in r.components.values())
    assert reward.stats.unscorable == 2 and reward.stats.samples == 2
    assert reward.stats.failures["ratescore"] == 2


def test_partial_scores_are_rescaled_to_the_full_range() -> None:
    class UnavailableEmbedder:
        """An Embedder (the protocol) whose model is down: every call raises."""

        name, dim = "unavailable", 8

        def embed(self, texts):
            raise RuntimeError("embedding model unavailable")

    reward = CompositeReward()
    reward.embedder = UnavailableEmbedder()
    (result,) = reward.score([REF], [REF])
    assert result.components["ratescore"] is None
    assert (
        result.components["chexbert_micro14"] == result.components["radgraph_partial"] == pytest.approx(1.0)
    )
    assert result.total == pytest.approx(3.0)  # (1 + 1) * 3/2
    assert reward.stats.partial == 1


def test_references_are_analysed_once(reward: CompositeReward) -> None:
    calls = []
    original = reward.analyze

    def counting(texts):
        calls.append(list(texts))
        return original(texts)

    reward.analyze = counting
    try:
        reward.score(["a", "b", "c", "d"], ["Ref one.", "Ref one.", "Ref one.", "Ref two."])
        reward.score(["e"], ["Ref one."])
    finally:
        del reward.analyze
    reference_batches = [batch for batch in calls if batch and batch[0].startswith("Ref")]
    assert reference_batches == [["Ref one.", "Ref two."]]


def test_trl_call_form(reward: CompositeReward) -> None:
    conversational = [
        [{"role": "assistant", "content": REF}],
        [{"role": "assistant", "content": [{"type": "text", "text": REF}]}],
    ]
    assert reward(
        prompts=["p", "p"], completions=conversational, reference=[REF, REF], completion_ids=None
    ) == [
        pytest.approx(3.0),
        pytest.approx(3.0),
    ]
    assert reward.__name__ == "editgrpo_radgraph_partial_plus_chexbert_micro14_plus_ratescore"
    with pytest.raises(ValueError, match="reference"):
        reward(prompts=["p"], completions=["x"])


def test_from_config() -> None:
    reward = CompositeReward.from_config(RewardConfig(components={"ratescore": 1.0}, ratescore_version="0.6"))
    assert reward.ratescore_version == "0.6" and reward.labeler is None


def _write_freqs(path, labeler: str = "rules", uncertain_as: str = "positive"):
    import json

    from editgrpo.text.observations import CHEXPERT_14

    freqs = {**dict.fromkeys(CHEXPERT_14, 0.1), "Cardiomegaly": 0.3, "Pleural Effusion": 0.2}
    data = {"labels": freqs, "counts": {}, "n": 10, "labeler": labeler, "uncertain_as": uncertain_as}
    path.write_text(json.dumps(data))
    return path, freqs


def test_chexpert_balanced_component_equals_the_metric(tmp_path) -> None:
    from editgrpo.metrics.chexpert_balanced import balanced_accuracy

    path, freqs = _write_freqs(tmp_path / "freqs.json")
    reward = CompositeReward({"chexpert_balanced": 1.0}, label_freqs=path)
    hyp = "Mild cardiomegaly. No pleural effusion."
    [result] = reward.score([hyp], [REF])
    labeler = RuleLabeler()
    expected = balanced_accuracy(labeler.label([hyp])[0], labeler.label([REF])[0], freqs)
    assert result.components["chexpert_balanced"] == pytest.approx(expected)
    # By hand: Cardiomegaly both positive (0.7 / 2); Pleural Effusion hyp negative, ref positive (0);
    # No Finding blank in both (ref has findings; hyp has cardiomegaly), Pneumothorax negated in the
    # ref and unmentioned in the hyp: these and the other 10 labels are both-0 (0.1 / 2 each).
    assert result.total == pytest.approx((0.35 + 12 * 0.05) / 14)
    # With chexbert_micro14 both components share the one labeler.
    both = CompositeReward({"chexpert_balanced": 1.0, "chexbert_micro14": 1.0}, label_freqs=path)
    assert both.labeler is not None and both.score([REF], [REF])[0].components["chexbert_micro14"] == 1.0


def test_chexpert_balanced_needs_a_matching_frequencies_file(tmp_path) -> None:
    with pytest.raises(
        UserError, match=r"needs label_freqs.*editgrpo label-stats MANIFEST --out freqs\.json"
    ):
        CompositeReward({"chexpert_balanced": 1.0})
    with pytest.raises(UserError, match="label frequencies file not found"):
        CompositeReward({"chexpert_balanced": 1.0}, label_freqs=tmp_path / "none.json")
    path, _ = _write_freqs(tmp_path / "freqs.json", labeler="chexbert")
    with pytest.raises(UserError, match="made with labeler='chexbert' but the reward uses labeler='rules'"):
        CompositeReward({"chexpert_balanced": 1.0}, label_freqs=path)
    path, _ = _write_freqs(tmp_path / "freqs.json", uncertain_as="negative")
    with pytest.raises(UserError, match="uncertain_as='negative'"):
        CompositeReward({"chexpert_balanced": 1.0}, label_freqs=path)


def test_config_requires_label_freqs_for_chexpert_balanced(tmp_path) -> None:
    from editgrpo.config import ConfigError

    with pytest.raises(
        ConfigError, match=r"label_freqs = None: is required when components include chexpert_balanced"
    ):
        RewardConfig(components={"chexpert_balanced": 1.0})
    with pytest.raises(ConfigError, match=r"editgrpo label-stats MANIFEST --out freqs\.json"):
        RewardConfig(components={"chexpert_balanced": 1.0})
    path, _ = _write_freqs(tmp_path / "freqs.json")
    reward = CompositeReward.from_config(
        RewardConfig(components={"chexpert_balanced": 1.0}, label_freqs=str(path))
    )
    assert reward.label_freqs is not None and reward.label_freqs["Cardiomegaly"] == 0.3


NORMAL_REF = "Heart size is normal. Lungs are clear. No pleural effusion or pneumothorax."
ABNORMAL_REF = "Mild cardiomegaly. Small left pleural effusion."


def test_an_empty_completion_gets_the_floor_by_default(reward: CompositeReward) -> None:
    # Measured before the floor: "" scored 1.5 of 3 against a normal reference (micro-F1-14 1.0 via
    # No Finding, RaTEScore's floor), more than a real but wrong one-sentence report.
    scoring = CompositeReward(empty_completion="score")
    for ref in (NORMAL_REF, ABNORMAL_REF):
        for empty in ("", "   \n\t "):
            (floored,) = reward.score([empty], [ref])
            assert floored.total == 0.0
            assert floored.components == dict.fromkeys(reward.components, 0.0)
            (scored,) = scoring.score([empty], [ref])
            assert scored.total is not None and scored.total > 0.0  # what the components give
    (scored,) = scoring.score([""], [NORMAL_REF])
    assert scored.total == pytest.approx(1.5, abs=0.05)
    # A real but wrong report now beats the empty one, as it should.
    (wrong,) = reward.score(["Mild pulmonary edema."], [NORMAL_REF])
    assert wrong.total > 0.0
    # The TRL reward-function form takes the same path; a non-string stays unscorable (None).
    assert reward(completions=["", REF, None], reference=[REF, REF, REF]) == [0.0, pytest.approx(3.0), None]


def test_emptiness_is_decided_after_the_evaluation_cleaner() -> None:
    # The authors' cleaning drops one-word sentences ("[EMPTY]" when nothing is left): with
    # empty_clean=editgrpo "Normal." is an empty report; with the default it is scored.
    authors = CompositeReward(empty_clean="editgrpo")
    default = CompositeReward()
    (cleaned,) = authors.score(["Normal."], [NORMAL_REF])
    (kept,) = default.score(["Normal."], [NORMAL_REF])
    assert cleaned.total == 0.0 and kept.total is not None and kept.total > 0.0
    assert authors.is_empty("[EMPTY]") and not default.is_empty("No effusion.")
    # The text scored is the original one: a non-empty completion scores the same either way.
    assert authors.score([REF], [REF]) == default.score([REF], [REF])
    with pytest.raises(ValueError, match="unknown empty_completion 'flor'; valid: floor, score"):
        CompositeReward(empty_completion="flor")
    with pytest.raises(ValueError, match="unknown cleaner"):
        CompositeReward(empty_clean="bogus")


def test_empty_completion_options_come_from_the_config() -> None:
    from editgrpo.config import ConfigError
    from editgrpo.rewards.composite import EMPTY_COMPLETION
    from editgrpo.text.clean import CLEANERS

    assert RewardConfig.EMPTY_COMPLETION == EMPTY_COMPLETION
    assert set(RewardConfig.CLEANERS) == set(CLEANERS)
    reward = CompositeReward.from_config(RewardConfig(empty_completion="score", empty_clean="editgrpo"))
    assert reward.empty_completion == "score" and reward.empty_clean == "editgrpo"
    with pytest.raises(ConfigError, match="empty_completion = 'flor': must be one of floor, score"):
        RewardConfig(empty_completion="flor")
