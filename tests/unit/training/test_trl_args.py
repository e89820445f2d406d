"""The recipe's `trl:` mapping reaches TRL's argument classes; bad and managed keys are refused."""

from __future__ import annotations

import pytest

pytest.importorskip("trl")

from editgrpo.config import load_config
from editgrpo.errors import UserError


def _rl(tmp_path, *overrides: str):
    return load_config(
        None, [f"output_dir={tmp_path}", "use_cpu=true", "model.dtype=float32", *overrides], stage="rl"
    )


def test_rl_trl_keys_reach_grpo_config(tmp_path) -> None:
    from editgrpo.training.trainer import grpo_arguments

    config = _rl(
        tmp_path,
        "prompts_per_step=2",
        "rollout.group_size=4",
        "trl.run_name=my-run",
        "trl.log_completions=true",
    )
    args = grpo_arguments(config, 1)
    assert args.run_name == "my-run" and args.log_completions is True
    # What editgrpo manages is still the recipe's.
    assert args.per_device_train_batch_size == 8 and args.num_generations == 4


def test_unknown_and_managed_trl_keys_are_refused_together(tmp_path) -> None:
    from editgrpo.training.trainer import grpo_arguments

    config = _rl(tmp_path, "trl.run_nme=x", "trl.learning_rate=0.1", "trl.zzz=1")
    with pytest.raises(UserError) as err:
        grpo_arguments(config, 1)
    message = str(err.value)
    assert message.startswith("3 problem(s) in the recipe's trl: section:")
    assert "trl.run_nme: not an argument of trl.GRPOConfig. Fix: did you mean trl.run_name?" in message
    assert (
        "trl.learning_rate: managed by editgrpo. Fix: set optim.learning_rate in the recipe instead"
        in message
    )
    assert "trl.zzz: not an argument of trl.GRPOConfig. Fix: see the fields of trl.GRPOConfig" in message
    assert "editgrpo sets these GRPOConfig fields itself:" in message and "num_generations" in message


def test_sft_trl_keys_reach_sft_config(tmp_path) -> None:
    from editgrpo.training.sft import _training_arguments

    config = load_config(
        None,
        [f"output_dir={tmp_path}", "use_cpu=true", "model.dtype=float32", "trl.run_name=sft-run"],
        stage="sft",
    )
    assert _training_arguments(config, has_eval=False).run_name == "sft-run"
    config = load_config(
        None,
        [f"output_dir={tmp_path}", "use_cpu=true", "model.dtype=float32", "trl.max_length=9"],
        stage="sft",
    )
    with pytest.raises(
        UserError, match=r"trl.max_length: managed by editgrpo. Fix: set max_length in the recipe"
    ):
        _training_arguments(config, has_eval=False)
