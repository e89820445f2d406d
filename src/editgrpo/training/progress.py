"""A rich progress bar for RL training: step, on-policy reward, edit rate, step time.

Shown by the main process only; transformers' own tqdm bar is turned off when this one is on
(``GRPOConfig(disable_tqdm=True)``), so the terminal holds one bar.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback


class RichProgressCallback(TrainerCallback):
    """Advance a ``rich.progress`` bar per optimizer step and show the latest logged figures."""

    def __init__(self, description: str = "EditGRPO") -> None:
        self.description = description
        self.progress: Any = None
        self.task: Any = None
        self.latest: dict[str, float] = {}

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[figures]}"),
        )
        self.progress.start()
        self.task = self.progress.add_task(
            self.description, total=state.max_steps, completed=state.global_step, figures=""
        )

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if self.progress is None or not logs:
            return
        self.latest.update({k: v for k, v in logs.items() if isinstance(v, int | float)})
        parts = []
        for key, label in (
            ("rewards/on_policy/total", "reward"),
            ("rewards/edited/total", "edited"),
            ("edits/changed_rate", "edit rate"),
            ("kl", "kl"),
            ("step_time", "s/step"),
        ):
            if key in self.latest:
                parts.append(f"{label} {self.latest[key]:.3f}")
        self.progress.update(self.task, figures="  ".join(parts))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)
            self.progress.stop()
            self.progress = None
