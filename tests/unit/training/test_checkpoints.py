"""Checkpoint completion markers and rotation (training/checkpoints.py)."""

from __future__ import annotations

from pathlib import Path

from editgrpo.training.checkpoints import (
    COMPLETE_MARKER,
    is_complete,
    last_complete_checkpoint,
    list_checkpoints,
    mark_complete,
    rotate_checkpoints,
)


def _checkpoint(root: Path, step: int, complete: bool) -> Path:
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"weights")
    if complete:
        mark_complete(path, step)
    return path


def test_only_marked_checkpoints_are_resumed_from(tmp_path: Path) -> None:
    _checkpoint(tmp_path, 2, True)
    _checkpoint(tmp_path, 4, True)
    _checkpoint(tmp_path, 6, False)  # killed while saving
    (tmp_path / "checkpoint-notes").mkdir()  # not a checkpoint name
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
    assert [(s, done) for s, _, done in list_checkpoints(tmp_path)] == [(2, True), (4, True), (6, False)]
    assert last_complete_checkpoint(tmp_path / "missing") is None


def test_a_torn_marker_is_not_complete(tmp_path: Path) -> None:
    path = _checkpoint(tmp_path, 3, False)
    (path / COMPLETE_MARKER).write_text('{"global_st')
    assert not is_complete(path)
    mark_complete(path, 3)
    assert is_complete(path) and not (path / (COMPLETE_MARKER + ".tmp")).exists()


def test_rotation_keeps_the_newest_complete_and_removes_stale_partials(tmp_path: Path) -> None:
    for step, done in ((1, True), (2, False), (3, True), (4, True), (5, False)):
        _checkpoint(tmp_path, step, done)
    deleted = rotate_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in deleted) == ["checkpoint-1", "checkpoint-2"]
    # checkpoint-5 may still be being written by another process: left alone.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-3", "checkpoint-4", "checkpoint-5"]
    assert rotate_checkpoints(tmp_path, keep=None) == []
