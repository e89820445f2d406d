"""Applying plans: spans, ordering, duplicates; properties of plan + apply together."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from editgrpo.annotators.analysis import AnalysedEntity, TextAnalysis, analyse, is_present
from editgrpo.edits.apply import apply_edits, edited_sentences
from editgrpo.edits.plan import EDIT_RULES, EditOp, EditPlan, plan_edits
from editgrpo.text.sentences import Sentence, split_sentences


def check_spans(edited) -> None:
    cursor = 0
    for start, end, source in edited.spans:
        assert start == cursor and end > start and source in ("policy", "reference")
        cursor = end
    assert cursor == len(edited.text)
    # neighbours of one source are merged
    assert all(a[2] != b[2] for a, b in zip(edited.spans, edited.spans[1:], strict=False))


def test_apply_replace_delete_append_with_spans() -> None:
    rollout = ["A one.", "B two.", "C three."]
    reference = ["X ref.", "Y ref."]
    plan = EditPlan(
        "paper",
        (
            EditOp("replace", 1, 0, "a", ""),
            EditOp("delete", 2, None, "c", ""),
            EditOp("append", None, 1, "d", ""),
            EditOp("append", None, 1, "d", ""),  # a second append of y_1 is ignored
        ),
    )
    edited = apply_edits(rollout, reference, plan)
    assert edited.text == "A one. X ref. Y ref."
    # The joining space belongs to the sentence after it.
    assert edited.spans == ((0, 6, "policy"), (6, 20, "reference"))
    assert edited.changed and edited.inserted_chars == 14
    check_spans(edited)


def test_apply_keeps_policy_text_and_rejoins_with_single_spaces() -> None:
    text = "Heart normal.\n\nNo effusion.   Lungs clear."
    edited = apply_edits(split_sentences(text), [], EditPlan("paper"))
    assert edited.text == "Heart normal. No effusion. Lungs clear."
    assert edited.spans == ((0, len(edited.text), "policy"),) and not edited.changed


def test_apply_rejects_ops_naming_missing_sentences() -> None:
    with pytest.raises(ValueError, match="replace names rollout sentence 3; the rollout has 1"):
        apply_edits(["A."], ["B."], EditPlan("paper", (EditOp("replace", 3, 0, "a", ""),)))
    with pytest.raises(ValueError, match="append names reference sentence 2; the reference has 1"):
        apply_edits(["A."], ["B."], EditPlan("paper", (EditOp("append", None, 2, "d", ""),)))


def test_unknown_op_kind() -> None:
    with pytest.raises(ValueError, match="unknown edit op 'swap'; valid: replace, delete, append"):
        EditOp("swap", 0, 0, "a", "")


# --------------------------------------------------------------------------------------------
# Properties on random hand-built analyses
# --------------------------------------------------------------------------------------------

VECTORS = [np.eye(3)[0], np.eye(3)[1], np.eye(3)[2], np.array([0.8, 0.6, 0.0]), np.array([0.0, 0.6, 0.8])]
TYPES = ["ABNORMALITY", "NON-ABNORMALITY", "DISEASE", "NON-DISEASE", "ANATOMY"]
SENTENCE = st.tuples(
    st.integers(0, 7),  # sentence text id
    st.lists(st.tuples(st.integers(0, len(VECTORS) - 1), st.integers(0, len(TYPES) - 1)), max_size=3),
)


def make(sentences: list[tuple[int, list[tuple[int, int]]]]) -> TextAnalysis:
    text, spans, entities = "", [], []
    for index, (text_id, members) in enumerate(sentences):
        sentence = f"Sentence {text_id}."
        start = len(text) + (1 if text else 0)
        text = f"{text} {sentence}" if text else sentence
        spans.append(Sentence(sentence, start, start + len(sentence)))
        for v, t in members:
            entities.append(
                AnalysedEntity("x", start, start + 1, index, TYPES[t], is_present(TYPES[t]), VECTORS[v])
            )
    return TextAnalysis(text, spans, entities)


@settings(max_examples=150, deadline=None)
@given(
    rollout=st.lists(SENTENCE, max_size=5),
    reference=st.lists(SENTENCE, max_size=5),
    rule=st.sampled_from(sorted(EDIT_RULES)),
    max_ops=st.integers(0, 4),
    seed=st.integers(0, 2**16),
)
def test_edit_properties(rollout, reference, rule, max_ops, seed) -> None:
    x, y = make(rollout), make(reference)
    plan = plan_edits(x, y, rule=rule, max_ops=max_ops, rng=np.random.default_rng(seed))
    # max_ops ops from the loop, plus at most one rule-(e) refill of a text left empty.
    loop_ops = [op for op in plan.ops if op.rule != "e"]
    if rule == "release":
        # One release deletion removes every copy of its sentence: copies count as one operation.
        texts = [s.text for s in x.sentences]
        loop_ops = list(
            {(op.kind, texts[op.rollout] if op.kind == "delete" else k) for k, op in enumerate(loop_ops)}
        )
    assert len(loop_ops) <= max_ops and len(plan.ops) - len([op for op in plan.ops if op.rule != "e"]) <= 1
    assert max_ops or not plan.ops
    assert plan == plan_edits(x, y, rule=rule, max_ops=max_ops, rng=np.random.default_rng(seed))
    edited = apply_edits(x.sentences, y.sentences, plan)
    check_spans(edited)
    pieces = edited_sentences(x.sentences, y.sentences, plan)
    rollout_texts = [s.text for s in x.sentences]
    reference_texts = [s.text for s in y.sentences]
    # Every edited sentence comes from the rollout or the reference ...
    assert all(text in rollout_texts or text in reference_texts for text, _ in pieces)
    assert all(text in (rollout_texts if source == "policy" else reference_texts) for text, source in pieces)
    # ... at most max_ops sentences change: <= max_ops rollout sentences go, <= max_ops come in,
    kept = [text for text, source in pieces if source == "policy"]
    if rule == "release":
        # (the release deletes every copy of a sentence: at most max_ops distinct texts go)
        assert len(set(rollout_texts) - set(kept)) <= max_ops
    else:
        assert len(rollout_texts) - len(kept) <= max_ops
    assert sum(source == "reference" for _, source in pieces) <= len(plan.ops)
    # ... an edit never leaves an empty report.
    assert edited.text or not edited.changed
    # ... the policy's sentences keep their order, and no inserted sentence duplicates another
    # (the release's replacement does not check the rest of the text, issue 16 point 5).
    iterator = iter(rollout_texts)
    assert all(any(text == r for r in iterator) for text in kept)
    inserted = [text for text, source in pieces if source == "reference"]
    if rule != "release":
        assert len(set(inserted)) == len(inserted)
        assert not set(inserted) & set(kept)
    assert edited.text == " ".join(text for text, _ in pieces)


@pytest.fixture(scope="module")
def annotators():
    from editgrpo.annotators.embeddings import build_embedder
    from editgrpo.annotators.entities import LexiconEntityExtractor

    return LexiconEntityExtractor(), build_embedder("lexical")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rollout=st.text(max_size=120),
    reference=st.one_of(
        st.text(max_size=120),
        st.just("Small left pleural effusion. No pneumothorax.\nHeart size is normal. No édème 🫁."),
    ),
    rule=st.sampled_from(sorted(EDIT_RULES)),
)
def test_arbitrary_unicode_never_crashes(annotators, rollout, reference, rule) -> None:
    extractor, embedder = annotators
    x, y = analyse([rollout, reference], extractor, embedder)
    plan = plan_edits(x, y, rule=rule, max_ops=2, rng=np.random.default_rng(0))
    edited = apply_edits(x.sentences, y.sentences, plan)
    if edited.text:
        check_spans(edited)
    else:
        assert edited.spans == ()


def test_analyse_through_the_lexicon(annotators) -> None:
    extractor, embedder = annotators
    [analysis] = analyse(
        ["Heart size is normal.\nNo pleural effusion. Small left pneumothorax."], extractor, embedder
    )
    assert [s.text for s in analysis.sentences] == [
        "Heart size is normal.",
        "No pleural effusion.",
        "Small left pneumothorax.",
    ]
    by_text = {e.text: e for e in analysis.entities}
    assert by_text["pleural effusion"].sentence == 1 and not by_text["pleural effusion"].present
    assert by_text["pleural effusion"].rate_type == "NON-ABNORMALITY"
    assert any(e.sentence == 2 and e.present for e in analysis.entities)
    for e in analysis.entities:
        assert analysis.text[e.start : e.end] == e.text
        assert np.linalg.norm(e.vector) == pytest.approx(1.0, abs=1e-5)
    assert ("effusion", "OBS-DA", 1) in {(g.tokens, g.label, g.sentence) for g in analysis.graph}
