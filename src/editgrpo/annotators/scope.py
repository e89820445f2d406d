"""Phrase patterns and the negation/uncertainty scope engine, shared by the rule annotators.

Two parts, both pure stdlib:

``compile_phrase`` turns a readable phrase ("(enlarge*|widen*) ... mediastin*") into a regex
(syntax in ``annotators/data/chexpert_phrases.txt``). Patterns live in data files so a reader can
audit and extend the vocabulary without reading code.

``ScopeEngine`` decides whether a mention in a sentence is asserted, negated or uncertain, in the
three stages of the CheXpert labeler (Irvin et al., AAAI 2019), in its order: pre-negation
uncertainty ("cannot exclude X"), negation ("no X", "X has resolved"), post-negation uncertainty
("may represent X", "X or Y"). The first stage with a cue covering the mention decides. A cue
covers a mention in its direction (after it for ``>``, before it for ``<``) when no terminator
("but", "however", ";" ...) stands between them and they are at most ``scope_words`` words apart.
CheXpert's NegBio walks a dependency parse instead; the window is the NegEx-style approximation
(Chapman et al., 2001) that needs no parser. Cues marked ``@attribute`` only apply to attribute
mentions ("heart size is normal" negates cardiomegaly, "normal lungs" negates nothing).

The entity extractor uses the same engine with its own cue file, so labels and entities can never
disagree on what a sentence negates.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path

STAGES: tuple[str, ...] = ("pre_negation_uncertainty", "negation", "post_negation_uncertainty")
STAGE_STATUS: dict[str, str] = {
    "pre_negation_uncertainty": "uncertain",
    "negation": "negative",
    "post_negation_uncertainty": "uncertain",
}
POSITIVE, NEGATIVE, UNCERTAIN = "positive", "negative", "uncertain"

GAP_WORDS = 3


# --------------------------------------------------------------------------------------------
# Phrase patterns
# --------------------------------------------------------------------------------------------


def _split_items(phrase: str) -> list[str]:
    """Top-level items of a phrase: words, ``(...)`` groups, ``[...]`` optionals, ``...`` gaps."""
    items, i = [], 0
    while i < len(phrase):
        ch = phrase[i]
        if ch.isspace():
            i += 1
        elif ch in "([":
            close = ")" if ch == "(" else "]"
            depth, j = 0, i
            while j < len(phrase):
                if phrase[j] == ch:
                    depth += 1
                elif phrase[j] == close:
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            if j == len(phrase):
                raise ValueError(f"unbalanced {ch!r} in phrase {phrase!r}")
            items.append(phrase[i : j + 1])
            i = j + 1
        else:
            j = i
            while j < len(phrase) and not phrase[j].isspace():
                j += 1
            items.append(phrase[i:j])
            i = j
    return items


def _word_regex(word: str) -> str:
    wildcard = word.endswith("*") and len(word) > 1
    core = word[:-1] if wildcard else word
    body = re.escape(core) + (r"\w*" if wildcard else "")
    start = r"(?<!\w)" if core[:1].isalnum() or core[:1] == "_" else ""
    end = r"(?!\w)" if wildcard or core[-1:].isalnum() or core[-1:] == "_" else ""
    return start + body + end


def _top_level_split(inner: str) -> list[str]:
    """Split a group's inside on the ``|`` that are not inside a nested group."""
    parts, depth, current = [], 0, ""
    for ch in inner:
        depth += ch in "(["
        depth -= ch in ")]"
        if ch == "|" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [*parts, current]


def _alternatives(inner: str) -> str:
    alternatives = [_sequence_regex(alt.strip()) for alt in _top_level_split(inner) if alt.strip()]
    return "(?:" + "|".join(alternatives) + ")"


