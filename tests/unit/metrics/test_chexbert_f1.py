"""CheXbert F1 math: METRICS.md reference vectors, hand-computed pair rewards, and equivalence with
scikit-learn (the implementation f1chexbert 0.0.2 and RadEval call) on random label matrices."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, classification_report, f1_score

from editgrpo.metrics.chexbert_f1 import (
    binarize,
    chexbert_scores,
    corpus_f1,
    pair_micro_f1,
    pair_micro_f1_batch,
)
from editgrpo.text.observations import CHEXPERT_5, CHEXPERT_14


def _positive(*names: str) -> dict[str, int]:
    return dict.fromkeys(names, 1)


# METRICS.md "CheXbert F1": the binary label sets behind f1chexbert's unit test.
REFS = [
    _positive("No Finding"),
    _positive("Cardiomegaly"),
    _positive("Cardiomegaly"),
    _positive("Consolidation"),
    _positive("Lung Opacity", "Lung Lesion"),
]
HYPS = [
    _positive("No Finding"),
    _positive("No Finding"),
    _positive("Edema", "Atelectasis"),
    _positive("Consolidation"),
    {},
]


def test_reference_vectors_reproduce_metrics_md() -> None:
    scores = chexbert_scores(HYPS, REFS)
    # 14 labels: TP 2 (No Finding, Consolidation), FP 3 (No Finding, Edema, Atelectasis),
    # FN 4 (Cardiomegaly x2, Lung Opacity, Lung Lesion): F1 = 4 / (4 + 3 + 4) = 4/11.
    assert round(scores["micro_f1_14"], 5) == 0.36364
    assert round(scores["micro_precision_14"], 5) == 0.4
    assert round(scores["micro_recall_14"], 5) == 0.33333
    # Per-label F1: No Finding 2/3, Consolidation 1, twelve labels 0 -> (5/3) / 14.
    assert round(scores["macro_f1_14"], 5) == 0.11905
    # Supports No Finding 1, Cardiomegaly 2, Consolidation 1, Lung Opacity 1, Lung Lesion 1:
    # (1 * 2/3 + 1 * 1) / 6.
    assert round(scores["weighted_f1_14"], 5) == 0.27778
    # 5 labels: TP 1, FP 2, FN 2 -> 2 / 6; macro (0 + 0 + 1 + 0 + 0) / 5; weighted 1 * 1 / 3.
    assert round(scores["micro_f1_5"], 5) == 0.33333
    assert round(scores["macro_f1_5"], 5) == 0.2
    assert round(scores["weighted_f1_5"], 5) == 0.33333
    # Exact match on the 5 labels: reports 0, 3, 4 (f1chexbert's accuracy_not_averaged [1, 0, 0, 1, 1]).
    assert scores["accuracy_5"] == pytest.approx(0.6)


def test_reference_per_label_figures() -> None:
    per_label = corpus_f1(HYPS, REFS)["per_label"]
    assert list(per_label) == list(CHEXPERT_14)
    assert per_label["No Finding"] == {
        "precision": 0.5,
        "recall": 1.0,
        "f1": pytest.approx(2 / 3),
        "support": 1,
    }
    assert per_label["Consolidation"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert per_label["Cardiomegaly"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    # No true and no predicted positive: every ratio is 0 (sklearn zero_division=0).
    assert per_label["Pneumothorax"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_uncertain_and_negative_values_in_reference_vectors() -> None:
    """The same corpus written with uncertain, negative and blank values: uncertain reads as
    positive by default, so the figures do not move; as negative they do."""
    refs = [{**ref, "Pleural Effusion": 0, "Pneumothorax": None} for ref in REFS]
    refs[1] = {"Cardiomegaly": -1}
    hyps = [dict(hyp) for hyp in HYPS]
    hyps[2] = {"Edema": -1, "Atelectasis": 1, "Fracture": 0}
    assert chexbert_scores(hyps, refs) == chexbert_scores(HYPS, REFS)
    negative = chexbert_scores(hyps, refs, uncertain_as="negative")
    # Edema's FP and one Cardiomegaly FN drop out: TP 2, FP 2, FN 3 -> 4 / 9.
    assert negative["micro_f1_14"] == pytest.approx(4 / 9)


def test_binarize_shapes_and_mapping() -> None:
    vectors = [{"Cardiomegaly": 1, "Edema": -1, "Fracture": 0, "No Finding": None}, {}]
    assert binarize(vectors).shape == (2, 14)
    assert binarize(vectors, labels=("Edema", "Cardiomegaly", "Fracture")).tolist() == [[1, 1, 0], [0, 0, 0]]
    assert binarize(vectors, labels=("Edema",), uncertain_as="negative").tolist() == [[0], [0]]
    assert binarize([]).shape == (0, 14)


# --- the per-pair reward ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hyp", "ref", "uncertain_as", "expected"),
    [
        # Uncertain Edema is a false positive: 2 * 1 / (2 * 1 + 1 + 0).
        ({"Cardiomegaly": 1, "Edema": -1}, {"Cardiomegaly": 1}, "positive", 2 / 3),
        # ... and drops out when uncertain reads as negative.
        ({"Cardiomegaly": 1, "Edema": -1}, {"Cardiomegaly": 1}, "negative", 1.0),
        ({}, {}, "positive", 0.0),
        ({"Edema": 0, "Fracture": None}, {"Cardiomegaly": 0}, "positive", 0.0),
        ({"Edema": 1}, {"Cardiomegaly": 1}, "positive", 0.0),
        ({"No Finding": 1}, {"No Finding": 1}, "positive", 1.0),
        # TP 2 (Edema, Effusion), FP 1 (Atelectasis), FN 2 (Cardiomegaly, Consolidation): 4 / 7.
        (
            {"Edema": 1, "Pleural Effusion": -1, "Atelectasis": 1},
            {"Edema": 1, "Pleural Effusion": 1, "Cardiomegaly": 1, "Consolidation": -1},
            "positive",
            4 / 7,
        ),
    ],
)
def test_pair_micro_f1_by_hand(hyp: dict, ref: dict, uncertain_as: str, expected: float) -> None:
    assert pair_micro_f1(hyp, ref, uncertain_as=uncertain_as) == pytest.approx(expected)
    assert pair_micro_f1_batch([hyp], [ref], uncertain_as=uncertain_as) == [pytest.approx(expected)]


def test_pair_micro_f1_batch_on_reference_vectors() -> None:
    # Same as sklearn's "samples avg" F1 in f1chexbert's unit test: mean 0.4.
    assert pair_micro_f1_batch(HYPS, REFS) == [1.0, 0.0, 0.0, 1.0, 0.0]
    assert pair_micro_f1_batch([], []) == []


VALUES = st.sampled_from([1, 0, -1, None])
VECTOR = st.dictionaries(st.sampled_from(CHEXPERT_14), VALUES, max_size=14)


@settings(max_examples=200, deadline=None)
@given(
    pairs=st.lists(st.tuples(VECTOR, VECTOR), max_size=12),
    uncertain_as=st.sampled_from(["positive", "negative"]),
)
def test_batch_equals_scalar(pairs: list[tuple[dict, dict]], uncertain_as: str) -> None:
    hyps, refs = [h for h, _ in pairs], [r for _, r in pairs]
    batch = pair_micro_f1_batch(hyps, refs, uncertain_as=uncertain_as)
    assert batch == [pair_micro_f1(h, r, uncertain_as=uncertain_as) for h, r in pairs]
    if pairs:
        # The mean reward is sklearn's "samples" F1 (zero_division=0 for all-zero pairs).
        expected = f1_score(
            binarize(refs, uncertain_as=uncertain_as),
            binarize(hyps, uncertain_as=uncertain_as),
            average="samples",
            zero_division=0,
        )
        assert np.mean(batch) == pytest.approx(expected)


# --- equivalence with scikit-learn on random label matrices ----------------------------------


def _random_vectors(rng: np.random.Generator, n: int, labels: tuple[str, ...]) -> list[dict]:
    """n vectors with skewed class frequencies; some columns never positive, some keys missing."""
    probs = rng.dirichlet(np.ones(4), size=len(labels))  # (L, 4) over [1, 0, -1, blank]
    never_positive = rng.random(len(labels)) < 0.3
    probs[never_positive] = [0.0, 0.5, 0.0, 0.5]
    vectors = []
    for _ in range(n):
        vector = {}
        for j, name in enumerate(labels):
            k = rng.choice(4, p=probs[j])
            if k < 3:
                vector[name] = (1, 0, -1)[k]
            elif rng.random() < 0.5:
                vector[name] = None  # else the key stays missing, also blank
        vectors.append(vector)
    return vectors


@pytest.mark.parametrize("uncertain_as", ["positive", "negative"])
@pytest.mark.parametrize("labels", [CHEXPERT_14, CHEXPERT_5], ids=["14", "5"])
def test_corpus_f1_matches_sklearn(uncertain_as: str, labels: tuple[str, ...]) -> None:
    rng = np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(1, 40))
        hyps, refs = _random_vectors(rng, n, CHEXPERT_14), _random_vectors(rng, n, CHEXPERT_14)
        y_pred, y_true = binarize(hyps, labels, uncertain_as), binarize(refs, labels, uncertain_as)
        # Independent binarisation, so the sklearn side does not rest on binarize alone.
        to_binary = {1: 1, -1: int(uncertain_as == "positive"), 0: 0, None: 0}
        assert y_true.tolist() == [[to_binary[ref.get(name)] for name in labels] for ref in refs]
        report = classification_report(
            y_true, y_pred, target_names=list(labels), output_dict=True, zero_division=0
        )
        ours = corpus_f1(hyps, refs, labels=labels, uncertain_as=uncertain_as)
        assert ours["micro_f1"] == pytest.approx(report["micro avg"]["f1-score"])
        assert ours["micro_precision"] == pytest.approx(report["micro avg"]["precision"])
        assert ours["micro_recall"] == pytest.approx(report["micro avg"]["recall"])
        assert ours["macro_f1"] == pytest.approx(report["macro avg"]["f1-score"])
        assert ours["weighted_f1"] == pytest.approx(report["weighted avg"]["f1-score"])
        for average in ("micro", "macro", "weighted"):
            expected = f1_score(y_true, y_pred, average=average, zero_division=0)
            assert ours[f"{average}_f1"] == pytest.approx(expected)
        for name in labels:
            theirs = report[name]
            assert ours["per_label"][name] == {
                "precision": pytest.approx(theirs["precision"]),
                "recall": pytest.approx(theirs["recall"]),
                "f1": pytest.approx(theirs["f1-score"]),
                "support": int(theirs["support"]),
            }


def test_chexbert_scores_match_sklearn() -> None:
    rng = np.random.default_rng(1)
    five = [CHEXPERT_14.index(name) for name in CHEXPERT_5]
    for _ in range(50):
        n = int(rng.integers(1, 30))
        hyps, refs = _random_vectors(rng, n, CHEXPERT_14), _random_vectors(rng, n, CHEXPERT_14)
        y_pred, y_true = binarize(hyps), binarize(refs)
        scores = chexbert_scores(hyps, refs)
        for suffix, cols in (("14", slice(None)), ("5", five)):
            for average in ("micro", "macro", "weighted"):
                expected = f1_score(y_true[:, cols], y_pred[:, cols], average=average, zero_division=0)
                assert scores[f"{average}_f1_{suffix}"] == pytest.approx(expected)
        assert scores["accuracy_5"] == pytest.approx(accuracy_score(y_true[:, five], y_pred[:, five]))


def test_all_zero_corpus_scores_zero_like_sklearn() -> None:
    hyps, refs = [{}, {"Edema": 0}], [{"Cardiomegaly": None}, {}]
    y = np.zeros((2, 14), dtype=int)
    scores = corpus_f1(hyps, refs)
    for average in ("micro", "macro", "weighted"):
        assert scores[f"{average}_f1"] == f1_score(y, y, average=average, zero_division=0) == 0.0
    assert chexbert_scores(hyps, refs)["accuracy_5"] == 1.0


# --- user errors, by message -----------------------------------------------------------------


def test_bad_uncertain_as() -> None:
    with pytest.raises(ValueError, match="unknown uncertain_as 'maybe'; valid: positive, negative"):
        pair_micro_f1({}, {}, uncertain_as="maybe")
    with pytest.raises(ValueError, match="valid: positive, negative"):
        chexbert_scores(HYPS, REFS, uncertain_as="ignore")


def test_length_mismatch_names_both_lengths() -> None:
    for scorer in (corpus_f1, chexbert_scores, pair_micro_f1_batch):
        with pytest.raises(ValueError, match="5 hyps, 4 refs"):
            scorer(HYPS, REFS[:4])


def test_empty_corpus_is_an_error() -> None:
    with pytest.raises(ValueError, match="no reports to score"):
        corpus_f1([], [])
    with pytest.raises(ValueError, match="no reports to score"):
        chexbert_scores([], [])


def test_bad_values_and_keys() -> None:
    # CheXbert's raw class ids (2 negative, 3 uncertain) are not label values.
    with pytest.raises(ValueError, match=r"label vector 1, Edema: value 3 is not a CheXpert class; valid: 1"):
        binarize([{}, {"Edema": 3}])
    with pytest.raises(
        ValueError, match=r"hyp has unknown observations \['Cardiomegally'\]; valid: Enlarged"
    ):
        pair_micro_f1({"Cardiomegally": 1}, {})
    with pytest.raises(TypeError, match="label vector 0 is a str, expected a dict"):
        binarize({"Edema": 1})  # one vector instead of a list of them
    with pytest.raises(ValueError, match="labels must be distinct CheXpert observations"):
        corpus_f1(HYPS, REFS, labels=("Edema", "Effusion"))
    with pytest.raises(ValueError, match="labels must be distinct"):
        binarize(HYPS, labels=("Edema", "Edema"))


def test_label_outcomes_by_hand_with_uncertain_convention():
    from editgrpo.metrics.chexbert_f1 import label_outcomes

    hyp = {"Cardiomegaly": 1, "Edema": -1, "Pneumothorax": 1}
    ref = {"Cardiomegaly": 1, "Edema": 1, "Pleural Effusion": 1}
    out = label_outcomes(hyp, ref)
    assert out["Cardiomegaly"] == "tp" and out["Edema"] == "tp"
    assert out["Pneumothorax"] == "fp" and out["Pleural Effusion"] == "fn"
    assert out["Atelectasis"] == "tn" and len(out) == 14
    assert label_outcomes(hyp, ref, uncertain_as="negative")["Edema"] == "fn"
