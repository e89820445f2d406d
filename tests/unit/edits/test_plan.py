"""Edit rules on hand-built analyses: unit vectors chosen so every cosine is known."""

from __future__ import annotations

import numpy as np
import pytest

from editgrpo.annotators.analysis import SentenceGraphEntity, TextAnalysis
from editgrpo.edits.apply import apply_edits
from editgrpo.edits.plan import (
    EDIT_RULES,
    RATE_TYPE_ORDER,
    RELEASE_AFFINITY,
    RELEASE_NEG_WEIGHT,
    RELEASE_PENALTY,
    plan_edits,
)
from fixtures.analyses import E1, E2, E3, at, build


def kinds(plan) -> list[tuple[str, int | None, int | None, str]]:
    return [(op.kind, op.rollout, op.reference, op.rule) for op in plan.ops]


REFERENCE = build(
    ("No effusion.", [("effusion", "NON-ABNORMALITY", E1)]),
    ("Heart is enlarged.", [("enlarged heart", "ABNORMALITY", E3)]),
)


def test_contradiction_wins_over_a_false_positive() -> None:
    rollout = build(
        ("Nodule seen.", [("nodule", "ABNORMALITY", E2)]),  # spurious: orthogonal to everything
        ("Effusion.", [("effusion", "ABNORMALITY", E1)]),  # contradicts "No effusion."
        ("Heart is enlarged.", [("enlarged heart", "ABNORMALITY", E3)]),
    )
    plan = plan_edits(rollout, REFERENCE, rng=np.random.default_rng(0))
    assert kinds(plan) == [("replace", 1, 0, "a")]
    plan = plan_edits(rollout, REFERENCE, max_ops=2, rng=np.random.default_rng(0))
    assert kinds(plan) == [("replace", 1, 0, "a"), ("delete", 0, None, "c")]
    edited = apply_edits(rollout.sentences, REFERENCE.sentences, plan)
    assert edited.text == "No effusion. Heart is enlarged."


@pytest.mark.parametrize(
    ("cos", "expected"),
    [(0.61, [("replace", 0, 0, "b")]), (0.59, [("delete", 0, None, "c"), ("append", None, 1, "e")])],
)
def test_replacement_only_when_the_score_reaches_tau(cos: float, expected: tuple) -> None:
    # Opposite presence at medium similarity: not a contradiction once contradiction_tau = 0.9, so
    # (b) decides on the mean best cosine, and (c) deletes when it stays below tau.
    rollout = build(("Effusion.", [("effusion", "ABNORMALITY", at(cos))]))
    # (The deleted sentence was the only one: rule (e) refills the empty text with a missing
    # reference sentence, y_1 by the seeded draw.)
    plan = plan_edits(rollout, REFERENCE, tau=0.6, contradiction_tau=0.9)
    assert kinds(plan) == expected


def test_replacement_scores_the_mean_over_the_false_positives() -> None:
    # Two spurious entities: cosines 0.9 and 0.2 with y_0's entity, mean 0.55 < 0.6 -> delete.
    rollout = build(
        ("Effusion and mass.", [("effusion", "ABNORMALITY", at(0.9)), ("mass", "ABNORMALITY", at(0.2))])
    )
    assert kinds(plan_edits(rollout, REFERENCE, contradiction_tau=0.95))[0] == ("delete", 0, None, "c")
    rollout = build(
        ("Effusion and mass.", [("effusion", "ABNORMALITY", at(0.9)), ("mass", "ABNORMALITY", at(0.4))])
    )
    assert kinds(plan_edits(rollout, REFERENCE, contradiction_tau=0.95)) == [("replace", 0, 0, "b")]


def test_false_negative_appends_without_duplicates() -> None:
    rollout = build(("No effusion.", [("effusion", "NON-ABNORMALITY", E1)]))
    reference = build(
        ("No effusion.", [("effusion", "NON-ABNORMALITY", E1)]),
        ("Heart is enlarged.", [("enlarged heart", "ABNORMALITY", E3)]),
        ("Heart is enlarged.", [("enlarged heart", "ABNORMALITY", E3)]),  # same finding again
        ("Nodule.", [("nodule", "ABNORMALITY", E2)]),
    )
    plan = plan_edits(rollout, reference, max_ops=10, rng=np.random.default_rng(3))
    assert [op.kind for op in plan.ops] == ["append", "append"]
    assert {op.rule for op in plan.ops} == {"d"}
    edited = apply_edits(rollout.sentences, reference.sentences, plan)
    sentences = edited.text.split(". ")
    assert len(sentences) == len(set(sentences)) == 3
    assert edited.text.startswith("No effusion. ")


