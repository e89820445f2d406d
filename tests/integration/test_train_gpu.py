"""EditGRPO on a CUDA device in bf16 (skipped without one: the ``gpu`` marker): the same tiny
model and SynthCXR as the CPU tests, sdpa attention, TRL's HF generation on the GPU."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl")

from editgrpo.config import load_config


@pytest.mark.gpu
def test_editgrpo_steps_in_bf16_on_a_gpu(tiny_model_dir: Path, tmp_path: Path) -> None:
    from editgrpo.data.synth import SynthConfig, write_synthcxr
    from editgrpo.training.trainer import run_train

    assert torch.cuda.is_available()
    write_synthcxr(tmp_path / "synth", SynthConfig(n=24, seed=5, image_size=64))
    config = load_config(
        None,
        [
            f"model.name_or_path={tiny_model_dir}",
            "model.dtype=bfloat16",
            "model.attn_implementation=sdpa",
            "model.min_pixels=3136",
            "model.max_pixels=3136",
            f"data.train={tmp_path / 'synth' / 'train.jsonl'}",
            f"output_dir={tmp_path / 'rl'}",
            "prompts_per_step=4",
            "rollout.group_size=4",
            "rollout.max_completion_length=32",
            "max_steps=2",
            "save_steps=100",
            "progress_bar=false",
        ],
        stage="rl",
    )
    result = run_train(config)
    steps = [entry for entry in result.log_history if "rewards/on_policy/total" in entry]
    assert len(steps) == 2
    assert all(math.isfinite(entry["loss"]) and math.isfinite(entry["kl"]) for entry in steps)
    assert max(entry["edits/edited_rows_frac"] for entry in steps) > 0
