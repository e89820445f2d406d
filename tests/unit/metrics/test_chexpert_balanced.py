"""Class-balanced CheXpert accuracy (the chexpert_balanced component): hand-computed values."""

from __future__ import annotations

import pytest

from editgrpo.metrics.chexpert_balanced import balanced_accuracy, balanced_accuracy_per_label
from editgrpo.text.observations import CHEXPERT_14

# f_c = 0.1 for every observation but Cardiomegaly (0.3) and Pleural Effusion (0.2).
FREQS = {**dict.fromkeys(CHEXPERT_14, 0.1), "Cardiomegaly": 0.3, "Pleural Effusion": 0.2}
HYP = {"Cardiomegaly": 1, "Pleural Effusion": 0, "Edema": -1}
REF = {"Cardiomegaly": 1, "Pleural Effusion": 1, "Edema": 1, "Atelectasis": 0}


def test_per_label_values_by_hand() -> None:
    # Binarised (uncertain -> positive, blank/negative -> 0): hyp Card 1, PE 0, Edema 1, rest 0;
    # ref Card 1, PE 1, Edema 1, rest 0.
    per_label = balanced_accuracy_per_label(HYP, REF, FREQS)
    assert list(per_label) == list(CHEXPERT_14)
    assert per_label["Cardiomegaly"] == pytest.approx((1 - 0.3) / 2)  # both positive: 0.35
    assert per_label["Pleural Effusion"] == 0.0  # hyp 0, ref 1: neither correct
    assert per_label["Edema"] == pytest.approx((1 - 0.1) / 2)  # uncertain hyp counts as positive: 0.45
    assert per_label["Atelectasis"] == pytest.approx(0.1 / 2)  # hyp blank, ref negative: both 0 -> 0.05
    assert per_label["No Finding"] == pytest.approx(0.1 / 2)  # both blank -> 0.05


def test_component_is_the_mean_over_14_by_hand() -> None:
    # 0.35 (Card) + 0 (PE) + 0.45 (Edema) + 11 x 0.05 (both negative) = 1.35; / 14.
    assert balanced_accuracy(HYP, REF, FREQS) == pytest.approx(1.35 / 14)
    # uncertain -> negative: Edema becomes hyp 0 vs ref 1 -> 0, so 0.35 + 0.55 = 0.9; / 14.
    assert balanced_accuracy(HYP, REF, FREQS, uncertain_as="negative") == pytest.approx(0.9 / 14)


def test_a_perfect_pair_scores_the_weight_of_what_it_agrees_on() -> None:
    # Both all blank: every label a correct negative worth f_c / 2: (0.3 + 0.2 + 12 x 0.1) / 2 = 0.85.
    assert balanced_accuracy({}, {}, FREQS) == pytest.approx(0.85 / 14)
    # Both all positive: every label worth (1 - f_c) / 2: (0.7 + 0.8 + 12 x 0.9) / 2 = 6.15.
    everything = dict.fromkeys(CHEXPERT_14, 1)
    assert balanced_accuracy(everything, everything, FREQS) == pytest.approx(6.15 / 14)


def test_bad_frequencies_and_labels_are_refused() -> None:
    with pytest.raises(ValueError, match="lack"):
        balanced_accuracy(HYP, REF, {"Cardiomegaly": 0.3})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        balanced_accuracy(HYP, REF, {**FREQS, "Edema": 1.5})
    with pytest.raises(ValueError, match="not a CheXpert class"):
        balanced_accuracy({"Edema": 2}, REF, FREQS)
