r"""What the edit engine (``editgrpo.edits``) reads about one text: sentences, entities, vectors.

``analyse(texts, extractor, embedder)`` runs an entity extractor (``annotators/entities.py``) and an
embedder (``annotators/embeddings.py``) on a batch of texts and returns one ``TextAnalysis`` each:

- ``sentences``: ``text.sentences.split_sentences`` (character offsets into ``text``);
- ``entities``: the RaTE entities (EDITGRPO.md section 3), each with the index of the sentence that
  holds its first character, its RaTE type, ``present`` (False for the NON-* types, which a report
  states absent) and its embedding vector (D,), L2-normalised as the embedder returns it;
- ``graph``: the RadGraph entities, lower-cased tokens + label + sentence index, for the
  ``radgraph`` edit rule.

All entity texts of the batch are embedded in one ``embed`` call. The edit engine never calls an
annotator itself, so tests build ``TextAnalysis`` objects by hand with chosen vectors.

Conventions (``ANALYSIS_CONVENTIONS``; ``analyse(..., convention=)`` or ``with_convention``) say how
a text is cut into sentences and which sentence an entity belongs to:

- ``radiology`` (default): ``split_sentences`` and the sentence holding the entity's first
  character;
- ``release`` (what the ``release`` edit rule reads, EDITGRPO.md section 3): the authors' server
  (taokz/EditGRPO@5decc57 ``flask_server/RaTEscore_extractor.py`` ``get_entity_containing_sentences``
  and ``extract_entities_with_context``) splits with the regex ``(?<=[.!?])\s+|\n+`` and puts each
  entity in the *first* sentence whose lower-cased text contains the lower-cased entity string,
  wherever the entity occurs; an entity no sentence contains (a model's re-tokenised string) is
  dropped, as the server drops it. RadGraph entities keep the sentence that holds their first
  character.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from editgrpo.text.sentences import Sentence, split_sentences


@dataclass(frozen=True, eq=False)
class AnalysedEntity:
    """A RaTE entity of an analysed text: span ``[start, end)`` in the text, sentence index, RaTE
    type, presence (``not rate_type.startswith("NON-")``) and its unit vector (D,)."""

    text: str
    start: int
    end: int
    sentence: int
    rate_type: str
    present: bool
    vector: np.ndarray


@dataclass(frozen=True)
class SentenceGraphEntity:
    """A RadGraph entity of an analysed text: lower-cased tokens, label (ANAT-DP, OBS-DP, OBS-U,
    OBS-DA) and sentence index."""

    tokens: str
    label: str
    sentence: int


@dataclass(eq=False)
class TextAnalysis:
    """One text as the edit rules see it (module docstring)."""

    text: str
    sentences: list[Sentence]
    entities: list[AnalysedEntity] = field(default_factory=list)
    graph: list[SentenceGraphEntity] = field(default_factory=list)
    convention: str = "radiology"


def is_present(rate_type: str) -> bool:
    """RaTE NON-* types state absence (RATE_TYPES in ``entity_types``)."""
    return not rate_type.upper().startswith("NON-")


def _sentence_index(starts: list[int], position: int) -> int:
    """Index of the sentence holding ``position`` (the last sentence starting at or before it)."""
    return max(bisect.bisect_right(starts, position) - 1, 0)


# release: flask_server/RaTEscore_extractor.py get_entity_containing_sentences (the client's
# verl/utils/RaTEscore_extractor.py splits the same way when it edits).
_RELEASE_BOUNDARY = re.compile(r"(?<=[.!?])\s+|\n+")


def release_sentences(text: str) -> list[Sentence]:
    """The release's sentences of ``text``: pieces between regex matches, stripped, empty ones left
    out (``text == source[start:end]`` as for ``split_sentences``)."""
    out: list[Sentence] = []
    start = 0
    for end, after in [(m.start(), m.end()) for m in _RELEASE_BOUNDARY.finditer(text)] + [(len(text), 0)]:
        piece = text[start:end]
        stripped = piece.strip()
        if stripped:
            first = start + len(piece) - len(piece.lstrip())
            out.append(Sentence(stripped, first, first + len(stripped)))
        start = after
    return out


def first_containing_sentence(sentences: Sequence[Sentence], entity_text: str) -> int | None:
    """Index of the first sentence whose lower-cased text contains ``entity_text`` lower-cased
    (None when none does, or the string is blank): the release server's assignment."""
    needle = entity_text.lower()
    if not needle.strip():
        return None
    return next((k for k, s in enumerate(sentences) if needle in s.text.lower()), None)


