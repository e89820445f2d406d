"""Shared fixtures: tiny real components built offline, once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`gpu` tests run only where CUDA is available (CI has none)."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved ``xs`` tiny Qwen2.5-VL (random weights, offline tokenizer)."""
    from editgrpo.models.tiny import save_tiny_model

    out = tmp_path_factory.mktemp("tiny-xs")
    save_tiny_model(out, size="xs", seed=0)
    return out


@pytest.fixture(scope="session")
def xray_images() -> list:
    """Three small grayscale chest-film drawings of different sizes (frontal, lateral, prior)."""
    from editgrpo.demo import placeholder_radiograph

    frontal = placeholder_radiograph("PA", size=112, seed=1)
    lateral = placeholder_radiograph("lateral", size=96, seed=2).resize((80, 120))
    prior = placeholder_radiograph("PA", size=140, seed=3)
    return [frontal, lateral, prior]
