"""``chexpert-rules``: an offline labeler of the 14 CheXpert observations, no model.

The design of the CheXpert labeler (Irvin et al., AAAI 2019; METRICS.md), reimplemented:

1. extraction: per sentence (``text.sentences``), phrase matches of each observation's mention
   list, minus those overlapping an unmention ("pericardial effusion") -- the lists are the data
   file ``annotators/data/chexpert_phrases.txt``;
2. classification: each mention's status from the scope engine (``annotators/scope.py``):
   pre-negation uncertainty, negation, post-negation uncertainty, else positive;
3. aggregation per observation: {negative, uncertain} -> uncertain, any positive -> positive (the
   labeler's merge: positive > uncertain > negative); "congestive heart failure" / "CHF" asserted
   or uncertain also makes Cardiomegaly at least uncertain; No Finding = 1 when no observation
   other than Support Devices is positive or uncertain and no other abnormality
   (``[Other Findings]``: emphysema, scoliosis, granuloma, hernia ...) is asserted.

Its numbers are reported as ``chexpert-rules``: an approximation of the CheXpert labeler, not
CheXbert.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from editgrpo.annotators.chexpert import BLANK, NEGATIVE, POSITIVE, UNCERTAIN, LabelVector, empty_vector
from editgrpo.annotators.scope import PhraseSet, ScopeEngine, read_data_file, read_sections, sentence_prefixes
from editgrpo.text.observations import CHEXPERT_14
from editgrpo.text.sentences import split_sentences

OTHER_FINDINGS = "Other Findings"
_STATUS_VALUE = {"positive": POSITIVE, "negative": NEGATIVE, "uncertain": UNCERTAIN}
# Merge order of the CheXpert labeler's aggregation: a positive mention wins, then uncertain.
_RANK = {POSITIVE: 3, UNCERTAIN: 2, NEGATIVE: 1, BLANK: 0}
_HEART_FAILURE = re.compile(r"(?<!\w)(?:chf|congestive heart failure|heart failure)(?!\w)", re.IGNORECASE)


@dataclass(frozen=True)
class Mention:
    """One classified mention: which observation, where in the report, its status."""

    observation: str
    start: int
    end: int
    text: str
    status: str
    attribute: bool = False


@dataclass
class _ObservationPatterns:
    mention: PhraseSet
    attribute: PhraseSet
    unmention: PhraseSet


class RuleLabeler:
    """Batched, deterministic rule labeler (see module docstring).

    ``phrases`` / ``cues``: paths of replacement data files (default: the packaged ones).
    ``cache_size``: sentences whose result is remembered (0: none); reports repeat sentences
    ("No pneumothorax or pleural effusion.") so often that this doubles throughput on real text."""

    name = "chexpert-rules"

    def __init__(
        self,
        phrases: str | Path | None = None,
        cues: str | Path | None = None,
        scope_words: int = 8,
        cache_size: int = 100_000,
    ) -> None:
        text, source = read_data_file(phrases, "chexpert_phrases.txt")
        sections = read_sections(text, source)
        unknown = set(sections) - {*CHEXPERT_14, OTHER_FINDINGS}
        if unknown:
            raise ValueError(
                f"{source}: unknown observation(s) {sorted(unknown)}; valid: {list(CHEXPERT_14)}"
            )
        self._patterns: dict[str, _ObservationPatterns] = {}
        for observation, entries in sections.items():
            by_marker: dict[str, list[str]] = {"+": [], "?": [], "-": []}
            for marker, phrase, number in entries:
                if marker not in by_marker:
                    raise ValueError(
                        f"{source}:{number}: a phrase starts with +, ? or -, got {marker or 'nothing'!r}"
                    )
                by_marker[marker].append(phrase)
            self._patterns[observation] = _ObservationPatterns(
                PhraseSet(by_marker["+"]), PhraseSet(by_marker["?"]), PhraseSet(by_marker["-"])
            )
        # anchor -> observations whose mention or attribute phrases may start with it, so a
        # sentence is only matched against the observations it can mention.
        self._by_anchor: dict[str, set[str]] = {}
        self._unanchored: set[str] = set()
        for observation, patterns in self._patterns.items():
            for phrases in (patterns.mention, patterns.attribute):
                if not phrases:
                    continue
                if phrases.anchors is None:
                    self._unanchored.add(observation)
                    continue
                for anchor in phrases.anchors:
                    self._by_anchor.setdefault(anchor, set()).add(observation)
        cue_text, cue_source = read_data_file(cues, "chexpert_cues.txt")
        self.scope = ScopeEngine(cue_text, cue_source, scope_words=scope_words)
        self.cache_size = cache_size
        self._cache: dict[str, tuple[tuple[str, int, int, str, bool], ...]] = {}

    def mentions(self, report: str) -> list[Mention]:
        """Every classified mention of a report, in text order (for explanations and tests)."""
        found: list[Mention] = []
        for sentence in split_sentences(report):
            for observation, start, end, status, attribute in self._sentence_mentions(sentence.text):
                found.append(
                    Mention(
                        observation,
                        sentence.start + start,
                        sentence.start + end,
                        sentence.text[start:end],
                        status,
                        attribute,
                    )
                )
        return sorted(found, key=lambda m: (m.start, m.observation))

    def _sentence_mentions(self, sentence: str) -> tuple[tuple[str, int, int, str, bool], ...]:
        """(observation, start, end, status, attribute) of one sentence, memoised (``cache_size``)."""
        cached = self._cache.get(sentence)
        if cached is not None:
            return cached
        result = self._classify_sentence(sentence)
        if self.cache_size > 0:
            if len(self._cache) >= self.cache_size:
                self._cache.clear()
            self._cache[sentence] = result
        return result

    def _classify_sentence(self, text: str) -> tuple[tuple[str, int, int, str, bool], ...]:
        """Mentions of one sentence with their status (the uncached work)."""
        found = []
        prefixes = sentence_prefixes(text)
        relevant = set(self._unanchored)
        for prefix in prefixes:
            relevant.update(self._by_anchor.get(prefix, ()))
        candidates = [
            (observation, span)
            for observation, patterns in self._patterns.items()
            if observation in relevant
            for span in self._spans(text, patterns, prefixes)
        ]
        if not candidates:
            return ()
        scope = self.scope.analyse(text, prefixes)
        # Partners for "X or Y" are the 14 observations' mentions: "atelectasis or scarring"
        # stays positive (scarring is an other finding, not a CheXpert observation).
        others = [(start, end) for name, (start, end, _) in candidates if name != OTHER_FINDINGS]
        for observation, (start, end, attribute) in candidates:
            status = scope.status(start, end, attribute=attribute, others=others)
            if status is not None:
                found.append((observation, start, end, status, attribute))
        return tuple(found)

    @staticmethod
    def _spans(
        sentence: str, patterns: _ObservationPatterns, prefixes: frozenset[str]
    ) -> list[tuple[int, int, bool]]:
        spans = [(m.start(), m.end(), False) for m in patterns.mention.finditer(sentence, prefixes)]
        attributes = [(m.start(), m.end(), True) for m in patterns.attribute.finditer(sentence, prefixes)]
        if not spans and not attributes:
            return []
        cancelled = [(m.start(), m.end()) for m in patterns.unmention.finditer(sentence, prefixes)]

        def kept(start: int, end: int) -> bool:
            return not any(start < c_end and c_start < end for c_start, c_end in cancelled)

        spans = [span for span in spans if kept(span[0], span[1])]
        # An attribute mention inside a full mention adds nothing ("heart size" in "heart size is
        # enlarged").
        spans += [
            (start, end, True)
            for start, end, _ in attributes
            if kept(start, end) and not any(s <= start and end <= e for s, e, _ in spans)
        ]
        return spans

    def label_one(self, report: str) -> LabelVector:
        vector = empty_vector()
        other_finding = False
        for mention in self.mentions(report):
            value = _STATUS_VALUE[mention.status]
            if mention.observation == OTHER_FINDINGS:
                other_finding = other_finding or value in (POSITIVE, UNCERTAIN)
                continue
            if _RANK[value] > _RANK[vector[mention.observation]]:
                vector[mention.observation] = value
            if (
                mention.observation == "Edema"
                and value in (POSITIVE, UNCERTAIN)
                and _HEART_FAILURE.search(mention.text)
                and _RANK[vector["Cardiomegaly"]] < _RANK[UNCERTAIN]
            ):
                vector["Cardiomegaly"] = UNCERTAIN
        abnormal = any(
            vector[name] in (POSITIVE, UNCERTAIN)
            for name in CHEXPERT_14
            if name not in ("Support Devices", "No Finding")
        )
        vector["No Finding"] = POSITIVE if not abnormal and not other_finding else BLANK
        return vector

    def label(self, texts: Sequence[str]) -> list[LabelVector]:
        return [self.label_one(text) for text in texts]
