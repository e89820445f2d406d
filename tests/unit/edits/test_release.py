"""``edit.rule=release`` against the authors' released code, point by point (issue 16).

Each expected output is worked out by hand from taokz/EditGRPO@5decc57: the server's
``flask_server/RaTEscore_extractor.py`` (``compare_entities_for_edits``: a rollout entity is a false
positive when max over reference entities of cos * affinity * penalty < 0.6; reference entities the
same way for false negatives; ``analyze_text_pair`` groups reference entities by sentence) and the
client's ``verl/utils/RaTEscore_extractor.py`` (``process_text_with_server_analysis``: replace ->
delete -> add, then the empty fallback). Affinities used below (RaTEScore LONG): ABNORMALITY ->
ABNORMALITY 0.4276, DISEASE -> DISEASE 0.8461, NON-ABNORMALITY -> NON-ABNORMALITY 0.0009,
NON-ABNORMALITY -> ABNORMALITY 0.1655 (* 0.3612).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from editgrpo.annotators.analysis import (
    AnalysedEntity,
    TextAnalysis,
    first_containing_sentence,
    release_sentences,
    with_convention,
)
from editgrpo.edits.apply import apply_edits
from editgrpo.edits.plan import analysis_convention, plan_edits
from editgrpo.text.sentences import split_sentences
from fixtures.analyses import E1, E2, E3, at, build


def release(rollout: TextAnalysis, reference: TextAnalysis, seed: int = 0, **options) -> tuple[list, str]:
    plan = plan_edits(rollout, reference, rule="release", rng=np.random.default_rng(seed), **options)
    edited = apply_edits(rollout.sentences, reference.sentences, plan)
    ops = [(op.kind, op.rollout, op.reference, op.rule) for op in plan.ops]
    return ops, edited.text if edited.changed else rollout.text


# --------------------------------------------------------------------------------------------
# 1. The sentence being replaced is never its own replacement
# --------------------------------------------------------------------------------------------


def test_a_reference_sentence_equal_to_the_replaced_one_is_skipped() -> None:
    # The rollout's sentence is y_0 word for word; its entity (ABNORMALITY, cos 1) scores
    # 1 * 0.4276 < 0.6: a false positive. replace_fp_sentence_complex_rs skips the group whose text
    # equals the sentence ("Skip same sentence") and takes "Effusion persists." (cos 0.8 >= 0.6).
    rollout = build(("Small effusion.", [("effusion", "ABNORMALITY", E1)]))
    reference = build(
        ("Small effusion.", [("effusion", "ABNORMALITY", E1)]),
        ("Effusion persists.", [("effusion", "ABNORMALITY", at(0.8))]),
    )
    assert release(rollout, reference) == ([("replace", 0, 1, "b")], "Effusion persists.")
    # The other sentence below tau: replacement fails, the sentence is deleted, the text is empty;
    # the fallback appends an unused false-negative sentence. Both reference entities are false
    # negatives (0.4276 and 0.8 * 0.4276 < 0.6), but "Small effusion." was processed (deleted).
    reference = build(
        ("Small effusion.", [("effusion", "ABNORMALITY", E1)]),
        ("Effusion persists.", [("effusion", "ABNORMALITY", at(0.5))]),
    )
    for seed in range(10):
        assert release(rollout, reference, seed) == (
            [("delete", 0, None, "c"), ("append", None, 1, "e")],
            "Effusion persists.",
        )


# --------------------------------------------------------------------------------------------
# 2. Deterministic: the first false positive in entity order, the first best sentence
# --------------------------------------------------------------------------------------------


def test_the_first_false_positive_whose_replacement_passes_is_replaced() -> None:
    # Three false positives (ABNORMALITY, 0.4276 at best). The first ("mass", cos 0.3 with the
    # only reference entity) fails tau; the client logs the failure and tries the next one,
    # "nodule" (cos 1), which succeeds; "opacity" would succeed too but comes later.
    rollout = build(
        ("Mass.", [("mass", "ABNORMALITY", at(0.3))]),
        ("Nodule.", [("nodule", "ABNORMALITY", E1)]),
        ("Opacity.", [("opacity", "ABNORMALITY", E1)]),
    )
    reference = build(("Nodule present.", [("nodule", "ABNORMALITY", E1)]))
    for seed in range(10):
        assert release(rollout, reference, seed) == (
            [("replace", 1, 0, "b")],
            "Mass. Nodule present. Opacity.",
        )


def test_ties_go_to_the_first_reference_group_and_negative_cosines_count_as_zero() -> None:
    # Two reference sentences with the same best cosine: the strict ">" keeps the first.
    rollout = build(("Nodule.", [("nodule", "ABNORMALITY", E1)]))
    reference = build(
        ("Nodule left.", [("nodule", "ABNORMALITY", E1)]),
        ("Nodule right.", [("nodule", "ABNORMALITY", E1)]),
    )
    assert release(rollout, reference)[0] == [("replace", 0, 0, "b")]
    # tau 0 (the client's default similarity_threshold): both groups have negative cosines
    # (-0.5, -0.1); max_sim starts at 0, so both score 0, the first wins and 0 >= 0 replaces.
    # Raw cosines would pick the second and fail (-0.1 < 0).
    reference = build(
        ("Left.", [("left", "ABNORMALITY", -at(0.5))]),
        ("Right.", [("right", "ABNORMALITY", -at(0.1))]),
    )
    assert release(rollout, reference, tau=0.0)[0] == [("replace", 0, 0, "b")]


def test_deletion_takes_the_first_false_positive_and_every_copy_of_its_sentence() -> None:
    # No reference sentence reaches tau for any false positive: delete_fp_sentence_rs removes every
    # sentence equal to the first one's ("Nodule." twice); "Mass." stays.
    rollout = build(
        ("Nodule.", [("nodule", "ABNORMALITY", E2)]),
        ("Mass.", [("mass", "ABNORMALITY", E3)]),
        ("Nodule.", [("nodule", "ABNORMALITY", E2)]),
    )
    reference = build(("Effusion.", [("effusion", "ABNORMALITY", E1)]))
    assert release(rollout, reference) == ([("delete", 0, None, "c"), ("delete", 2, None, "c")], "Mass.")


# --------------------------------------------------------------------------------------------
# 3. Add and the post-loop fallback draw among false-negative entities
# --------------------------------------------------------------------------------------------


def test_add_draws_a_false_negative_entity_so_sentences_weigh_by_their_entities() -> None:
    # The rollout's DISEASE entity is matched (0.8461 >= 0.6): no false positive, so "add" runs.
    # False negatives: y_1's two ABNORMALITY entities and y_2's one (no rollout entity reaches
    # them); random.choice over the three entities picks y_1 two times in three.
    rollout = build(("Pneumonia.", [("pneumonia", "DISEASE", E1)]))
    reference = build(
        ("Pneumonia.", [("pneumonia", "DISEASE", E1)]),
        ("Nodule and mass.", [("nodule", "ABNORMALITY", E2), ("mass", "ABNORMALITY", E2)]),
        ("Opacity.", [("opacity", "ABNORMALITY", E3)]),
    )
    picks = [release(rollout, reference, seed)[0] for seed in range(300)]
    assert set(map(tuple, picks)) == {(("append", None, 1, "d"),), (("append", None, 2, "d"),)}
    share = sum(p == [("append", None, 1, "d")] for p in picks) / len(picks)
    assert share == pytest.approx(2 / 3, abs=0.07)


def test_add_of_a_sentence_already_in_the_text_does_nothing() -> None:
    # No rollout entity: every reference entity is a false negative. The only one's sentence is in
    # the rollout already: add_fn_sentence_rs returns no op and the loop stops.
    rollout = build(("Heart is enlarged.", []))
    reference = build(("Heart is enlarged.", [("enlarged", "ABNORMALITY", E3)]))
    assert release(rollout, reference) == ([], "Heart is enlarged.")


def test_a_text_the_release_would_leave_empty_is_left_unchanged() -> None:
    # "No effusion." against itself: NON-ABNORMALITY -> NON-ABNORMALITY weighs 0.0009, a false
    # positive; the only reference group is the sentence itself (skipped), so it is deleted. The
    # false negative's sentence is the deleted one (processed): the release returns "" here; the
    # deliberate difference keeps the rollout instead of an empty edited copy.
    rollout = build(("No effusion.", [("effusion", "NON-ABNORMALITY", E1)]))
    reference = build(("No effusion.", [("effusion", "NON-ABNORMALITY", E1)]))
    assert release(rollout, reference) == ([], "No effusion.")


# --------------------------------------------------------------------------------------------
# 4. Empty rollouts are returned unchanged
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "  \n "])
def test_an_empty_rollout_is_returned_unchanged(text: str) -> None:
    # `if not gen_text.strip(): return gen_text, False, []`; the paper rule appends (rule e).
    empty = TextAnalysis(text, release_sentences(text), [])
    reference = build(("Effusion.", [("effusion", "ABNORMALITY", E1)]))
    assert plan_edits(empty, reference, rule="release").ops == ()
    assert [op.kind for op in plan_edits(empty, reference, rule="paper").ops] == ["append"]


# --------------------------------------------------------------------------------------------
# 5. Duplicates are allowed
# --------------------------------------------------------------------------------------------


def test_the_replacement_may_duplicate_a_sentence_already_in_the_rollout() -> None:
    # x_0's ABNORMALITY entity (cos 0.9 with y_0's) scores 0.9 * 0.4276 < 0.6: a false positive;
    # y_0 scores 0.9 >= 0.6 and is not x_0's text, so it replaces x_0, although x_1 is the same
    # sentence (x_1's DISEASE entity is matched: 0.8397 >= 0.6). The paper rule refuses the target.
    rollout = build(
        ("Nodule.", [("nodule", "ABNORMALITY", at(0.9))]),
        ("Small effusion.", [("effusion", "DISEASE", E1)]),
    )
    reference = build(("Small effusion.", [("effusion", "ABNORMALITY", E1)]))
    assert release(rollout, reference) == ([("replace", 0, 0, "b")], "Small effusion. Small effusion.")
    paper = plan_edits(rollout, reference, rule="paper", contradiction_tau=0.95)
    assert ("replace", 0, 0) not in [(op.kind, op.rollout, op.reference) for op in paper.ops]


# --------------------------------------------------------------------------------------------
# 6. Sentences and entity assignment of the release's server
# --------------------------------------------------------------------------------------------


def test_release_sentences_follow_the_regex() -> None:
    text = "No change vs. prior.\n\n1. Effusion is small!  Heart normal"
    # (?<=[.!?])\s+|\n+ : "vs." ends a sentence there, unlike split_sentences.
    assert [s.text for s in release_sentences(text)] == [
        "No change vs.",
        "prior.",
        "1.",
        "Effusion is small!",
        "Heart normal",
    ]
    assert [s.text for s in split_sentences(text)] != [s.text for s in release_sentences(text)]
    for s in release_sentences(text):
        assert text[s.start : s.end] == s.text
    sentences = release_sentences("Heart normal. Effusion small. Small effusion again.")
    assert first_containing_sentence(sentences, "EFFUSION") == 1
    assert first_containing_sentence(sentences, "pneumothorax") is None


def test_an_entity_belongs_to_the_first_sentence_containing_its_string() -> None:
    # "effusion" occurs in x_1, but "effusion noted." (x_0) contains the string first, so the
    # server files the false positive under x_0. x_0's own entity (DISEASE, 0.8461) is matched.
    text = "Effusion noted. Small effusion persists."
    sentences = split_sentences(text)
    entities = [
        AnalysedEntity("Effusion", 0, 8, 0, "DISEASE", True, E1),
        AnalysedEntity("effusion", 22, 30, 1, "ABNORMALITY", True, E2),
    ]
    by_position = TextAnalysis(text, sentences, entities)
    reference = with_convention(
        build(
            ("Effusion noted.", [("Effusion", "DISEASE", E1)]),
            ("Nodule seen.", [("Nodule", "ABNORMALITY", E2)]),
        ),
        "release",
    )
    # By position the false positive's sentence is x_1, replaced by "Nodule seen." (cos 1).
    assert release(by_position, reference)[1] == "Effusion noted. Nodule seen."
    # By the release's assignment it is x_0: the equal reference sentence is skipped, "Nodule
    # seen." replaces x_0.
    assigned = with_convention(by_position, "release")
    assert [e.sentence for e in assigned.entities] == [0, 0]
    assert release(assigned, reference) == ([("replace", 0, 1, "b")], "Nodule seen. Small effusion persists.")


def test_an_entity_no_sentence_contains_is_dropped() -> None:
    # A model's re-tokenised string ("pleural  effusion") is in no sentence: the server drops it.
    text = "Pleural effusion."
    analysis = TextAnalysis(
        text,
        split_sentences(text),
        [AnalysedEntity("pleural  effusion", 0, 16, 0, "ABNORMALITY", True, E1)],
    )
    assert with_convention(analysis, "release").entities == []


def test_conventions_are_a_registry() -> None:
    assert analysis_convention("release") == "release"
    assert analysis_convention("paper") == analysis_convention("radgraph") == "radiology"
    with pytest.raises(ValueError, match=r"unknown analysis convention 'regex'; valid: radiology, release"):
        with_convention(build(("A.", [])), "regex")
    with pytest.raises(ValueError, match=r"unknown edit rule 'relaese'; valid: paper, release, radgraph"):
        analysis_convention("relaese")


# --------------------------------------------------------------------------------------------
# Properties: the release is deterministic except for its "add" draw
# --------------------------------------------------------------------------------------------

VECTORS = [E1, E2, E3, at(0.7), at(0.3), -at(0.6)]
TYPES = ["ABNORMALITY", "NON-ABNORMALITY", "DISEASE", "NON-DISEASE", "ANATOMY"]
SENTENCE = st.tuples(
    st.integers(0, 5),
    st.lists(st.tuples(st.integers(0, len(VECTORS) - 1), st.integers(0, len(TYPES) - 1)), max_size=3),
)


def make(sentences) -> TextAnalysis:
    return build(
        *[
            (f"Sentence {t}.", [(f"e{v}", TYPES[k], VECTORS[v]) for v, k in members])
            for t, members in sentences
        ]
    )


@settings(max_examples=200, deadline=None)
@given(
    rollout=st.lists(SENTENCE, max_size=4),
    reference=st.lists(SENTENCE, max_size=4),
    max_ops=st.integers(1, 3),
    tau=st.sampled_from([0.0, 0.3, 0.6]),
    seeds=st.tuples(st.integers(0, 2**16), st.integers(0, 2**16)),
)
def test_release_depends_on_the_seed_only_through_add(rollout, reference, max_ops, tau, seeds) -> None:
    x, y = make(rollout), make(reference)
    plans = [
        plan_edits(x, y, rule="release", max_ops=max_ops, tau=tau, rng=np.random.default_rng(s))
        for s in seeds
    ]
    if not any(op.kind == "append" for plan in plans for op in plan.ops):
        assert plans[0] == plans[1]
    # Never an empty edit from a non-empty rollout.
    for plan in plans:
        edited = apply_edits(x.sentences, y.sentences, plan)
        assert edited.text or not edited.changed


def test_release_without_false_negatives_ignores_the_seed() -> None:
    # Every reference entity matched (DISEASE -> DISEASE 0.8461): no "add" can happen, so a sweep of
    # seeds gives one plan.
    rollout = build(
        ("Pneumonia.", [("pneumonia", "DISEASE", E1)]),
        ("Nodule.", [("nodule", "ABNORMALITY", E2)]),
        ("Mass.", [("mass", "ABNORMALITY", E3)]),
    )
    reference = build(
        ("Pneumonia here.", [("pneumonia", "DISEASE", E1)]), ("Mass seen.", [("mass", "DISEASE", E3)])
    )
    plans = {
        plan_edits(rollout, reference, rule="release", max_ops=3, rng=np.random.default_rng(s))
        for s in range(30)
    }
    assert len(plans) == 1
