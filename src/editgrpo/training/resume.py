"""Crash-safe checkpoints and correct resume for any transformers ``Trainer`` (SFT and RL).

``SafeCheckpointsMixin`` goes before the trainer class (``class T(SafeCheckpointsMixin, SFTTrainer)``):

- ``_save_checkpoint``: after transformers wrote ``checkpoint-N/`` and every process finished its
  part (ZeRO-3 shards), the completion marker is written (``training.checkpoints``) and complete
  checkpoints beyond ``keep_checkpoints`` are rotated out; pass ``save_total_limit=None`` to the
  trainer's arguments so transformers' own rotation (which ignores completeness) stays off;
- ``_load_from_checkpoint``: transformers 5 saves Qwen2.5-VL in its published key layout
  ("visual.*", "model.layers.*") but ``Trainer._load_from_checkpoint`` loads the file with a plain,
  non-strict ``load_state_dict`` in the in-memory layout ("model.visual.*",
  "model.language_model.*"): every key misses, a warning is logged and training silently resumes
  from the initial weights. ``from_pretrained`` applies the key conversion and the strict copy fails
  loudly on any real mismatch. DeepSpeed / FSDP checkpoints (their own formats) and PEFT adapters
  (adapter files, no key conversion) go through transformers' loader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from editgrpo.training.checkpoints import mark_complete, rotate_checkpoints


class SafeCheckpointsMixin:
    """Completion-marked checkpoints and a key-converting resume (module docstring)."""

    keep_checkpoints: int | None = None

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        super()._save_checkpoint(model, trial)  # type: ignore[misc]
        self.accelerator.wait_for_everyone()  # type: ignore[attr-defined]
        if self.args.should_save:  # type: ignore[attr-defined]
            run_dir = Path(self._get_output_dir(trial=trial))  # type: ignore[attr-defined]
            step = self.state.global_step  # type: ignore[attr-defined]
            mark_complete(run_dir / f"checkpoint-{step}", step)
            rotate_checkpoints(run_dir, self.keep_checkpoints)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        target = self.accelerator.unwrap_model(model if model is not None else self.model)  # type: ignore[attr-defined]
        adapters = (Path(resume_from_checkpoint) / "adapter_config.json").is_file()
        if self.is_deepspeed_enabled or self.is_fsdp_enabled or adapters:  # type: ignore[attr-defined]
            return super()._load_from_checkpoint(resume_from_checkpoint, model)  # type: ignore[misc]
        dtype = next(target.parameters()).dtype
        loaded = type(target).from_pretrained(resume_from_checkpoint, dtype=dtype)
        target.load_state_dict(loaded.state_dict(), strict=True)
        del loaded
        return None
