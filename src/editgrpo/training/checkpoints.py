"""Crash-safe checkpoints: a checkpoint counts only once it is complete.

transformers' ``Trainer._save_checkpoint`` writes ``checkpoint-N/`` file by file (model, optimizer,
scheduler, RNG states, trainer state), and ``get_last_checkpoint`` picks the highest N whether or
not its writing finished: a process killed mid-save leaves a directory that would be resumed from
and fail (or, worse, load a torn optimizer state). Here a checkpoint is *complete* when it holds
``COMPLETE_MARKER``, written last, atomically (temporary file, fsync, ``os.replace``), after every
process finished writing its part. Resuming takes the newest complete checkpoint; rotation deletes
only after a newer checkpoint is complete, so there is always one to resume from.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

COMPLETE_MARKER = "editgrpo_complete.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_step(path: str | Path) -> int | None:
    """N of a ``checkpoint-N`` directory name, else None."""
    match = _CHECKPOINT.match(Path(path).name)
    return int(match.group(1)) if match else None


def mark_complete(checkpoint: str | Path, global_step: int) -> Path:
    """Write the completion marker of ``checkpoint`` atomically; returns its path."""
    directory = Path(checkpoint)
    marker = directory / COMPLETE_MARKER
    temporary = directory / (COMPLETE_MARKER + ".tmp")
    with open(temporary, "w") as handle:
        json.dump({"global_step": global_step}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, marker)
    # The rename itself is durable only once the directory entry is on disk.
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return marker


def is_complete(checkpoint: str | Path) -> bool:
    """Whether ``checkpoint`` holds a readable completion marker."""
    try:
        with open(Path(checkpoint) / COMPLETE_MARKER) as handle:
            return isinstance(json.load(handle).get("global_step"), int)
    except (OSError, ValueError, AttributeError):
        return False


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path, bool]]:
    """``(step, path, complete)`` of every ``checkpoint-N`` directory, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        step = checkpoint_step(path)
        if step is not None and path.is_dir():
            found.append((step, path, is_complete(path)))
    return sorted(found)


def last_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of ``output_dir`` (None if there is none)."""
    complete = [path for _, path, done in list_checkpoints(output_dir) if done]
    return complete[-1] if complete else None


def rotate_checkpoints(output_dir: str | Path, keep: int | None) -> list[Path]:
    """Delete complete checkpoints beyond the newest ``keep`` (None keeps all) and incomplete ones
    older than the newest complete checkpoint (left by a crash; never resumable). Returns the
    deleted paths. Incomplete checkpoints newer than the newest complete one are left alone: another
    process may still be writing them."""
    checkpoints = list_checkpoints(output_dir)
    complete = [(step, path) for step, path, done in checkpoints if done]
    if not complete:
        return []
    newest = complete[-1][0]
    doomed = [path for step, path, done in checkpoints if not done and step < newest]
    if keep is not None and keep > 0:
        doomed += [path for _, path in complete[:-keep]]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed
