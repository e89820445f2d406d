"""Phrase patterns and the negation/uncertainty scope engine."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from editgrpo.annotators.scope import (
    PhraseSet,
    ScopeEngine,
    compile_phrase,
    phrase_anchors,
    read_sections,
    sentence_prefixes,
)


def _matches(phrase: str, text: str) -> list[str]:
    return [m.group() for m in re.finditer(compile_phrase(phrase), text, re.IGNORECASE)]


def test_phrase_syntax() -> None:
    assert _matches("atelecta*", "Bibasilar atelectasis and atelectatic change") == [
        "atelectasis",
        "atelectatic",
    ]
    assert _matches("(heart|cardiac) size", "Heart size normal; cardiac size stable") == [
        "Heart size",
        "cardiac size",
    ]
    assert _matches("pleural [right|left] effusion", "pleural effusion, pleural left effusion") == [
        "pleural effusion",
        "pleural left effusion",
    ]
    # A gap takes up to three words, no more.
    assert _matches("enlarge* ... heart", "enlarged heart; enlargement of the heart") == [
        "enlarged heart",
        "enlargement of the heart",
    ]
    assert _matches("enlarge* ... heart", "enlarged one two three four heart") == []
    # Word boundaries: no match inside a word.
    assert _matches("port", "support the port") == ["port"]
    assert _matches("(a|b (c|d))", "b d") == ["b d"]
    with pytest.raises(ValueError, match="unbalanced"):
        compile_phrase("(a|b")
    with pytest.raises(ValueError, match="ends with a gap"):
        compile_phrase("a ...")


def test_anchors() -> None:
    assert phrase_anchors("(heart|cardiac) size") == {"heart", "cardiac"}
    assert phrase_anchors("[mild] atelecta*") == {"mild", "atelecta"}
    assert phrase_anchors("swan-ganz") == {"swan"}
    assert phrase_anchors("?") == {"?"}
    assert phrase_anchors("... heart") is None
    assert "atelecta" in sentence_prefixes("Mild atelectasis?") and "?" in sentence_prefixes("x?")


PHRASES = [
    "atelecta*",
    "(heart|cardiac) (size|silhouette)",
    "[small] pleural effusion*",
    "no new",
    "?",
    "port-a-cath",
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "no",
                "new",
                "small",
                "pleural",
                "effusion",
                "heart",
                "size",
                "atelectatic",
                "?",
                "port-a-cath",
                "x",
                ",",
                " ",
            ]
        ),
        max_size=25,
    ).map(" ".join)
)
def test_anchor_prefilter_never_changes_matches(sentence: str) -> None:
    phrases = PhraseSet(PHRASES)
    direct = [m.span() for m in phrases.pattern.finditer(sentence)]
    assert [m.span() for m in phrases.finditer(sentence, sentence_prefixes(sentence))] == direct


CUES = """
[pre_negation_uncertainty]
> cannot exclude
[negation]
> no
< (has resolved)
< normal @attribute
[post_negation_uncertainty]
> may
<> or {2} @paired
[terminator]
but
"""


def _status(sentence: str, word: str, *, attribute: bool = False, others: tuple[str, ...] = ()) -> str | None:
    scope = ScopeEngine(CUES, scope_words=4).analyse(sentence)
    start = sentence.index(word)
    spans = [(sentence.index(o), sentence.index(o) + len(o)) for o in others]
    return scope.status(start, start + len(word), attribute=attribute, others=spans)


def test_stages_directions_and_terminators() -> None:
    assert _status("No effusion.", "effusion") == "negative"
    assert _status("Effusion has resolved.", "Effusion") == "negative"
    assert _status("Effusion, no pneumothorax.", "Effusion") == "positive"  # "no" looks forward only
    assert _status("Cannot exclude no effusion.", "effusion") == "uncertain"  # pre-negation stage first
    assert _status("No pneumothorax but effusion.", "effusion") == "positive"  # terminator
    assert _status("No one two three four five effusion.", "effusion") == "positive"  # beyond the window
    assert _status("Opacity may be effusion.", "effusion") == "uncertain"


def test_attribute_cues_and_paired_cues() -> None:
    assert _status("Heart size normal.", "Heart size", attribute=True) == "negative"
    assert (
        _status("Heart size stable.", "Heart size", attribute=True) is None
    )  # an attribute alone says nothing
    assert _status("Effusion, normal lungs.", "Effusion") == "positive"  # @attribute cue ignored
    assert _status("Atelectasis or consolidation.", "Atelectasis", others=("consolidation",)) == "uncertain"
    assert _status("Atelectasis or scarring.", "Atelectasis") == "positive"  # no partner mention


def test_cue_file_errors() -> None:
    with pytest.raises(ValueError, match="unknown section"):
        ScopeEngine("[negatoin]\n> no\n")
    with pytest.raises(ValueError, match=r"cues:2: a cue starts with >, < or <>"):
        ScopeEngine("[negation]\nno\n")
    with pytest.raises(ValueError, match=r"f:2: bad phrase"):
        read_sections("[x]\n+ (a|b\n", "f")
    with pytest.raises(ValueError, match="entry before any"):
        read_sections("+ a\n", "f")