def test_a_reference_sentence_already_in_the_rollout_is_not_appended() -> None:
    # The rollout states y_0's text but its analysis found no entity: y_0's entity is missing, yet
    # appending y_0 would duplicate a sentence.
    rollout = build(("Heart is enlarged.", []))
    reference = build(("Heart is enlarged.", [("enlarged heart", "ABNORMALITY", E3)]))
    assert plan_edits(rollout, reference).ops == ()


def test_empty_rollout_receives_a_missing_sentence() -> None:
    empty = TextAnalysis("", [], [])
    plan = plan_edits(empty, REFERENCE, rng=np.random.default_rng(0))
    assert len(plan.ops) == 1 and plan.ops[0].kind == "append" and plan.ops[0].rule == "d"
    edited = apply_edits([], REFERENCE.sentences, plan)
    assert edited.text in ("No effusion.", "Heart is enlarged.")
    assert edited.spans == ((0, len(edited.text), "reference"),)
    # A reference without entities has no missing sentence to give: the edit counts as unchanged
    # (rule (e)), never an empty edited copy.
    bare = build(("Unremarkable.", []))
    assert plan_edits(empty, bare).ops == ()


# A normal reference, and a one-sentence rollout whose only sentence is a false positive under every
# rule: (c) deletes it, which would leave an empty report.
NORMAL = build(
    ("No effusion.", [("effusion", "NON-ABNORMALITY", E1)]),
    ("Heart size is normal.", [("heart size", "NON-ABNORMALITY", E3)]),
    graph=[("effusion", "OBS-DA", 0), ("heart", "ANAT-DP", 1), ("normal", "OBS-DA", 1)],
)
ONE_SPURIOUS_SENTENCE = build(
    ("Mild pulmonary edema.", [("pulmonary edema", "ABNORMALITY", E2)]), graph=[("edema", "OBS-DP", 0)]
)


@pytest.mark.parametrize("rule", ["paper", "release", "radgraph"])
def test_deleting_the_only_sentence_is_refilled_with_a_missing_reference_sentence(rule: str) -> None:
    seen = set()
    for seed in range(20):
        plan = plan_edits(
            ONE_SPURIOUS_SENTENCE, NORMAL, rule=rule, max_ops=1, rng=np.random.default_rng(seed)
        )
        # The fallback runs after the operation loop, so it may be one op past max_ops (as in the
        # authors' release, which appends after its loop).
        assert [(op.kind, op.rollout, op.rule) for op in plan.ops] == [
            ("delete", 0, "c"),
            ("append", None, "e"),
        ]
        edited = apply_edits(ONE_SPURIOUS_SENTENCE.sentences, NORMAL.sentences, plan)
        assert edited.changed and edited.text in ("No effusion.", "Heart size is normal.")
        assert edited.spans == ((0, len(edited.text), "reference"),)
        seen.add(edited.text)
    assert len(seen) == 2  # a seeded uniform choice among the missing sentences


@pytest.mark.parametrize("rule", ["paper", "release", "radgraph"])
def test_an_edit_that_would_empty_the_report_is_dropped_without_a_missing_sentence(rule: str) -> None:
    # The reference holds no entity (no RaTE entity, no definite RadGraph observation): nothing can
    # refill the emptied text, so the plan is dropped and the rollout is left as it is.
    bare = build(("Unremarkable study.", []), graph=[("study", "ANAT-DP", 0)])
    plan = plan_edits(ONE_SPURIOUS_SENTENCE, bare, rule=rule, max_ops=1)
    assert plan.ops == ()
    edited = apply_edits(ONE_SPURIOUS_SENTENCE.sentences, bare.sentences, plan)
    assert not edited.changed and edited.text == "Mild pulmonary edema."


@pytest.mark.parametrize("rule", ["paper", "release", "radgraph"])
def test_no_plan_leaves_an_empty_text(rule: str) -> None:
    # Random small analyses (entities on a few shared directions, both presences, every RaTE type):
    # an applied plan is never empty, whatever max_ops deletes.
    directions = [E1, E2, E3, at(0.7), at(0.3)]
    types = ["ABNORMALITY", "NON-ABNORMALITY", "DISEASE", "NON-DISEASE", "ANATOMY"]
    labels = ["OBS-DP", "OBS-DA", "ANAT-DP"]
    gen = np.random.default_rng(11)

    def random_analysis(max_sentences: int) -> TextAnalysis:
        sentences, graph = [], []
        for i in range(int(gen.integers(0, max_sentences + 1))):
            members = [
                (f"e{int(gen.integers(5))}", types[int(gen.integers(5))], directions[int(gen.integers(5))])
                for _ in range(int(gen.integers(0, 3)))
            ]
            sentences.append((f"Sentence {i} {gen.integers(1000)}.", members))
            graph += [(name, labels[int(gen.integers(3))], i) for name, _, _ in members]
        return build(*sentences, graph=graph)

    applied = 0
    for trial in range(300):
        rollout, reference = random_analysis(3), random_analysis(3)
        plan = plan_edits(
            rollout, reference, rule=rule, max_ops=int(gen.integers(1, 4)), rng=np.random.default_rng(trial)
        )
        edited = apply_edits(rollout.sentences, reference.sentences, plan)
        if edited.changed:
            applied += 1
            assert edited.text.strip(), (trial, plan)
    assert applied > 30


