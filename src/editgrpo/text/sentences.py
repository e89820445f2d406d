"""Radiology-aware sentence splitting with character offsets (pure, stdlib only).

``split_sentences(text)`` returns ``Sentence(text, start, end)`` with ``text == source[start:end]``,
in order, non-overlapping, stripped of surrounding whitespace. Only whitespace between sentences is
left out, so edits can map every kept or inserted character back to its source.

Boundaries:
- a line break (reports put list items and headers on their own lines; wrapped prose should be
  joined first, as ``text.sections`` does);
- ``.``, ``!`` or ``?`` (with any closing quotes or brackets after it) followed by whitespace,
  except after
  - an abbreviation that does not end sentences in reports ("Dr.", "vs.", "approx.", "e.g.",
    "i.e.", "a.m.", "p.m.", "No." before a number, single-letter initials "A."),
  - a list number at the start of a sentence ("1. Small effusion." stays one sentence).
- Decimals ("2.5 cm") and dotted times never split (no whitespace after the period).
- De-identification placeholders ("XXXX" in Open-i, "___" in MIMIC-CXR) are ordinary words: a
  period after one ends a sentence like after any other word.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Sentence:
    """A sentence and its half-open character span ``[start, end)`` in the source text."""

    text: str
    start: int
    end: int


# Lower-cased tokens (without their final period) after which a period does not end a sentence.
NON_TERMINAL_ABBREVIATIONS = frozenset(
    {
        "dr",
        "mr",
        "mrs",
        "ms",
        "vs",
        "approx",
        "e.g",
        "i.e",
        "a.m",
        "p.m",
        "cf",
        "fig",
        "st",
        "resp",
        "al",
        "incl",
    }
)

_TERMINATOR = re.compile(r"[.!?]+[\"')\]]*(?=\s)")
_LIST_MARKER = re.compile(r"\(?\d{1,2}[.)]")
_TOKEN_BEFORE = re.compile(r"(\S+)$")


def _is_boundary(text: str, sentence_start: int, match: re.Match[str]) -> bool:
    """Does the terminator ``match`` end the sentence that began at ``sentence_start``?"""
    if not match.group().startswith("."):
        return True  # ! and ? always end a sentence
    before = text[sentence_start : match.start()]
    token_match = _TOKEN_BEFORE.search(before)
    if token_match is None:
        return True
    token = token_match.group(1)
    lowered = token.lower().lstrip("(\"'[")
    if lowered in NON_TERMINAL_ABBREVIATIONS:
        return False
    # "No. 3" (number), but "No." as the answer word still ends a sentence before a capital.
    rest = text[match.end() :].lstrip()
    if lowered == "no" and rest[:1].isdigit():
        return False
    # Single-letter initials ("J. Smith"), but not the pronoun-like "a." or a lone digit.
    if len(lowered) == 1 and lowered.isalpha() and token.isupper() and rest[:1].isupper():
        return False
    # A list number opening the sentence: "1." in "1. Small left effusion."
    stripped = before.strip()
    return not (stripped == token and _LIST_MARKER.fullmatch(token + "."))


def split_sentences(text: str) -> list[Sentence]:
    """Split ``text`` into sentences with offsets (see module docstring for the rules)."""
    sentences: list[Sentence] = []
    line_start = 0
    for line in text.splitlines(keepends=True):
        _split_line(text, line_start, line_start + len(line), sentences)
        line_start += len(line)
    return sentences


def _split_line(text: str, begin: int, end: int, out: list[Sentence]) -> None:
    sentence_start = begin
    for match in _TERMINATOR.finditer(text, begin, end):
        if _is_boundary(text, sentence_start, match):
            _emit(text, sentence_start, match.end(), out)
            sentence_start = match.end()
    _emit(text, sentence_start, end, out)


def _emit(text: str, start: int, end: int, out: list[Sentence]) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if start < end:
        out.append(Sentence(text[start:end], start, end))


def sentence_texts(text: str) -> list[str]:
    """Just the sentence strings."""
    return [s.text for s in split_sentences(text)]


def join_sentences(sentences: list[str]) -> str:
    """Re-join sentences with single spaces (the convention of edited texts, EDITGRPO.md section 3)."""
    return " ".join(s.strip() for s in sentences if s.strip())


def has_repeated_sentence(text: str) -> bool:
    """Whether ``text`` states one sentence twice (case- and whitespace-normalised): the
    "There. There. There." failure of degenerate sampling, counted by the trainer's collapse figures
    and by evaluate's degenerate-output table alike."""
    sentences = [" ".join(s.text.split()).lower() for s in split_sentences(text)]
    sentences = [s for s in sentences if s]
    return len(set(sentences)) < len(sentences)