def _sequence_regex(phrase: str) -> str:
    out, pending_gap = "", False
    for item in _split_items(phrase):
        if item == "...":
            out += rf"(?:\s+\S+){{0,{GAP_WORDS}}}?"
            pending_gap = True
            continue
        if item.startswith("["):
            out += r"(?:\s*" + _alternatives(item[1:-1]) + ")?"
            continue
        piece = _alternatives(item[1:-1]) if item.startswith("(") else _word_regex(item)
        out += (r"\s*" if out else "") + piece
        pending_gap = False
    if pending_gap:
        raise ValueError(f"phrase {phrase!r} ends with a gap")
    return out


def compile_phrase(phrase: str) -> str:
    """Regex source of one phrase (case-insensitive matching is the caller's flag)."""
    if not phrase.strip():
        raise ValueError("empty phrase")
    return _sequence_regex(phrase)


def compile_phrases(phrases: list[str]) -> re.Pattern[str] | None:
    """One alternation regex for many phrases, longest alternatives first; None for no phrase."""
    if not phrases:
        return None
    sources = sorted((compile_phrase(p) for p in phrases), key=len, reverse=True)
    return re.compile("|".join(f"(?:{s})" for s in sources), re.IGNORECASE)


def phrase_anchors(phrase: str) -> set[str] | None:
    """Lower-cased word prefixes one of which every match of ``phrase`` starts with (the first
    word-character run of each possible first word, or the first character of a punctuation cue
    such as "?" or ";"), or None when a match may start anywhere (a leading gap).

    Used as a prefilter: Python's regex engine tries every alternative at every position, so
    skipping the phrase sets whose anchors a sentence lacks is what makes labelling fast."""
    items = _split_items(phrase)
    anchors: set[str] = set()
    for item in items:
        if item == "...":
            return None
        if item.startswith(("(", "[")):
            for alternative in _top_level_split(item[1:-1]):
                found = phrase_anchors(alternative.strip()) if alternative.strip() else None
                if found is None:
                    return None
                anchors |= found
            if item.startswith("("):
                return anchors
            continue  # an optional first item: the next item may start the match too
        word = re.match(r"\w+", item.rstrip("*").lower())
        if word is None:  # a punctuation cue ("?", ";") is its own anchor
            return anchors | {item[0]} if not item[0].isspace() else None
        return anchors | {word.group()}
    return None


def sentence_prefixes(sentence: str) -> frozenset[str]:
    """Every prefix of every lower-cased word of a sentence, and its punctuation characters (the
    set ``phrase_anchors`` meet)."""
    lowered = sentence.lower()
    prefixes = {word[:k] for word in re.findall(r"\w+", lowered) for k in range(1, len(word) + 1)}
    prefixes.update(ch for ch in lowered if not ch.isalnum() and not ch.isspace() and ch != "_")
    return frozenset(prefixes)


class PhraseSet:
    """Compiled phrases plus their anchors; ``finditer`` yields nothing at once when the
    sentence (given by its ``sentence_prefixes``) has none of the anchors."""

    def __init__(self, phrases: list[str]) -> None:
        self.pattern = compile_phrases(phrases)
        anchors: set[str] | None = set()
        for phrase in phrases:
            found = phrase_anchors(phrase)
            if found is None:
                anchors = None
                break
            anchors |= found
        self.anchors = frozenset(anchors) if anchors is not None else None

    def __bool__(self) -> bool:
        return self.pattern is not None

    def finditer(self, sentence: str, prefixes: frozenset[str] | None = None):
        if self.pattern is None:
            return iter(())
        if prefixes is not None and self.anchors is not None and self.anchors.isdisjoint(prefixes):
            return iter(())
        return self.pattern.finditer(sentence)