@pytest.mark.parametrize("rule", ["paper", "radgraph"])
def test_a_rollout_equal_to_the_reference_is_not_edited(rule: str) -> None:
    # The reference states a finding both ways (absent in y_0, present in y_2 at cosine 1): each
    # rollout entity is supported, so none is a contradiction.
    graph = [("effusion", "OBS-DA", 0), ("heart", "ANAT-DP", 1), ("effusion", "OBS-DP", 2)]
    reference = build(
        ("No left effusion.", [("effusion", "NON-ABNORMALITY", E1)]),
        ("Heart is enlarged.", [("enlarged heart", "ABNORMALITY", E3)]),
        ("Right effusion.", [("effusion", "ABNORMALITY", E1)]),
        graph=graph,
    )
    rollout = build(*[(s.text, []) for s in reference.sentences], graph=graph)
    rollout.entities = list(reference.entities)
    assert plan_edits(rollout, reference, rule=rule, max_ops=3).ops == ()


def test_release_counts_a_non_entity_against_its_present_counterpart_as_a_false_positive() -> None:
    # Identical vectors (cosine 1), types NON-ABNORMALITY vs ABNORMALITY: the weighted score is
    # 1 * 0.1655 (LONG) * 0.3612 = 0.060 < 0.6 -> false positive; its raw best match (cos 1) >= tau
    # -> replaced by the reference sentence. The paper rule sees the same pair as a contradiction.
    weight = RELEASE_AFFINITY[1, 0] * RELEASE_NEG_WEIGHT
    assert weight == pytest.approx(0.16546764653692908 * 0.3612)
    reference = build(("Effusion.", [("effusion", "ABNORMALITY", E1)]))
    rollout = build(("No effusion.", [("effusion", "NON-ABNORMALITY", E1)]))
    assert kinds(plan_edits(rollout, reference, rule="release")) == [("replace", 0, 0, "b")]
    assert kinds(plan_edits(rollout, reference, rule="paper")) == [("replace", 0, 0, "a")]
    # Without the 0.3612 factor a DISEASE matching a NON-ABNORMALITY scores 0.98: not a false positive.
    reference = build(("No effusion.", [("effusion", "NON-ABNORMALITY", E1)]))
    rollout = build(("Pneumonia.", [("pneumonia", "DISEASE", E1)]))
    assert RELEASE_AFFINITY[2, 1] * RELEASE_PENALTY[2, 1] == pytest.approx(0.9820689020512646 * 0.3612)
    assert kinds(plan_edits(rollout, reference, rule="release")) == [("replace", 0, 0, "b")]
    # DISEASE against DISEASE (0.846, no penalty) passes, so the release leaves it alone.
    reference = build(("Pneumonia.", [("pneumonia", "DISEASE", E1)]))
    assert plan_edits(rollout, reference, rule="release").ops == ()


def test_release_deletes_a_false_positive_without_a_raw_match() -> None:
    reference = build(("Effusion.", [("effusion", "ABNORMALITY", E1)]))
    rollout = build(("Nodule.", [("nodule", "DISEASE", E2)]), ("Effusion.", [("effusion", "DISEASE", E1)]))
    assert kinds(plan_edits(rollout, reference, rule="release")) == [("delete", 0, None, "c")]


def test_release_constants_match_the_ratescore_module() -> None:
    from editgrpo.metrics import ratescore

    assert RATE_TYPE_ORDER == ratescore.RATE_TYPES
    np.testing.assert_array_equal(RELEASE_AFFINITY, ratescore.affinity_array("long"))
    assert ratescore.RATESCORE_VERSIONS["0.5"][1] == RELEASE_NEG_WEIGHT
    for r, row in enumerate(RATE_TYPE_ORDER):
        for c, col in enumerate(RATE_TYPE_ORDER):
            expected = RELEASE_NEG_WEIGHT if (row, col) in ratescore.NEG_PAIRS else 1.0
            assert RELEASE_PENALTY[r, c] == expected


