"""CheXpert observation labels for report texts: one interface, several backends.

A labeler maps each report to the 14 CheXpert observations (``text.observations.CHEXPERT_14``, in
CheXbert's order) with four classes, the CheXpert convention (Irvin et al., AAAI 2019):

    1 positive, 0 negative, -1 uncertain, None blank (not mentioned)

"No Finding" is 1 or None only. Backends (``LABELER_BACKENDS``):

- ``rules`` (``annotators/chexpert_rules.py``): an offline rule labeler in the design of the
  CheXpert labeler (mention / unmention phrases, negation and uncertainty scopes). Results from it
  are reported as ``chexpert-rules``, never as CheXbert.
- ``chexbert`` (``annotators/chexbert_model.py``): the published CheXbert model, loaded from the
  user's ``chexbert.pth``; heavy imports happen when it is built.

``build_labeler(name, **options)`` returns an object with ``label(texts) -> list[LabelVector]``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Protocol

from editgrpo.text.observations import CHEXPERT_14

POSITIVE, NEGATIVE, UNCERTAIN, BLANK = 1, 0, -1, None

LabelVector = dict[str, int | None]


class Labeler(Protocol):
    """Anything that labels a batch of reports; ``name`` is what result tables call it."""

    name: str

    def label(self, texts: Sequence[str]) -> list[LabelVector]: ...


# backend name -> (module, factory function). Imported when chosen.
LABELER_BACKENDS: dict[str, tuple[str, str]] = {
    "rules": ("editgrpo.annotators.chexpert_rules", "RuleLabeler"),
    "chexbert": ("editgrpo.annotators.chexbert_model", "CheXbertLabeler"),
}


def build_labeler(name: str = "rules", **options: object) -> Labeler:
    """The labeler backend ``name`` (see ``LABELER_BACKENDS``), built with ``options``."""
    if name not in LABELER_BACKENDS:
        raise ValueError(f"unknown labeler backend {name!r}; valid: {', '.join(LABELER_BACKENDS)}")
    module_name, factory = LABELER_BACKENDS[name]
    return getattr(importlib.import_module(module_name), factory)(**options)


def empty_vector() -> LabelVector:
    """All 14 observations blank, in CheXbert order."""
    return dict.fromkeys(CHEXPERT_14, BLANK)


def as_ordered_list(vector: LabelVector) -> list[int | None]:
    """The 14 values in CheXbert order (missing keys are blank)."""
    return [vector.get(name) for name in CHEXPERT_14]
