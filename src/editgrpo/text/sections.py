"""Report sections (FINDINGS, IMPRESSION, INDICATION, COMPARISON, TECHNIQUE, HISTORY), pure stdlib.

Three sources, one result type (``ReportSections``):

- ``parse_free_text``: MIMIC-CXR-style free text, where a section starts at a line holding an
  upper-case header and a colon ("FINDINGS:", "IMPRESSION:", "PA AND LATERAL VIEWS OF THE CHEST:"
  is not one of ours and goes to ``other``). Header variants map to the six canonical names
  (``HEADER_ALIASES``); "FINDINGS AND IMPRESSION:" fills ``findings`` (the section a FINDINGS
  target reads) and is kept under ``other`` too. Text before the first header is ``preamble``.
- ``from_openi_fields``: the ``AbstractText@Label`` fields of an Open-i (IU X-Ray) XML report.
- ``from_chexpert_plus``: the ``section_*`` columns of the CheXpert Plus report table.

Section bodies are normalised: hard line wraps inside a paragraph become spaces, paragraphs and
list items ("1. ...") stay on their own lines, and an empty body is ``None`` (never "").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

CANONICAL_SECTIONS: tuple[str, ...] = (
    "findings",
    "impression",
    "indication",
    "comparison",
    "technique",
    "history",
)

# Upper-cased header text (without colon) -> canonical section. Variants seen in MIMIC-CXR reports;
# the comparison is made after collapsing whitespace.
HEADER_ALIASES: dict[str, str] = {
    "FINDINGS": "findings",
    "FINDING": "findings",
    "FINDINGS AND IMPRESSION": "findings",
    "FINDINGS/IMPRESSION": "findings",
    "IMPRESSION": "impression",
    "IMPRESSIONS": "impression",
    "CONCLUSION": "impression",
    "CONCLUSIONS": "impression",
    "SUMMARY": "impression",
    "INDICATION": "indication",
    "INDICATIONS": "indication",
    "REASON FOR EXAM": "indication",
    "REASON FOR EXAMINATION": "indication",
    "REASON FOR STUDY": "indication",
    "CLINICAL INDICATION": "indication",
    "COMPARISON": "comparison",
    "COMPARISONS": "comparison",
    "COMPARISON STUDY": "comparison",
    "COMPARISON STUDIES": "comparison",
    "PRIOR STUDIES": "comparison",
    "TECHNIQUE": "technique",
    "TECHNIQUES": "technique",
    "EXAMINATION": "technique",
    "EXAM": "technique",
    "PROCEDURE": "technique",
    "HISTORY": "history",
    "CLINICAL HISTORY": "history",
    "MEDICAL HISTORY": "history",
    "CLINICAL INFORMATION": "history",
}

# A header: optional indentation, an upper-case label (letters, spaces, '/', '&', '-', '(' ')'),
# a colon, then possibly the body's first words on the same line.
_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z /&()\-]{1,48}[A-Z)])[ \t]*:[ \t]*(.*)$")
_LIST_ITEM = re.compile(r"^\s*(\(?\d{1,2}[.)]|[-*\u2022])\s")


@dataclass
class ReportSections:
    """The canonical sections of one report; ``None`` where the report has no such section."""

    findings: str | None = None
    impression: str | None = None
    indication: str | None = None
    comparison: str | None = None
    technique: str | None = None
    history: str | None = None
    preamble: str | None = None
    other: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> str | None:
        if name not in CANONICAL_SECTIONS:
            raise KeyError(f"unknown section {name!r}; valid: {', '.join(CANONICAL_SECTIONS)}")
        return getattr(self, name)


def normalise_body(text: str | None) -> str | None:
    """Join wrapped lines of a paragraph with spaces; keep paragraph breaks and list items on their
    own lines; collapse runs of spaces; ``None`` for an empty body."""
    if text is None:
        return None
    paragraphs: list[str] = []
    current: list[str] = []
    for raw in text.splitlines():
        line = " ".join(raw.split())
        if not line:
            if current:
                paragraphs.append(" ".join(current))
                current = []
            continue
        if _LIST_ITEM.match(raw) and current:
            paragraphs.append(" ".join(current))
            current = []
        current.append(line)
    if current:
        paragraphs.append(" ".join(current))
    body = "\n".join(paragraphs).strip()
    return body or None


def canonical_header(header: str) -> str | None:
    """The canonical section a header names, or ``None`` when it is not one of ours."""
    return HEADER_ALIASES.get(" ".join(header.upper().split()))


def parse_free_text(report: str) -> ReportSections:
    """Split a free-text report (MIMIC-CXR layout) into sections; see the module docstring.

    A repeated section (two "IMPRESSION:" headers) is concatenated in order of appearance."""
    chunks: list[tuple[str | None, list[str]]] = [(None, [])]
    for line in report.splitlines():
        match = _HEADER.match(line)
        if match:
            chunks.append((match.group(1), [match.group(2)] if match.group(2).strip() else []))
        else:
            chunks[-1][1].append(line)
    result = ReportSections()
    for header, lines in chunks:
        body = normalise_body("\n".join(lines))
        if header is None:
            result.preamble = body
            continue
        if body is None:
            continue
        name = canonical_header(header)
        if name is None or " AND " in header or "/" in header:
            result.other[" ".join(header.split())] = body
        if name is not None:
            previous = getattr(result, name)
            setattr(result, name, body if previous is None else f"{previous}\n{body}")
    return result


# Open-i AbstractText@Label values (IU X-Ray XML) -> canonical sections.
OPENI_LABELS: dict[str, str] = {
    "FINDINGS": "findings",
    "IMPRESSION": "impression",
    "INDICATION": "indication",
    "COMPARISON": "comparison",
}


def from_openi_fields(fields: Mapping[str, str | None]) -> ReportSections:
    """Sections from Open-i ``AbstractText`` fields keyed by their ``Label`` attribute."""
    result = ReportSections()
    for label, text in fields.items():
        name = OPENI_LABELS.get(label.upper())
        body = normalise_body(text)
        if name is not None:
            setattr(result, name, body)
        elif body is not None:
            result.other[label] = body
    return result


# CheXpert Plus report table columns -> canonical sections (section_* columns of the released CSV).
CHEXPERT_PLUS_COLUMNS: dict[str, str] = {
    "section_findings": "findings",
    "section_impression": "impression",
    "section_clinical_history": "indication",
    "section_history": "history",
    "section_comparison": "comparison",
    "section_technique": "technique",
}


def from_chexpert_plus(row: Mapping[str, str | None]) -> ReportSections:
    """Sections from one CheXpert Plus row; other non-empty ``section_*`` columns go to ``other``.
    Missing values (None, "", "nan") are ``None``."""
    result = ReportSections()
    for column, value in row.items():
        if not column.startswith("section_"):
            continue
        text = None if value is None or str(value).strip().lower() in ("", "nan") else str(value)
        body = normalise_body(text)
        name = CHEXPERT_PLUS_COLUMNS.get(column)
        if name is not None:
            setattr(result, name, body)
        elif body is not None:
            result.other[column.removeprefix("section_")] = body
    return result