def test_radgraph_rule_order() -> None:
    reference = build(
        ("No effusion.", []),
        ("Cardiomegaly.", []),
        graph=[("effusion", "OBS-DA", 0), ("cardiomegaly", "OBS-DP", 1)],
    )
    contradiction = build(("Effusion.", []), graph=[("effusion", "OBS-DP", 0)])
    assert kinds(plan_edits(contradiction, reference, rule="radgraph")) == [("replace", 0, 0, "a")]
    spurious = build(
        ("No effusion.", []), ("Nodule.", []), graph=[("effusion", "OBS-DA", 0), ("nodule", "OBS-DP", 1)]
    )
    plan = plan_edits(spurious, reference, rule="radgraph", max_ops=3)
    assert kinds(plan) == [("replace", 1, 1, "b")]
    only_spurious = build(("No effusion.", []), ("Cardiomegaly.", []), ("Nodule.", []))
    only_spurious.graph = [
        SentenceGraphEntity("effusion", "OBS-DA", 0),
        SentenceGraphEntity("cardiomegaly", "OBS-DP", 1),
        SentenceGraphEntity("nodule", "OBS-DP", 2),
    ]
    assert kinds(plan_edits(only_spurious, reference, rule="radgraph")) == [("delete", 2, None, "c")]
    missing = build(("No effusion.", []), graph=[("Effusion", "OBS-DA", 0)])  # lower-cased match
    assert kinds(plan_edits(missing, reference, rule="radgraph", max_ops=3)) == [("append", None, 1, "d")]


def test_max_ops_zero_and_bad_arguments() -> None:
    rollout = build(("Effusion.", [("effusion", "ABNORMALITY", E1)]))
    assert plan_edits(rollout, REFERENCE, max_ops=0).ops == ()
    with pytest.raises(ValueError, match=r"unknown edit rule 'papper'; valid: paper, release, radgraph"):
        plan_edits(rollout, REFERENCE, rule="papper")
    with pytest.raises(ValueError, match="max_ops must be >= 0"):
        plan_edits(rollout, REFERENCE, max_ops=-1)
    assert set(EDIT_RULES) == {"paper", "release", "radgraph"}


def test_choices_among_equals_are_uniform_and_seeded() -> None:
    # Three equally spurious sentences: each is deleted about a third of the time.
    rollout = build(*[(f"Nodule {k}.", [("nodule", "ABNORMALITY", E2)]) for k in range(3)])
    counts = np.zeros(3)
    for seed in range(300):
        counts[plan_edits(rollout, REFERENCE, rng=np.random.default_rng(seed)).ops[0].rollout] += 1
    assert counts.min() > 70
    first = plan_edits(rollout, REFERENCE, max_ops=3, rng=np.random.default_rng(7))
    assert first == plan_edits(rollout, REFERENCE, max_ops=3, rng=np.random.default_rng(7))


def test_deletion_prefers_the_most_spurious_sentence() -> None:
    # x_0: one spurious entity beside a supported one (1/2); x_1: only spurious entities (2/2).
    rollout = build(
        ("No effusion near the stomach.", [("effusion", "NON-ABNORMALITY", E1), ("stomach", "ANATOMY", E2)]),
        ("Nodule in the stomach.", [("nodule", "ABNORMALITY", E2), ("stomach", "ANATOMY", E2)]),
    )
    for seed in range(20):
        plan = plan_edits(rollout, REFERENCE, rng=np.random.default_rng(seed))
        assert kinds(plan) == [("delete", 1, None, "c")]
    # Without anatomy in the false-positive test, x_0 carries none at all.
    plan = plan_edits(rollout, REFERENCE, max_ops=3, anatomy_false_positives=False)
    assert [op.rollout for op in plan.ops if op.kind == "delete"] == [1]


def test_later_ops_see_earlier_ones() -> None:
    # Two reference sentences state the same absent finding; after (a) inserts one, the other's
    # entity is supported by the inserted sentence (no re-analysis), so nothing is appended.
    reference = build(
        ("No effusion.", [("effusion", "NON-ABNORMALITY", E1)]),
        ("No effusion seen.", [("effusion", "NON-ABNORMALITY", E1)]),
    )
    rollout = build(("Effusion.", [("effusion", "ABNORMALITY", E1)]), ("Heart normal.", []))
    chosen = set()
    for seed in range(30):
        plan = plan_edits(rollout, reference, max_ops=3, rng=np.random.default_rng(seed))
        assert len(plan.ops) == 1 and plan.ops[0].kind == "replace" and plan.ops[0].rollout == 0
        chosen.add(plan.ops[0].reference)
    assert chosen == {0, 1}  # uniform among the conflicting pairs
