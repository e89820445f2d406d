"""fp32 master weights unless DeepSpeed keeps them (training/precision.py)."""

from __future__ import annotations

import pytest
import torch

from editgrpo.training.precision import deepspeed_launch, trainable_dtype


def test_half_precision_recipes_train_fp32_weights_without_deepspeed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    assert not deepspeed_launch()
    assert trainable_dtype("bfloat16") == trainable_dtype("float16") == "float32"
    assert trainable_dtype("float32") == "float32" and trainable_dtype("auto") == "auto"
    # accelerate launch with a DeepSpeed config sets this for every process it starts.
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    assert deepspeed_launch() and trainable_dtype("bfloat16") == "bfloat16"
    assert trainable_dtype("bfloat16", deepspeed=False) == "float32"


def test_why_bf16_weights_lose_the_papers_updates() -> None:
    # The reason for the rule, measured: lr 1e-6 Adam steps (about lr per weight) on bf16 weights of
    # typical size leave nearly all of them unchanged; fp32 weights keep every one.
    weights = torch.linspace(0.01, 0.1, 1000)
    update = torch.full_like(weights, 1e-6)
    bf16 = weights.to(torch.bfloat16)
    moved_bf16 = ((bf16 - update.to(torch.bfloat16)) != bf16).float().mean().item()
    moved_fp32 = ((weights - update) != weights).float().mean().item()
    assert moved_bf16 < 0.01 and moved_fp32 == 1.0
