"""Every command example of README.md runs as written, after the ones before it (issue 20).

The ```bash blocks are taken in order and run with bash (-e: a failing line fails the block) in one
temporary folder holding a copy of ``recipes/``, so each block sees what the earlier ones made
(``runs/tiny-xs``, ``runs/synthcxr``, the SFT checkpoint, ...). A block right after a
``<!-- not-run: REASON -->`` comment is left out; its reason must say why (a dataset, a GPU, a
hub model, a server that keeps running). ``editgrpo`` and ``python`` come from the interpreter
running the tests, so the examples use the code under test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
NOT_RUN = re.compile(r"^<!--\s*not-run:\s*(?P<reason>.+?)\s*-->$")


def readme_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """(line number, bash code, not-run reason or None) of every ```bash fence in ``text``."""
    lines = text.splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```bash":
            start = i
            j = i + 1
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            previous = next((lines[k].strip() for k in range(start - 1, -1, -1) if lines[k].strip()), "")
            match = NOT_RUN.match(previous)
            blocks.append((start + 1, "\n".join(lines[start + 1 : j]), match["reason"] if match else None))
            i = j + 1
        else:
            i += 1
    return blocks


def test_blocks_are_found_and_skips_give_reasons() -> None:
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    runnable = [b for b in blocks if b[2] is None]
    assert len(runnable) >= 6, "the README lost its runnable examples"
    for line, _, reason in blocks:
        assert reason is None or len(reason) > 8, f"README.md:{line}: say why the block is not run"
    # The extractor itself: a marker applies to the next block only.
    sample = "<!-- not-run: needs a GPU -->\n```bash\ngpu-thing\n```\ntext\n```bash\necho ok\n```\n"
    assert readme_blocks(sample) == [(2, "gpu-thing", "needs a GPU"), (6, "echo ok", None)]


def test_readme_examples_run_in_order(tmp_path: Path) -> None:
    work = tmp_path / "repo"
    work.mkdir()
    shutil.copytree(ROOT / "recipes", work / "recipes")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "OMP_NUM_THREADS": "1",  # the shared CI cores: one thread each (README, demo)
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p),
    }
    timings = []
    for line, code, reason in readme_blocks(README.read_text(encoding="utf-8")):
        if reason is not None:
            continue
        started = time.monotonic()
        result = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", code],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            stdin=subprocess.DEVNULL,
        )
        timings.append((line, time.monotonic() - started))
        if result.returncode != 0:
            pytest.fail(
                f"README.md:{line}: the block exited {result.returncode}\n--- code\n{code}\n"
                f"--- stdout (tail)\n{result.stdout[-3000:]}\n--- stderr (tail)\n{result.stderr[-3000:]}"
            )
    # What the evaluation examples promise exists.
    assert (work / "runs" / "eval" / "report.html").is_file()
    assert {p.name for p in (work / "runs" / "eval_both").iterdir()} >= {
        "preds_sft",
        "preds_rl",
        "report.html",
    }
    assert (work / "runs" / "compare" / "compare.md").read_text().count("\n| ") >= 10
    assert (work / "runs" / "evaluate" / "summary.json").is_file()
    print("README block timings (line, s):", [(line, round(s, 1)) for line, s in timings])
