"""Figures of the demo's report: training-reward curves of RL runs (one colour per method, a thin
line per seed and a bold moving average of the seeds' mean) and per-finding recall / F1 of a scored
predictions file.

The curve is the on-policy reward (``rewards/on_policy/total`` in the trainer's log history): edited
copies are scored and logged apart (``rewards/edited/*``) and left out here, so both methods are
compared on what the policy itself wrote (the paper's Figure 3 plots the same quantity).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from editgrpo.text.observations import CHEXPERT_14

ON_POLICY_REWARD = "rewards/on_policy/total"


def reward_series(
    log_history: Sequence[Mapping[str, object]], key: str = ON_POLICY_REWARD
) -> list[tuple[int, float]]:
    """(step, value) of every log entry holding ``key``, in log order."""
    out = []
    for entry in log_history:
        value = entry.get(key)
        if isinstance(value, int | float) and "step" in entry:
            out.append((int(entry["step"]), float(value)))  # type: ignore[arg-type]
    return out


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` values (the first points average what exists so far)."""
    array = np.asarray(values, dtype=float)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    cumulative = np.concatenate([[0.0], np.cumsum(array)])
    idx = np.arange(1, len(array) + 1)
    start = np.maximum(idx - window, 0)
    return (cumulative[idx] - cumulative[start]) / (idx - start)


def plot_reward_curves(
    runs: Mapping[str, Sequence[Sequence[tuple[int, float]]]],
    out_png: str | Path,
    *,
    title: str = "On-policy training reward",
    ylabel: str = "reward (on-policy rollouts only)",
    window: int = 5,
) -> Path:
    """Write a PNG: for each method (``runs[name]`` = one (step, reward) series per seed) thin
    per-seed lines and the moving average (``window`` steps) of the mean over seeds."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, series) in enumerate(runs.items()):
        colour = colours[i % len(colours)]
        series = [s for s in series if s]
        if not series:
            continue
        for seed_series in series:
            steps, values = zip(*seed_series, strict=True)
            ax.plot(steps, values, color=colour, alpha=0.25, linewidth=0.8)
        length = min(len(s) for s in series)
        steps = [step for step, _ in series[0][:length]]
        mean = np.mean([[v for _, v in s[:length]] for s in series], axis=0)
        label = f"{name} (mean of {len(series)} seed{'s' if len(series) > 1 else ''}, {window}-step average)"
        ax.plot(steps, moving_average(mean, window), color=colour, linewidth=2.2, label=label)
    ax.set_xlabel("RL step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return out


def per_finding(per_sample: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float | int | None]]:
    """Observation -> positives in the references, recall, precision, F1 (positive = 1, the
    chexpert-rules labels of ``evaluate``'s per-study records), for observations with a positive."""
    out: dict[str, dict[str, float | int | None]] = {}
    rows = [r["labels"] for r in per_sample if r.get("labels") and r["labels"]["prediction"] is not None]
    for i, name in enumerate(CHEXPERT_14):
        tp = sum(1 for r in rows if r["prediction"][i] == 1 and r["reference"][i] == 1)
        fp = sum(1 for r in rows if r["prediction"][i] == 1 and r["reference"][i] != 1)
        fn = sum(1 for r in rows if r["prediction"][i] != 1 and r["reference"][i] == 1)
        if tp + fn == 0:
            continue
        recall = tp / (tp + fn)
        precision = tp / (tp + fp) if tp + fp else None
        f1 = 2 * tp / (2 * tp + fp + fn)
        out[name] = {"positives": tp + fn, "recall": recall, "precision": precision, "f1": f1}
    return out