def _to_release(analysis: TextAnalysis) -> TextAnalysis:
    sentences = release_sentences(analysis.text)
    entities = []
    for entity in analysis.entities:
        index = first_containing_sentence(sentences, entity.text)
        if index is not None:
            entities.append(replace(entity, sentence=index))
    starts = [s.start for s in sentences]
    old = analysis.sentences
    graph = [
        replace(g, sentence=_sentence_index(starts, old[g.sentence].start))
        for g in analysis.graph
        if sentences and 0 <= g.sentence < len(old)
    ]
    return TextAnalysis(analysis.text, sentences, entities, graph, convention="release")


ANALYSIS_CONVENTIONS: tuple[str, ...] = ("radiology", "release")


def with_convention(analysis: TextAnalysis, convention: str) -> TextAnalysis:
    """``analysis`` cut into sentences and assigned by ``convention`` (module docstring), from its
    text and entity strings; the same object when it already follows it. Converting a
    ``radiology`` analysis back is not supported (its positions are kept only there)."""
    if convention not in ANALYSIS_CONVENTIONS:
        raise ValueError(
            f"unknown analysis convention {convention!r}; valid: {', '.join(ANALYSIS_CONVENTIONS)}"
        )
    if analysis.convention == convention:
        return analysis
    if convention == "radiology":
        raise ValueError(f"a {analysis.convention!r} analysis cannot be converted back to 'radiology'")
    return _to_release(analysis)


def analyse(
    texts: Sequence[str], extractor: Any, embedder: Any, convention: str = "radiology"
) -> list[TextAnalysis]:
    """``TextAnalysis`` of each text; ``extractor.extract(texts) -> list[ReportEntities]`` and
    ``embedder.embed(strings) -> (N, D)``. One ``embed`` call for all entity texts of the batch.
    ``convention``: ``ANALYSIS_CONVENTIONS`` (module docstring)."""
    if convention not in ANALYSIS_CONVENTIONS:
        raise ValueError(
            f"unknown analysis convention {convention!r}; valid: {', '.join(ANALYSIS_CONVENTIONS)}"
        )
    texts = list(texts)
    reports = extractor.extract(texts)
    names = [e.text for report in reports for e in report.rate]
    dim = int(getattr(embedder, "dim", 0) or 0)
    vectors = (
        np.asarray(embedder.embed(names), dtype=np.float32) if names else np.zeros((0, dim), np.float32)
    )  # (N, D)
    out: list[TextAnalysis] = []
    cursor = 0
    for text, report in zip(texts, reports, strict=True):
        sentences = split_sentences(text)
        starts = [s.start for s in sentences]
        entities = []
        for entity in report.rate:
            entities.append(
                AnalysedEntity(
                    text=entity.text,
                    start=entity.start,
                    end=entity.end,
                    sentence=_sentence_index(starts, entity.start),
                    rate_type=entity.rate_type,
                    present=is_present(entity.rate_type),
                    vector=vectors[cursor],
                )
            )
            cursor += 1
        graph = [
            SentenceGraphEntity(g.tokens.lower(), g.label, _sentence_index(starts, g.start))
            for g in report.graph
        ]
        out.append(TextAnalysis(text=text, sentences=sentences, entities=entities, graph=graph))
    return [with_convention(a, convention) for a in out]
