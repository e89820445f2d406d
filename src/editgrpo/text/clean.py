"""Evaluation text cleaners, chosen by name (``CLEANERS``); pure stdlib.

``none`` (the default everywhere) leaves text as it is, apart from stripping. ``editgrpo`` is the
cleaning the EditGRPO authors' evaluation script applies to both predictions and references before
scoring (METRICS.md, "EditGRPO's evaluation protocol"), in this order:

1. collapse whitespace;
2. drop "Indication: ..." text: every sentence that starts with "indication" followed by a colon
   (case-insensitive), i.e. up to the end of that sentence;
3. split into sentences (``text.sentences``);
4. drop sentences of fewer than 2 words;
5. drop near-duplicates of an earlier kept sentence: word-set Jaccard > 0.8, or containment > 0.9
   (the share of the shorter sentence's words found in the other);
6. make every sentence end with a period;
7. ``[EMPTY]`` when nothing is left.

Tables must say which cleaner produced them.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from editgrpo.text.sentences import split_sentences

EMPTY_REPORT = "[EMPTY]"
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_INDICATION = re.compile(r"^\s*indications?\s*:", re.IGNORECASE)


def _words(sentence: str) -> set[str]:
    return set(_WORD.findall(sentence.lower()))


def is_near_duplicate(a: str, b: str, jaccard: float = 0.8, containment: float = 0.9) -> bool:
    """Word-set Jaccard above ``jaccard`` or containment of the smaller set above ``containment``."""
    wa, wb = _words(a), _words(b)
    if not wa or not wb:
        return wa == wb
    overlap = len(wa & wb)
    return overlap / len(wa | wb) > jaccard or overlap / min(len(wa), len(wb)) > containment


def clean_editgrpo(text: str) -> str:
    """The EditGRPO authors' evaluation cleaning (module docstring, steps 1-7)."""
    collapsed = " ".join(text.split())
    kept: list[str] = []
    for sentence in split_sentences(collapsed):
        body = sentence.text
        if _INDICATION.match(body):
            continue
        if len(body.split()) < 2:
            continue
        if any(is_near_duplicate(body, previous) for previous in kept):
            continue
        kept.append(body)
    if not kept:
        return EMPTY_REPORT
    return " ".join(s if s.endswith(".") else s.rstrip("!?;:,") + "." for s in kept)


def clean_none(text: str) -> str:
    return text.strip()


CLEANERS: dict[str, Callable[[str], str]] = {"none": clean_none, "editgrpo": clean_editgrpo}


def get_cleaner(name: str) -> Callable[[str], str]:
    if name not in CLEANERS:
        raise ValueError(f"unknown cleaner {name!r}; valid: {', '.join(CLEANERS)}")
    return CLEANERS[name]
