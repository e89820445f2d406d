"""CheXbert F1: F1 scores on CheXpert observation labels, for evaluation tables and the EditGRPO reward.

Inputs are label vectors as the annotators produce them (``annotators/chexpert.py``): a dict
observation -> 1 positive / 0 negative / -1 uncertain / None blank, keys from
``text.observations.CHEXPERT_14``; a missing key is blank. Each vector is binarised first
(METRICS.md, "CheXbert F1"): positive -> 1, uncertain -> 1 with ``uncertain_as="positive"`` (the
"rrg" convention of f1chexbert 0.0.2, RadEval and EditGRPO, the default) or 0 with
``uncertain_as="negative"`` (LLaVA-Rad's default); negative and blank -> 0.

Shapes: N reports, L labels (14 for ``CHEXPERT_14``, 5 for ``CHEXPERT_5``). ``binarize`` returns an
int array (N, L); TP/FP/FN counts are (L,) per label for corpus scores and (N,) per report for the
per-pair reward.

Conventions are scikit-learn's ``precision_recall_fscore_support`` with ``zero_division=0``, which
is what f1chexbert 0.0.2 and RadEval get from ``classification_report``: a ratio whose denominator
is 0 is 0, so a label with no true and no predicted positive has F1 0 and still counts in the macro
mean; F1 is 2 TP / (2 TP + FP + FN).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from editgrpo.text.observations import CHEXPERT_5, CHEXPERT_14

LabelVector = Mapping[str, int | None]

# uncertain_as name -> binary value of an uncertain (-1) label.
UNCERTAIN_AS: dict[str, int] = {"positive": 1, "negative": 0}

_VOCABULARY = frozenset(CHEXPERT_14)


def _to_binary(uncertain_as: str) -> dict[int | None, int]:
    """CheXpert class -> 0/1 under the ``uncertain_as`` convention."""
    if uncertain_as not in UNCERTAIN_AS:
        raise ValueError(f"unknown uncertain_as {uncertain_as!r}; valid: {', '.join(UNCERTAIN_AS)}")
    return {1: 1, -1: UNCERTAIN_AS[uncertain_as], 0: 0, None: 0}


def _check_labels(labels: Sequence[str]) -> None:
    unknown = [name for name in labels if name not in _VOCABULARY]
    if unknown or not labels or len(set(labels)) != len(labels):
        raise ValueError(
            f"labels must be distinct CheXpert observations, got {list(labels)!r}; valid: {', '.join(CHEXPERT_14)}"
        )


def _check_lengths(hyps: Sequence[LabelVector], refs: Sequence[LabelVector]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"hyps and refs differ in length: {len(hyps)} hyps, {len(refs)} refs")


def _binary_row(where: str, vector: LabelVector, labels: Sequence[str], to_binary: dict) -> list[int]:
    """One report's binary labels (L,); rejects what an annotator never writes, e.g. CheXbert's raw
    class ids 2/3 or a misspelt observation, which would otherwise silently read as blank."""
    if not isinstance(vector, Mapping):
        raise TypeError(f"{where} is a {type(vector).__name__}, expected a dict observation -> 1/0/-1/None")
    unknown = set(vector) - _VOCABULARY
    if unknown:
        raise ValueError(
            f"{where} has unknown observations {sorted(unknown)}; valid: {', '.join(CHEXPERT_14)}"
        )
    row = []
    for name in labels:
        value = vector.get(name)
        try:
            row.append(to_binary[value])
        except (KeyError, TypeError):
            raise ValueError(
                f"{where}, {name}: value {value!r} is not a CheXpert class; "
                "valid: 1 positive, 0 negative, -1 uncertain, None blank"
            ) from None
    return row


def binarize(
    vectors: Sequence[LabelVector], labels: Sequence[str] = CHEXPERT_14, uncertain_as: str = "positive"
) -> np.ndarray:
    """Label vectors -> int array (N, L) of 0/1, columns in the order of ``labels``."""
    _check_labels(labels)
    to_binary = _to_binary(uncertain_as)
    rows = [_binary_row(f"label vector {i}", vector, labels, to_binary) for i, vector in enumerate(vectors)]
    return np.array(rows, dtype=np.int64).reshape(len(rows), len(labels))


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (sklearn ``zero_division=0``)."""
    numerator, denominator = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def _scores(hyp: np.ndarray, ref: np.ndarray, labels: Sequence[str]) -> dict:
    """Corpus scores of binary arrays hyp, ref (N, L)."""
    tp = (hyp * ref).sum(axis=0)  # (L,)
    fp = (hyp * (1 - ref)).sum(axis=0)  # (L,)
    fn = ((1 - hyp) * ref).sum(axis=0)  # (L,); also the support minus TP
    support = ref.sum(axis=0)  # (L,)
    precision, recall, f1 = _ratio(tp, tp + fp), _ratio(tp, tp + fn), _ratio(2 * tp, 2 * tp + fp + fn)
    tp_all, fp_all, fn_all = tp.sum(), fp.sum(), fn.sum()
    return {
        "micro_f1": float(_ratio(2 * tp_all, 2 * tp_all + fp_all + fn_all)),
        "micro_precision": float(_ratio(tp_all, tp_all + fp_all)),
        "micro_recall": float(_ratio(tp_all, tp_all + fn_all)),
        "macro_f1": float(f1.mean()),
        # sklearn "weighted": per-label F1 weighted by support; 0 when no label has support.
        "weighted_f1": float(_ratio((f1 * support).sum(), support.sum())),
        "per_label": {
            name: {
                "precision": float(precision[j]),
                "recall": float(recall[j]),
                "f1": float(f1[j]),
                "support": int(support[j]),
            }
            for j, name in enumerate(labels)
        },
    }


