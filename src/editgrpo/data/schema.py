"""The study record every dataset adapter produces and every stage consumes.

A ``Study`` is one imaging study: its images (with view), the report sections as text, the
patient's prior study when the dataset has one, and, for SynthCXR, its ground-truth labels.
Records are plain frozen dataclasses with ``to_dict`` / ``from_dict`` for the JSONL manifest
(``data/manifest.py``).

Conventions:
- ``split`` is one of ``SPLITS`` (MIMIC-CXR's "validate" name is kept for the validation split).
- ``view`` is one of ``VIEWS``; adapters map dataset spellings with ``canonical_view``.
- dates are ISO 8601 (``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM:SS``); ``None`` when unknown.
- image paths are relative to the manifest's directory, or absolute.
- the prior's report is kept for analysis but prompts leave it out by default (the paper gives
  prior *images* only, EDITGRPO.md section 5).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, field
from typing import Any

SPLITS: tuple[str, ...] = ("train", "validate", "test")
VIEWS: tuple[str, ...] = ("PA", "AP", "LATERAL", "OTHER", "UNKNOWN")

# Dataset spellings -> canonical view, keyed as ``canonical_view`` normalises them (upper case,
# "_" as a space). MIMIC-CXR ViewPosition (PA, AP, LATERAL, LL, AP AXIAL ...), CheXpert Plus
# frontal_lateral/ap_pa, Open-i; ReXGradient-160K ImageViewPosition (POSTERO_ANTERIOR,
# ANTERO_POSTERIOR, N/A); PadChest Projection (L; AP_horizontal, AP supine as torchxrayvision's
# PadChest loader reads it) and ViewPosition_DICOM (POSTEROANTERIOR ...).
_VIEW_ALIASES: dict[str, str] = {
    "PA": "PA",
    "POSTEROANTERIOR": "PA",
    "POSTERO ANTERIOR": "PA",  # ReXGradient
    "AP": "AP",
    "ANTEROPOSTERIOR": "AP",
    "ANTERO POSTERIOR": "AP",  # ReXGradient
    "AP SUPINE": "AP",
    "AP UPRIGHT": "AP",
    "AP HORIZONTAL": "AP",  # PadChest
    "LATERAL": "LATERAL",
    "LAT": "LATERAL",
    "L": "LATERAL",  # PadChest
    "LL": "LATERAL",
    "RL": "LATERAL",
    "LEFT LATERAL": "LATERAL",
    "RIGHT LATERAL": "LATERAL",
    "FRONTAL": "OTHER",
    "": "UNKNOWN",
    "UNKNOWN": "UNKNOWN",
    "N/A": "UNKNOWN",  # ReXGradient
    # Empty cells as pandas (NaN) and JSON (null) spell them, e.g. a ReXGradient NaN view.
    "NAN": "UNKNOWN",
    "NULL": "UNKNOWN",
}


def canonical_view(raw: str | None) -> str:
    """Map a dataset's view spelling to ``VIEWS`` (unknown spellings -> OTHER, missing -> UNKNOWN)."""
    if raw is None:
        return "UNKNOWN"
    key = " ".join(str(raw).replace("_", " ").upper().split())
    return _VIEW_ALIASES.get(key, "OTHER")


def parse_iso_date(value: str) -> str:
    """Validate an ISO date or datetime string and return it unchanged; raise ``ValueError``."""
    if "T" in value:
        _dt.datetime.fromisoformat(value)
    else:
        _dt.date.fromisoformat(value)
    return value


@dataclass(frozen=True)
class Image:
    path: str
    view: str = "UNKNOWN"
    image_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Prior:
    """The patient's previous study: images always, its report for analysis only."""

    study_id: str
    images: tuple[Image, ...] = ()
    date: str | None = None
    findings: str | None = None
    impression: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "study_id": self.study_id,
            "images": [i.to_dict() for i in self.images],
            "date": self.date,
            "findings": self.findings,
            "impression": self.impression,
        }


@dataclass(frozen=True)
class Study:
    study_id: str
    dataset: str
    split: str
    images: tuple[Image, ...] = ()
    patient_id: str | None = None
    date: str | None = None
    indication: str | None = None
    comparison: str | None = None
    technique: str | None = None
    history: str | None = None
    findings: str | None = None
    impression: str | None = None
    prior: Prior | None = None
    # CheXpert observation -> 1 (positive), 0 (negative), -1 (uncertain); absent = not mentioned.
    labels: dict[str, int] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> str | None:
        """The target text for ``DataConfig.target_section`` (findings, impression or both)."""
        if name == "findings_impression":
            parts = [p for p in (self.findings, self.impression) if p]
            return "\n".join(parts) or None
        if name not in ("findings", "impression"):
            raise ValueError(
                f"unknown target section {name!r}; valid: findings, impression, findings_impression"
            )
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["images"] = [i.to_dict() for i in self.images]
        out["prior"] = self.prior.to_dict() if self.prior is not None else None
        return out
