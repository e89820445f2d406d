"""The EditGRPO evaluation cleaner, step by step on hand-made reports."""

from __future__ import annotations

import pytest

from editgrpo.text.clean import EMPTY_REPORT, clean_editgrpo, get_cleaner, is_near_duplicate


def test_each_step() -> None:
    text = (
        "Indication: cough.  The  lungs are clear.\nOk. No pleural effusion or pneumothorax. "
        "No pleural effusion or pneumothorax is seen. Heart size normal"
    )
    # Indication sentence dropped, "Ok." too short, the second effusion sentence contains the first
    # (containment 1.0 > 0.9), and a final period is added.
    assert (
        clean_editgrpo(text) == "The lungs are clear. No pleural effusion or pneumothorax. Heart size normal."
    )


def test_near_duplicate_thresholds() -> None:
    # Jaccard 4/5 = 0.8 is not > 0.8, containment 4/4 = 1.0 > 0.9 -> duplicate.
    assert is_near_duplicate("a b c d", "a b c d e")
    # Jaccard 3/5 = 0.6, containment 3/4 = 0.75 -> kept.
    assert not is_near_duplicate("a b c d", "a b c e")
    assert is_near_duplicate("Heart is normal.", "heart IS normal")


def test_nothing_left_is_empty_marker() -> None:
    assert clean_editgrpo("Indication: fever. Ok.") == EMPTY_REPORT
    assert clean_editgrpo("") == EMPTY_REPORT


def test_cleaners_are_named() -> None:
    assert get_cleaner("none")("  keep As is. ") == "keep As is."
    assert get_cleaner("editgrpo") is clean_editgrpo
    with pytest.raises(ValueError, match="valid: none, editgrpo"):
        get_cleaner("r2gen")
