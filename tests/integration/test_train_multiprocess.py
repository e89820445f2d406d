"""EditGRPO over two processes on CPU: ``torchrun --nproc_per_node 2`` (gloo), the tiny model.

- every process holds whole groups of its own studies, and the step's completions are split
  evenly (read back from ``completions.jsonl``, which the main process writes from every rank);
- a ``prompts_per_step`` the world size does not divide is refused (exit 2 and the fix);
- kill -9 of both processes after a checkpoint, then ``--resume``: the same parameters as the
  uninterrupted two-process run.

``accelerate launch --cpu --num_processes 2`` starts a single process on CPU; ``torchrun`` is the
CPU launcher that works (README, multi-GPU section).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("trl")

from editgrpo.training.checkpoints import COMPLETE_MARKER, last_complete_checkpoint
from editgrpo.training.trainer import COMPLETIONS_LOG

GROUP = 4


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from editgrpo.data.synth import SynthConfig, write_synthcxr

    out = tmp_path_factory.mktemp("synth")
    write_synthcxr(out, SynthConfig(n=24, seed=5, image_size=64))
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _command(recipe: Path, overrides: list[str], *flags: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "editgrpo",
        "train",
        str(recipe),
        *overrides,
        *flags,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _overrides(model: Path, synth_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        f"model.name_or_path={model}",
        "model.dtype=float32",
        "model.attn_implementation=eager",
        "model.min_pixels=3136",
        "model.max_pixels=3136",
        f"data.train={synth_dir / 'train.jsonl'}",
        f"output_dir={output_dir}",
        "use_cpu=true",
        "prompts_per_step=2",
        f"rollout.group_size={GROUP}",
        "rollout.max_completion_length=16",
        "max_steps=4",
        "save_steps=1",
        "logging_steps=1",
        "optim.learning_rate=1e-3",
        "progress_bar=false",
        *extra,
    ]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "rl.yaml"
    path.write_text("stage: rl\n")
    return path


@pytest.fixture(scope="module")
def straight(
    tiny_model_dir: Path, synth_dir: Path, recipe: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The uninterrupted two-process run."""
    out = tmp_path_factory.mktemp("straight")
    run = subprocess.run(
        _command(recipe, _overrides(tiny_model_dir, synth_dir, out)),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return out


def test_each_process_holds_whole_groups_of_its_own_studies(straight: Path) -> None:
    rows = [json.loads(line) for line in (straight / COMPLETIONS_LOG).read_text().splitlines()]
    assert sorted({row["step"] for row in rows}) == [1, 2, 3, 4]
    for step in range(1, 5):
        of_step = [row for row in rows if row["step"] == step]
        # prompts_per_step = 2 over 2 processes: one group of G completions on each.
        per_process = {p: [row for row in of_step if row["process"] == p] for p in (0, 1)}
        assert [len(per_process[p]) for p in (0, 1)] == [1, 1], step
        for p in (0, 1):
            (group,) = per_process[p]
            assert [c["index"] for c in group["completions"]] == list(range(GROUP))
            # Edited copies come from sources in their own group (indices are within the group).
            for item in group["completions"]:
                if item["kind"] == "edit":
                    assert 0 <= item["source"] < GROUP // 2
        studies = [per_process[p][0]["study_id"] for p in (0, 1)]
        assert studies[0] != studies[1], f"step {step}: both processes trained study {studies[0]}"
    history = [json.loads(line) for line in (straight / "log_history.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in history if "rewards/on_policy/total" in entry] == [1, 2, 3, 4]


def test_a_batch_the_processes_cannot_split_is_refused(
    tiny_model_dir: Path, synth_dir: Path, recipe: Path, tmp_path: Path
) -> None:
    run = subprocess.run(
        _command(recipe, _overrides(tiny_model_dir, synth_dir, tmp_path / "odd", "prompts_per_step=3")),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = run.stdout + run.stderr
    assert run.returncode != 0
    # Each worker exits 2 with the message (torchrun then reports the failed workers).
    assert "prompts_per_step = 3 is not divisible by the 2 processes" in output
    assert "use a multiple of the process count" in output
    assert "exitcode  : 2" in output or "exitcode: 2" in output, output[-3000:]
    # The workers print the message without a traceback; what follows is torchrun's own report of
    # failed workers (its ChildFailedError traceback).
    workers = run.stderr.split("failed (exitcode")[0]
    assert "prompts_per_step = 3" in workers and "Traceback (most recent call last)" not in workers
    assert not (tmp_path / "odd" / "checkpoint-1").exists()


def test_kill_and_resume_gives_the_uninterrupted_parameters(
    straight: Path, tiny_model_dir: Path, synth_dir: Path, recipe: Path, tmp_path: Path
) -> None:
    from editgrpo.models.qwen_vl import load_policy

    interrupted = tmp_path / "interrupted"
    overrides = _overrides(tiny_model_dir, synth_dir, interrupted)
    process = subprocess.Popen(
        _command(recipe, overrides),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: kill -9 reaches torchrun and both workers
    )
    deadline = time.monotonic() + 240
    while not (interrupted / "checkpoint-2" / COMPLETE_MARKER).exists():
        assert process.poll() is None, "the run ended before checkpoint-2"
        assert time.monotonic() < deadline, "no checkpoint-2 in time"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)
    killed_at = last_complete_checkpoint(interrupted)
    assert killed_at is not None and not (interrupted / "final").exists()

    resumed = subprocess.run(
        _command(recipe, overrides, "--resume"), env=_env(), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    a = dict(load_policy(str(straight / "final")).named_parameters())
    b = dict(load_policy(str(interrupted / "final")).named_parameters())
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).detach().abs().max()) for k in a)
    assert worst < 1e-5, f"resumed parameters differ from the uninterrupted run by {worst}"
    # The resumed run logged each step once, the same completions as the uninterrupted one.
    logged = [json.loads(line) for line in (interrupted / COMPLETIONS_LOG).read_text().splitlines()]
    expected = [json.loads(line) for line in (straight / COMPLETIONS_LOG).read_text().splitlines()]
    assert [(r["step"], r["process"], r["study_id"]) for r in logged] == [
        (r["step"], r["process"], r["study_id"]) for r in expected
    ]
