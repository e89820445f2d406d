"""Sentence splitting: hand-checked radiology cases and properties over arbitrary text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from editgrpo.text.sentences import Sentence, join_sentences, sentence_texts, split_sentences


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The lungs are clear. No effusion.", ["The lungs are clear.", "No effusion."]),
        ("A 2.5 cm nodule. Stable.", ["A 2.5 cm nodule.", "Stable."]),
        ("Measures 1.2 x 0.8 cm. Unchanged.", ["Measures 1.2 x 0.8 cm.", "Unchanged."]),
        (
            "1. Small left effusion. 2. No pneumothorax.",
            ["1. Small left effusion.", "2. No pneumothorax."],
        ),
        ("1. Small left effusion\n2. No pneumothorax", ["1. Small left effusion", "2. No pneumothorax"]),
        (
            "Findings discussed with Dr. ___ at 10:30 a.m. on ___.",
            ["Findings discussed with Dr. ___ at 10:30 a.m. on ___."],
        ),
        ("The XXXX are normal. XXXX opacity.", ["The XXXX are normal.", "XXXX opacity."]),
        (
            "Heart size, e.g. borderline, vs. prior. Stable.",
            ["Heart size, e.g. borderline, vs. prior.", "Stable."],
        ),
        ("Is there a leak? No! Clear.", ["Is there a leak?", "No!", "Clear."]),
        ("Line tip (in the SVC.) Good.", ["Line tip (in the SVC.)", "Good."]),
        ("No. 3 tube in place. No.\nNext line", ["No. 3 tube in place.", "No.", "Next line"]),
        ("", []),
        ("   \n\n  ", []),
        ("no terminal punctuation", ["no terminal punctuation"]),
    ],
)
def test_radiology_cases(text: str, expected: list[str]) -> None:
    assert sentence_texts(text) == expected


def test_offsets_point_into_the_source() -> None:
    text = "  Lungs clear.\n\nHeart normal.  "
    assert split_sentences(text) == [Sentence("Lungs clear.", 2, 14), Sentence("Heart normal.", 16, 29)]


def test_join_uses_single_spaces() -> None:
    assert join_sentences([" Lungs clear. ", "", "Heart normal."]) == "Lungs clear. Heart normal."


def _non_space(text: str) -> str:
    return "".join(ch for ch in text if not ch.isspace())


# Text built from report-like pieces, so abbreviations, list numbers, decimals and placeholders
# meet each other in every order.
radiology_like = st.lists(
    st.sampled_from(
        [
            "abc",
            "XYZ",
            " ",
            ". ",
            ".",
            "?",
            "!",
            "(",
            ")",
            "\n",
            "\t",
            "Dr.",
            "e.g.",
            "1. ",
            "XXXX",
            "___",
            "2.5",
        ]
    ),
    max_size=60,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), radiology_like))
def test_split_loses_and_reorders_nothing_but_whitespace(text: str) -> None:
    sentences = split_sentences(text)
    assert _non_space("".join(s.text for s in sentences)) == _non_space(text)
    previous_end = 0
    for s in sentences:
        assert text[s.start : s.end] == s.text  # offsets round-trip
        assert s.start >= previous_end and s.end > s.start  # in order, non-overlapping, non-empty
        assert s.text == s.text.strip()
        assert not text[previous_end : s.start].strip()  # only whitespace between sentences
        previous_end = s.end
    assert not text[previous_end:].strip()
