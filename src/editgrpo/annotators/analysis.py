"""What the edit engine (``editgrpo.edits``) reads about one text: sentences, entities, vectors.

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
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
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


def is_present(rate_type: str) -> bool:
    """RaTE NON-* types state absence (RATE_TYPES in ``entity_types``)."""
    return not rate_type.upper().startswith("NON-")


def _sentence_index(starts: list[int], position: int) -> int:
    """Index of the sentence holding ``position`` (the last sentence starting at or before it)."""
    return max(bisect.bisect_right(starts, position) - 1, 0)


def analyse(texts: Sequence[str], extractor: Any, embedder: Any) -> list[TextAnalysis]:
    """``TextAnalysis`` of each text; ``extractor.extract(texts) -> list[ReportEntities]`` and
    ``embedder.embed(strings) -> (N, D)``. One ``embed`` call for all entity texts of the batch."""
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
    return out
