"""Class-balanced CheXpert accuracy of one (hyp, ref) pair: the ``chexpert_balanced`` reward component.

The component of the EditGRPO authors' release (issue 11): for observation c with training
positive frequency f_c (the share of training references labelled positive, ``freqs.json`` written
by ``eval/label_stats.py``), a correct positive is worth w_pos = 1 - f_c and a correct negative
w_neg = f_c, so agreeing on a rare finding counts more than agreeing that it is absent:

    pos_correct_c = 1 if hyp_c = ref_c = 1 else 0
    neg_correct_c = 1 if hyp_c = ref_c = 0 else 0
    acc_c = (pos_correct_c * (1 - f_c) + neg_correct_c * f_c) / 2
    component = mean of acc_c over the 14 observations

Labels are binarised first as in ``chexbert_f1.binarize`` (positive -> 1; uncertain -> 1 with
``uncertain_as="positive"``, the default, or 0 with ``"negative"``; negative and blank -> 0), so
"not mentioned" counts as a negative. A perfect pair scores mean_c (1 - f_c or f_c) / 2, at most 0.5.

Pure math on label vectors (ARCHITECTURE.md rule 4); the frequencies arrive as a mapping.
"""

from __future__ import annotations

from collections.abc import Mapping

from editgrpo.metrics.chexbert_f1 import LabelVector, _binary_row, _to_binary
from editgrpo.text.observations import CHEXPERT_14


def _check_freqs(freqs: Mapping[str, float]) -> None:
    missing = [name for name in CHEXPERT_14 if name not in freqs]
    if missing:
        raise ValueError(f"label frequencies lack {missing}; need all of {', '.join(CHEXPERT_14)}")
    bad = {name: freqs[name] for name in CHEXPERT_14 if not 0.0 <= float(freqs[name]) <= 1.0}
    if bad:
        raise ValueError(f"label frequencies must be in [0, 1], got {bad}")


def balanced_accuracy_per_label(
    hyp: LabelVector, ref: LabelVector, freqs: Mapping[str, float], uncertain_as: str = "positive"
) -> dict[str, float]:
    """acc_c of the pair for each of the 14 observations (CheXbert order), for logging."""
    _check_freqs(freqs)
    to_binary = _to_binary(uncertain_as)
    h = _binary_row("hyp", hyp, CHEXPERT_14, to_binary)
    r = _binary_row("ref", ref, CHEXPERT_14, to_binary)
    out = {}
    for name, a, b in zip(CHEXPERT_14, h, r, strict=True):
        f = float(freqs[name])
        pos_correct = 1 if a == b == 1 else 0
        neg_correct = 1 if a == b == 0 else 0
        out[name] = (pos_correct * (1.0 - f) + neg_correct * f) / 2.0
    return out


def balanced_accuracy(
    hyp: LabelVector, ref: LabelVector, freqs: Mapping[str, float], uncertain_as: str = "positive"
) -> float:
    """The component: the mean of ``balanced_accuracy_per_label`` over the 14 observations."""
    per_label = balanced_accuracy_per_label(hyp, ref, freqs, uncertain_as)
    return sum(per_label.values()) / len(per_label)
