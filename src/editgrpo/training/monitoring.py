"""What the RL log shows beyond rewards: collapse figures, vLLM importance-sampling masks, and the
rows of ``completions.jsonl`` (what the policy wrote next to its edits). Pure: lists and tensors in,
numbers and JSON-ready dicts out; the trainer gathers and writes them.

Shapes: B rows of one process's rollout batch (whole groups of G, contiguous), T completion tokens.

Collapse figures, for on-policy rows (samples and top-ups) and edited rows apart (an edited copy is
built from the reference, so mixing the two would hide what the policy itself writes):

- ``empty_rate``: completions that are empty (the reward's emptiness test when it has one, else
  whitespace only);
- ``length_tokens``: mean completion length in tokens (the completion mask);
- ``duplicate_rate``: completions whose text (whitespace-normalised) equals another completion of
  their group, whatever its kind: a group of identical texts has no spread, so no signal;
- ``repeated_sentence_rate``: completions with a sentence stated twice (case- and
  whitespace-normalised), the "There. There. There." failure of degenerate sampling.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import torch

from editgrpo.text.sentences import has_repeated_sentence

ROW_KINDS: tuple[str, ...] = ("on_policy", "edited")
COLLAPSE_FIGURES: tuple[str, ...] = (
    "empty_rate",
    "length_tokens",
    "duplicate_rate",
    "repeated_sentence_rate",
)


def _normalised(text: str) -> str:
    return " ".join(text.split())


def collapse_stats(
    texts: Sequence[str],
    lengths: Sequence[int],
    edited: Sequence[bool],
    group_size: int,
    is_empty: Callable[[str], bool] | None = None,
) -> dict[str, list[float]]:
    """Per-row values of each collapse figure, keyed ``collapse/<on_policy|edited>/<figure>`` (every
    key present, possibly with an empty list, so all processes log the same names); the mean of a
    list is the figure. Rows are whole groups of ``group_size``, contiguous."""
    if not len(texts) == len(lengths) == len(edited):
        raise ValueError(f"{len(texts)} texts, {len(lengths)} lengths and {len(edited)} edited flags")
    if group_size < 1 or len(texts) % group_size:
        raise ValueError(f"{len(texts)} rows are not whole groups of {group_size}")
    empty = is_empty or (lambda text: not text.strip())
    out: dict[str, list[float]] = {f"collapse/{k}/{f}": [] for k in ROW_KINDS for f in COLLAPSE_FIGURES}
    for start in range(0, len(texts), group_size):
        normalised = [_normalised(t) for t in texts[start : start + group_size]]
        counts = Counter(normalised)
        for offset, text in enumerate(normalised):
            row = start + offset
            kind = "edited" if edited[row] else "on_policy"
            out[f"collapse/{kind}/empty_rate"].append(float(empty(texts[row])))
            out[f"collapse/{kind}/length_tokens"].append(float(lengths[row]))
            out[f"collapse/{kind}/duplicate_rate"].append(float(counts[text] > 1))
            out[f"collapse/{kind}/repeated_sentence_rate"].append(float(has_repeated_sentence(text)))
    return out


def importance_sampling_stats(
    weights: torch.Tensor, completion_mask: torch.Tensor, sampled: torch.Tensor
) -> dict[str, list[float]]:
    """How much of the policy's own samples TRL's vLLM correction masks out (weight 0).

    Args:
        weights: (B, T) per-token or (B, 1) per-sequence weights pi_train / pi_sampler as TRL's
            ``importance_sampling_ratio`` holds them (0 where a ``*_mask`` mode masked).
        completion_mask: (B, T) real completion tokens.
        sampled: (B,) bool, rows the policy sampled (edited copies have no sampler log-probs, so
            TRL gives their tokens weight exactly 1; they are left out here).

    Returns ``vllm_is/masked_rows_frac`` (one value per sampled row: 1 when every completion token
    of the row has weight 0) and ``vllm_is/masked_tokens_frac`` (one pooled ratio: masked sampled
    tokens over sampled tokens)."""
    mask = completion_mask.bool()  # (B, T)
    full = weights.expand_as(mask) if weights.shape[-1] == 1 else weights  # (B, 1) -> (B, T)
    masked = (full == 0) & mask  # (B, T)
    rows = sampled.bool() & mask.any(dim=1)  # (B,)
    per_row = [float(masked[r].sum() == mask[r].sum()) for r in torch.nonzero(rows).flatten().tolist()]
    tokens = mask[rows].sum()
    return {
        "vllm_is/masked_rows_frac": per_row,
        "vllm_is/masked_tokens_frac": [float(masked[rows].sum()) / float(tokens)] if tokens > 0 else [],
    }


def completion_log_rows(
    *,
    step: int,
    process: int,
    study_ids: Sequence[Any],
    references: Sequence[str],
    texts: Sequence[str],
    lengths: Sequence[int],
    records: Sequence[Any],
    results: Sequence[Any] | None,
    group_size: int,
) -> list[dict[str, Any]]:
    """One JSON-ready row per group of the batch: ``step``, ``process``, ``study_id``,
    ``reference`` and ``completions``, each with its ``index`` in the group, ``kind`` (``sample``,
    ``topup``, ``edit``), ``text``, ``tokens``, ``reward`` and ``components`` (None when unscored);
    an edited copy adds ``source`` (the index of its source in the group), ``ops`` and ``inserted``
    (the character spans of ``text`` copied from the reference). ``records`` are the trainer's
    ``RolloutRecord`` objects (kind, source row, ops, spans)."""
    out = []
    for start in range(0, len(texts), group_size):
        completions = []
        for offset in range(group_size):
            row = start + offset
            record = records[row]
            result = results[row] if results is not None and row < len(results) else None
            item: dict[str, Any] = {
                "index": offset,
                "kind": record.kind,
                "text": texts[row],
                "tokens": int(lengths[row]),
                "reward": None if result is None else result.total,
                "components": None if result is None else dict(result.components),
            }
            if record.kind == "edit":
                item["source"] = int(record.source) - start
                item["ops"] = list(record.ops)
                item["inserted"] = [[s, e] for s, e, source in record.spans if source == "reference"]
            completions.append(item)
        out.append(
            {
                "step": step,
                "process": process,
                "study_id": study_ids[start],
                "reference": references[start],
                "completions": completions,
            }
        )
    return out


def completions_table(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """``completions.jsonl`` rows flattened to one table row per completion (columns, rows), for a
    W&B table or a TensorBoard text summary."""
    columns = ["step", "study_id", "index", "kind", "source", "reward", "text", "reference"]
    table = [
        [
            row["step"],
            row["study_id"],
            item["index"],
            item["kind"],
            item.get("source"),
            item["reward"],
            item["text"],
            row["reference"],
        ]
        for row in rows
        for item in row["completions"]
    ]
    return columns, table


def markdown_table(columns: Sequence[str], table: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (TensorBoard renders text summaries as Markdown); pipes in cells are
    escaped and every run of whitespace (line breaks of any kind included) becomes one space."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            value = f"{value:.4f}"
        return "" if value is None else " ".join(str(value).split()).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table]
    return "\n".join(lines)
