"""Dataset adapters: CLI name -> module with ``prepare(root, *, log, progress=None, **options) -> list[Study]``
(the contract: ``adapters/base.py``).

Modules are imported when chosen, so ``editgrpo prepare --help`` needs none of them."""

from __future__ import annotations

import importlib
from collections.abc import Callable

ADAPTERS: dict[str, str] = {
    "mimic-cxr": "editgrpo.data.adapters.mimic_cxr",
    "chexpert-plus": "editgrpo.data.adapters.chexpert_plus",
    "iu-xray": "editgrpo.data.adapters.iu_xray",
    "rexgradient": "editgrpo.data.adapters.rexgradient",
    "padchest-gr": "editgrpo.data.adapters.padchest_gr",
}


def get_adapter(name: str) -> Callable[..., list]:
    """The ``prepare`` function of a dataset adapter; unknown names list the valid ones."""
    if name not in ADAPTERS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(ADAPTERS)}")
    return importlib.import_module(ADAPTERS[name]).prepare
