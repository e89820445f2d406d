"""Entity annotations shared by every entity backend (lexicon, RaTE-NER, RadGraph).

One report's annotation is a ``ReportEntities`` holding the two schemes the metrics need, which cut
text differently:

- RaTE entities (RaTEScore, Zhao et al. 2024): phrases typed ABNORMALITY, NON-ABNORMALITY,
  DISEASE, NON-DISEASE, ANATOMY (NON-* = stated absent), e.g. "pleural effusion" as one
  NON-ABNORMALITY;
- a RadGraph graph (Jain et al. 2021; RadGraph-XL labels in METRICS.md): token-level entities
  labelled ANAT-DP, OBS-DP, OBS-U, OBS-DA and relations modify, located_at, suggestive_of from
  an entity to its target, e.g. "effusion" OBS-DA located_at "pleural" ANAT-DP.

``to_radgraph`` writes the radgraph package's annotation layout, which the RadGraph-F1 math in
``metrics/radgraph_f1.py`` consumes, so the real ``radgraph`` output and ours are scored by the
same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RATE_TYPES: tuple[str, ...] = ("ABNORMALITY", "NON-ABNORMALITY", "DISEASE", "NON-DISEASE", "ANATOMY")
RADGRAPH_LABELS: tuple[str, ...] = ("ANAT-DP", "OBS-DP", "OBS-U", "OBS-DA")
RELATIONS: tuple[str, ...] = ("modify", "located_at", "suggestive_of")


@dataclass(frozen=True)
class RateEntity:
    """A RaTE entity: its text, character span in the report, and type."""

    text: str
    start: int
    end: int
    rate_type: str


@dataclass(frozen=True)
class GraphEntity:
    """A RadGraph entity: its tokens (RadGraph tokenisation, joined by single spaces), label,
    character span, and token indices in the report (``token_end`` inclusive, as radgraph writes
    ``end_ix``)."""

    tokens: str
    label: str
    start: int
    end: int
    token_start: int
    token_end: int


@dataclass(frozen=True)
class Relation:
    kind: str
    source: int  # index into ReportEntities.graph
    target: int


@dataclass
class ReportEntities:
    text: str
    rate: list[RateEntity] = field(default_factory=list)
    graph: list[GraphEntity] = field(default_factory=list)
    relations: list[Relation] = field(default_factory=list)

    def to_radgraph(self) -> dict[str, Any]:
        """The radgraph package's layout: ``{"text", "entities": {"1": {"tokens", "label",
        "start_ix", "end_ix", "relations": [[kind, "target id"], ...]}}}`` (ids from 1)."""
        entities: dict[str, dict[str, Any]] = {}
        for index, entity in enumerate(self.graph):
            entities[str(index + 1)] = {
                "tokens": entity.tokens,
                "label": entity.label,
                "start_ix": entity.token_start,
                "end_ix": entity.token_end,
                "relations": [
                    [relation.kind, str(relation.target + 1)]
                    for relation in self.relations
                    if relation.source == index
                ],
            }
        return {"text": self.text, "entities": entities}
