"""The recipe's ``trl:`` mapping, passed verbatim to TRL's ``SFTConfig`` / ``GRPOConfig``.

editgrpo builds those argument objects itself from the recipe (batch sizes from
``prompts_per_step``, the optimizer from ``optim``, generation from ``rollout``...). Any other TRL
or transformers argument (``run_name``, ``push_to_hub``, ``hub_model_id``, ``log_completions``,
``dataloader_num_workers``, ``torch_compile``...) goes through ``trl:`` unchanged. A key is refused,
with all others at once, when it is not a field of the TRL class (with the closest field named) or
when editgrpo manages it (with the recipe key to set instead), so the recipe stays the one place a
managed value comes from.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any

from editgrpo.errors import UserError

# TRL argument -> the recipe key that sets it (shown when a `trl:` key collides with one).
RECIPE_KEYS: dict[str, str] = {
    "output_dir": "output_dir",
    "seed": "seed",
    "data_seed": "seed",
    "per_device_train_batch_size": "per_device_batch_size",
    "per_device_eval_batch_size": "per_device_batch_size",
    "gradient_accumulation_steps": "prompts_per_step / per_device_batch_size (RL), gradient_accumulation_steps (SFT)",
    "num_generations": "rollout.group_size",
    "max_completion_length": "rollout.max_completion_length",
    "temperature": "rollout.temperature",
    "top_p": "rollout.top_p",
    "learning_rate": "optim.learning_rate",
    "weight_decay": "optim.weight_decay",
    "lr_scheduler_type": "optim.lr_scheduler",
    "warmup_steps": "optim.warmup_ratio",
    "max_grad_norm": "optim.max_grad_norm",
    "max_steps": "max_steps",
    "num_train_epochs": "num_epochs",
    "logging_steps": "logging_steps",
    "save_steps": "save_steps",
    "save_strategy": "save_steps / save_each_epoch",
    "save_total_limit": "save_total_limit",
    "beta": "loss.kl_beta",
    "epsilon": "loss.clip_eps_low",
    "epsilon_high": "loss.clip_eps_high",
    "loss_type": "loss.aggregation",
    "scale_rewards": "loss.advantage_scale",
    "use_vllm": "rollout.engine",
    "vllm_mode": "rollout.engine",
    "vllm_server_base_url": "rollout.vllm_server_url",
    "vllm_gpu_memory_utilization": "rollout.vllm_gpu_memory_utilization",
    "vllm_importance_sampling_correction": "rollout.vllm_importance_sampling",
    "gradient_checkpointing": "gradient_checkpointing",
    "use_cpu": "use_cpu",
    "bf16": "model.dtype",
    "fp16": "model.dtype",
    "report_to": "report_to",
    "disable_tqdm": "progress_bar",
    "max_length": "max_length",
    "eval_strategy": "data.eval and eval_steps",
    "eval_steps": "eval_steps",
}


def trl_arguments(config_class: type, managed: Mapping[str, Any], passthrough: Mapping[str, Any]) -> Any:
    """``config_class(**managed, **passthrough)`` after checking ``passthrough`` (module docstring);
    a bad key raises ``UserError`` naming it and the fix."""
    fields = {f.name for f in dataclasses.fields(config_class) if f.init}
    problems = []
    for key in passthrough:
        if key in managed:
            where = RECIPE_KEYS.get(key)
            fix = f"set {where} in the recipe instead" if where else "remove it (editgrpo derives it)"
            problems.append(f"trl.{key}: managed by editgrpo. Fix: {fix}")
        elif key not in fields:
            close = difflib.get_close_matches(str(key), sorted(fields), n=1)
            hint = (
                f"did you mean trl.{close[0]}?" if close else f"see the fields of trl.{config_class.__name__}"
            )
            problems.append(f"trl.{key}: not an argument of trl.{config_class.__name__}. Fix: {hint}")
    if problems:
        managed_list = ", ".join(sorted(managed))
        raise UserError(
            f"{len(problems)} problem(s) in the recipe's trl: section:\n  - "
            + "\n  - ".join(problems)
            + f"\n(editgrpo sets these {config_class.__name__} fields itself: {managed_list})"
        )
    return config_class(**dict(managed), **dict(passthrough))