def corpus_f1(
    hyps: Sequence[LabelVector],
    refs: Sequence[LabelVector],
    labels: Sequence[str] = CHEXPERT_14,
    uncertain_as: str = "positive",
) -> dict:
    """Corpus-level scores over ``labels``, counted over all reports (sklearn ``classification_report``
    on the binarised multilabel matrices): micro F1 / precision / recall, macro F1, weighted F1 and
    ``per_label`` {name: precision, recall, f1, support}."""
    _check_lengths(hyps, refs)
    if not hyps:
        raise ValueError("no reports to score: hyps and refs are empty")
    return _scores(binarize(hyps, labels, uncertain_as), binarize(refs, labels, uncertain_as), labels)


def chexbert_scores(
    hyps: Sequence[LabelVector], refs: Sequence[LabelVector], uncertain_as: str = "positive"
) -> dict:
    """The table figures of METRICS.md: micro / macro / weighted F1 over the 14 labels and over
    ``CHEXPERT_5``, micro precision and recall over 14, and ``accuracy_5``, the share of reports
    whose 5 binary labels all match (f1chexbert 0.0.2's ``accuracy``, sklearn ``accuracy_score`` on
    a multilabel matrix)."""
    _check_lengths(hyps, refs)
    if not hyps:
        raise ValueError("no reports to score: hyps and refs are empty")
    hyp, ref = binarize(hyps, uncertain_as=uncertain_as), binarize(refs, uncertain_as=uncertain_as)  # (N, 14)
    five = [CHEXPERT_14.index(name) for name in CHEXPERT_5]
    all14, top5 = _scores(hyp, ref, CHEXPERT_14), _scores(hyp[:, five], ref[:, five], CHEXPERT_5)
    return {
        "micro_f1_14": all14["micro_f1"],
        "macro_f1_14": all14["macro_f1"],
        "weighted_f1_14": all14["weighted_f1"],
        "micro_precision_14": all14["micro_precision"],
        "micro_recall_14": all14["micro_recall"],
        "micro_f1_5": top5["micro_f1"],
        "macro_f1_5": top5["macro_f1"],
        "weighted_f1_5": top5["weighted_f1"],
        "accuracy_5": float((hyp[:, five] == ref[:, five]).all(axis=1).mean()),
    }


OUTCOMES: tuple[str, ...] = ("tp", "fp", "fn", "tn")


def label_outcomes(
    hyp: LabelVector, ref: LabelVector, uncertain_as: str = "positive", labels: Sequence[str] = CHEXPERT_14
) -> dict[str, str]:
    """Each observation's outcome for one (hyp, ref) pair: ``"tp"`` (both positive), ``"fp"``,
    ``"fn"`` or ``"tn"``, with uncertain read as ``uncertain_as`` (the convention of the F1s)."""
    to_binary = _to_binary(uncertain_as)
    h = _binary_row("hyp", hyp, labels, to_binary)
    r = _binary_row("ref", ref, labels, to_binary)
    names = {(1, 1): "tp", (1, 0): "fp", (0, 1): "fn", (0, 0): "tn"}
    return {name: names[a, b] for name, a, b in zip(labels, h, r, strict=True)}


def pair_micro_f1(hyp: LabelVector, ref: LabelVector, uncertain_as: str = "positive") -> float:
    """The EditGRPO reward: micro-F1 of one (hyp, ref) pair over the 14 labels, 2 TP / (2 TP + FP +
    FN); 0.0 when both binarised vectors are all zero (METRICS.md; sklearn ``zero_division=0``).

    Plain counting, the reference for ``pair_micro_f1_batch``."""
    to_binary = _to_binary(uncertain_as)
    h = _binary_row("hyp", hyp, CHEXPERT_14, to_binary)
    r = _binary_row("ref", ref, CHEXPERT_14, to_binary)
    tp = sum(a and b for a, b in zip(h, r, strict=True))
    fp, fn = sum(h) - tp, sum(r) - tp
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def pair_micro_f1_batch(
    hyps: Sequence[LabelVector], refs: Sequence[LabelVector], uncertain_as: str = "positive"
) -> list[float]:
    """``pair_micro_f1`` of each (hyp, ref) pair, vectorised over the N pairs."""
    _check_lengths(hyps, refs)
    hyp, ref = binarize(hyps, uncertain_as=uncertain_as), binarize(refs, uncertain_as=uncertain_as)  # (N, 14)
    tp = (hyp * ref).sum(axis=1)  # (N,)
    fp_plus_fn = (hyp != ref).sum(axis=1)  # (N,)
    return _ratio(2 * tp, 2 * tp + fp_plus_fn).tolist()
