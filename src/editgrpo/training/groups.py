"""Group composition of an EditGRPO step (EDITGRPO.md section 2, ``edit.generation``): which rows of a
rollout batch are sampled, which are edit sources, where the edited copies go.

A local rollout batch has ``num_groups * G`` rows, each group's G rows contiguous and sharing one
prompt (TRL's ``RepeatSampler`` layout). With k edited copies per group:

- ``fill`` (default): rows ``0..G-k-1`` of a group are sampled; rows ``G-k..G-1`` are edit slots.
  Each slot takes an edit of its own source, a distinct sampled row drawn uniformly without
  replacement. A slot whose edit changed nothing gets a fresh sample instead (a *top-up*), so every
  slot is a real edit or a real sample and no generated text is discarded.
- ``overwrite`` (the authors' release): all G rows are sampled; k distinct sources and k distinct
  targets among the other rows are drawn; a target's sample is replaced by the edit of its source
  (and kept when the edit changed nothing): G samples per group are generated and up to k of them
  are discarded.

Pure: a seeded ``numpy.random.Generator`` makes every draw, so one seed gives one layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GENERATION_MODES: tuple[str, ...] = ("fill", "overwrite")


@dataclass(frozen=True)
class GroupLayout:
    """Row indices (into the local batch) of one step's composition.

    ``sampled``: rows generated in the first generation call, in order (group-contiguous, the same
    count per group, which vLLM's server mode requires: it takes every n-th prompt).
    ``edits``: ``(source_row, slot_row)`` pairs: the slot receives the edit of the source."""

    mode: str
    group_size: int
    num_edits: int
    sampled: tuple[int, ...]
    edits: tuple[tuple[int, int], ...]

    @property
    def samples_per_group(self) -> int:
        """Rows per group in the first generation call: G - k (fill) or G (overwrite)."""
        return self.group_size - self.num_edits if self.mode == "fill" else self.group_size


def compose_groups(
    num_groups: int, group_size: int, num_edits: int, mode: str, rng: np.random.Generator
) -> GroupLayout:
    """The layout of ``num_groups`` groups of ``group_size`` rows with ``num_edits`` edited copies
    each (module docstring). Sources are drawn per group with ``rng.choice(..., replace=False)``."""
    if mode not in GENERATION_MODES:
        raise ValueError(f"unknown edit.generation {mode!r}; valid: {', '.join(GENERATION_MODES)}")
    if num_groups < 0 or group_size < 1:
        raise ValueError(f"need num_groups >= 0 and group_size >= 1, got {num_groups}, {group_size}")
    if not 0 <= 2 * num_edits <= group_size:
        raise ValueError(
            f"num_edits = {num_edits} must be in [0, group_size // 2 = {group_size // 2}]: "
            "each edited copy needs its own on-policy source"
        )
    sampled: list[int] = []
    edits: list[tuple[int, int]] = []
    for g in range(num_groups):
        base = g * group_size
        if mode == "fill":
            members = group_size - num_edits
            sampled.extend(base + i for i in range(members))
            sources = rng.choice(members, size=num_edits, replace=False) if num_edits else []
            edits.extend((base + int(s), base + members + j) for j, s in enumerate(sources))
        else:
            sampled.extend(base + i for i in range(group_size))
            if num_edits:
                sources = rng.choice(group_size, size=num_edits, replace=False)
                rest = np.setdiff1d(np.arange(group_size), sources)  # sorted, the non-sources
                targets = rng.choice(rest, size=num_edits, replace=False)
                edits.extend((base + int(s), base + int(t)) for s, t in zip(sources, targets, strict=True))
    return GroupLayout(mode, group_size, num_edits, tuple(sampled), tuple(edits))