def read_sections(text: str, source: str) -> dict[str, list[tuple[str, str, int]]]:
    """``[Header]`` sections of a data file -> (marker, phrase, line) entries. The marker is the
    leading ``+``, ``?``, ``-``, ``>``, ``<`` or ``<>`` (empty for plain lines). ``#`` starts a comment."""
    sections: dict[str, list[tuple[str, str, int]]] = {}
    current: list[tuple[str, str, int]] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        if line.startswith("[") and line.endswith("]") and "|" not in line:
            current = sections.setdefault(line[1:-1].strip(), [])
            continue
        if current is None:
            raise ValueError(f"{source}:{number}: entry before any [section] header")
        match = re.match(r"^(<>|[+?\-<>])\s+(.*)$", line)
        marker, phrase = (match.group(1), match.group(2).strip()) if match else ("", line)
        try:
            compile_phrase(re.sub(r"@attribute|\{\d+\}\s*$", "", phrase).strip())
        except (ValueError, re.error) as err:
            raise ValueError(f"{source}:{number}: bad phrase {phrase!r}: {err}") from None
        current.append((marker, phrase, number))
    return sections


def package_data(name: str) -> tuple[str, str]:
    """(text, source name) of a data file shipped in ``editgrpo/annotators/data``."""
    resource = resources.files("editgrpo.annotators").joinpath("data", name)
    return resource.read_text(encoding="utf-8"), f"editgrpo/annotators/data/{name}"


def read_data_file(path: str | Path | None, default_name: str) -> tuple[str, str]:
    """A user's data file, or the packaged default."""
    if path is None:
        return package_data(default_name)
    return Path(path).read_text(encoding="utf-8"), str(path)


# --------------------------------------------------------------------------------------------
# Scope engine
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CueMatch:
    stage: str
    direction: str  # ">" forward, "<" backward, "<>" both
    start: int
    end: int
    attribute_only: bool
    scope_words: int | None = None  # the cue's own window ({n} in the cue file), else the engine's
    paired: bool = False  # @paired: governs a mention only if another mention stands on its other side


_CUE_OPTION = re.compile(r"@attribute|@paired|\{\d+\}")


def _cue_options(phrase: str) -> tuple[str, bool, bool, int | None]:
    """Strip a cue's options: ``@attribute``, ``@paired`` and a window ``{n}`` (words)."""
    window = re.search(r"\{(\d+)\}", phrase)
    return (
        _CUE_OPTION.sub("", phrase).strip(),
        "@attribute" in phrase,
        "@paired" in phrase,
        int(window.group(1)) if window else None,
    )


class ScopeEngine:
    """Negation and uncertainty status of mentions (see module docstring).

    ``cues`` is the text of a cue file (default: the packaged ``chexpert_cues.txt``)."""

    def __init__(self, cues: str | None = None, source: str = "cues", scope_words: int = 8) -> None:
        text, source = (cues, source) if cues is not None else package_data("chexpert_cues.txt")
        sections = read_sections(text, source)
        unknown = set(sections) - {*STAGES, "terminator"}
        if unknown:
            raise ValueError(
                f"{source}: unknown section(s) {sorted(unknown)}; valid: {[*STAGES, 'terminator']}"
            )
        self.scope_words = scope_words
        # (stage, direction, attribute_only, paired, window) -> one compiled alternation.
        self._cues: list[tuple[str, str, bool, bool, int | None, PhraseSet]] = []
        for stage in STAGES:
            groups: dict[tuple[str, bool, bool, int | None], list[str]] = {}
            for marker, phrase, number in sections.get(stage, []):
                if marker not in (">", "<", "<>"):
                    raise ValueError(
                        f"{source}:{number}: a cue starts with >, < or <>, got {marker or 'nothing'!r}"
                    )
                phrase, attribute_only, paired, window = _cue_options(phrase)
                groups.setdefault((marker, attribute_only, paired, window), []).append(phrase)
            for (direction, attribute_only, paired, window), phrases in groups.items():
                self._cues.append((stage, direction, attribute_only, paired, window, PhraseSet(phrases)))
        self._terminator = PhraseSet([phrase for _, phrase, _ in sections.get("terminator", [])])

    def analyse(self, sentence: str, prefixes: frozenset[str] | None = None) -> SentenceScope:
        """Cue and terminator positions of one sentence, ready for ``status`` queries.
        ``prefixes``: the sentence's ``sentence_prefixes`` when the caller has them."""
        prefixes = sentence_prefixes(sentence) if prefixes is None else prefixes
        cues = [
            CueMatch(stage, direction, m.start(), m.end(), attribute_only, window, paired)
            for stage, direction, attribute_only, paired, window, phrases in self._cues
            for m in phrases.finditer(sentence, prefixes)
            if m.end() > m.start()
        ]
        terminators = [(m.start(), m.end()) for m in self._terminator.finditer(sentence, prefixes)]
        return SentenceScope(sentence, cues, terminators, self.scope_words)


class SentenceScope:
    """Cue matches of one sentence; ``status(start, end)`` classifies a mention span."""

    def __init__(
        self, sentence: str, cues: list[CueMatch], terminators: list[tuple[int, int]], scope_words: int
    ) -> None:
        self.sentence = sentence
        self.cues = cues
        self.terminators = terminators
        self.scope_words = scope_words

    @cached_property
    def _word_starts(self) -> list[int]:
        return [m.start() for m in re.finditer(r"\w+", self.sentence)]

    def _words_between(self, a: int, b: int) -> int:
        return bisect.bisect_left(self._word_starts, b) - bisect.bisect_left(self._word_starts, a)

    def _blocked(self, a: int, b: int) -> bool:
        return any(a <= t_start and t_end <= b for t_start, t_end in self.terminators)

    def covers(self, cue: CueMatch, start: int, end: int, others: Sequence[tuple[int, int]] = ()) -> bool:
        """Does ``cue`` govern the mention at ``[start, end)``? ``others``: the other mention
        spans of the sentence, for ``@paired`` cues ("atelectasis or consolidation" is uncertain,
        "atelectasis or scarring" is not when scarring is no mention)."""
        if cue.paired and not self._has_partner(cue, start, end, others):
            return False
        if cue.start < end and start < cue.end:
            # A cue strictly inside a gapped mention governs it ("heart is not enlarged"); one at
            # its edge is part of the mention's own words.
            return start < cue.start and cue.end < end
        window = self.scope_words if cue.scope_words is None else cue.scope_words
        if cue.direction in (">", "<>") and cue.end <= start:
            return self._words_between(cue.end, start) <= window and not self._blocked(cue.end, start)
        if cue.direction in ("<", "<>") and end <= cue.start:
            return self._words_between(end, cue.start) <= window and not self._blocked(end, cue.start)
        return False

    def _has_partner(self, cue: CueMatch, start: int, end: int, others: Sequence[tuple[int, int]]) -> bool:
        window = self.scope_words if cue.scope_words is None else cue.scope_words
        for o_start, o_end in others:
            if (o_start, o_end) == (start, end):
                continue
            if end <= cue.start and cue.end <= o_start:  # mention, cue, partner
                gap = (cue.end, o_start)
            elif cue.end <= start and o_end <= cue.start:  # partner, cue, mention
                gap = (o_end, cue.start)
            else:
                continue
            if self._words_between(*gap) <= window and not self._blocked(*gap):
                return True
        return False

    def status(
        self, start: int, end: int, *, attribute: bool = False, others: Sequence[tuple[int, int]] = ()
    ) -> str | None:
        """``positive``, ``negative`` or ``uncertain`` for a mention; for an attribute mention,
        None when no cue governs it (an attribute alone asserts nothing). ``others``: the
        sentence's other mention spans (used by ``@paired`` cues)."""
        for stage in STAGES:
            for cue in self.cues:
                if cue.stage != stage or (cue.attribute_only and not attribute):
                    continue
                if self.covers(cue, start, end, others):
                    return STAGE_STATUS[stage]
        return None if attribute else POSITIVE
