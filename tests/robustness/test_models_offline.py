"""Model weights as a user meets them offline (issue #19): real subprocesses of the CLI, no hub.

Wall times are asserted loosely (10 s for a "< 2 s" promise); benchmarks measure speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, float]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "editgrpo", *args], capture_output=True, text=True, env=full_env, timeout=120
    )
    return done, time.monotonic() - started


def test_missing_chexbert_checkpoint_exits_2_naming_the_path() -> None:
    done, seconds = cli("label", "--text", "x", "--backend", "chexbert", "--checkpoint", "/nonexistent.pth")
    assert done.returncode == 2
    assert "/nonexistent.pth" in done.stderr and "chexbert.pth" in done.stderr
    assert "Traceback" not in done.stderr
    assert seconds < 10


def test_hub_id_offline_with_empty_cache_exits_2_naming_file_and_fix(tmp_path: Path) -> None:
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    done, seconds = cli(
        "label", "--text", "x", "--backend", "chexbert", "--checkpoint", "StanfordAIMI/RRG_scorers", env=env
    )
    assert done.returncode == 2
    assert "chexbert.pth" in done.stderr and "HF_HUB_OFFLINE" in done.stderr
    assert "editgrpo models download chexbert" in done.stderr
    assert seconds < 10


def test_local_checkpoint_but_uncached_tokenizer_offline_exits_2(tmp_path: Path) -> None:
    checkpoint = tmp_path / "chexbert.pth"
    checkpoint.write_bytes(b"not read before the tokenizer is found")
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    done, seconds = cli(
        "label", "--text", "x", "--backend", "chexbert", "--checkpoint", str(checkpoint), env=env
    )
    assert done.returncode == 2
    assert "vocab.txt" in done.stderr and "bert-base-uncased" in done.stderr and "--tokenizer" in done.stderr
    assert seconds < 30  # torch and transformers are imported first


def test_models_check_lists_each_backend_of_the_paper_recipe(tmp_path: Path) -> None:
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "XDG_CACHE_HOME": str(tmp_path)}
    done, _ = cli("models", "check", str(ROOT / "recipes" / "paper" / "rl.yaml"), env=env)
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["model"] for r in rows] == [
        "chexbert",
        "bert-base-uncased",
        "rate-ner",
        "radgraph-xl",
        "biolord",
    ]
    assert all(not r["present"] and "editgrpo models download" in r["fix"] for r in rows)
    assert done.returncode == 1

    # A file put in the cache layout counts as present.
    snapshot = tmp_path / "hub" / "models--bert-base-uncased" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "vocab.txt").write_text("[PAD]\n")
    (tmp_path / "hub" / "models--bert-base-uncased" / "refs").mkdir()
    (tmp_path / "hub" / "models--bert-base-uncased" / "refs" / "main").write_text("abc")
    done, _ = cli("models", "check", str(ROOT / "recipes" / "paper" / "rl.yaml"), env=env)
    rows = {json.loads(line)["model"]: json.loads(line) for line in done.stdout.splitlines()}
    assert rows["bert-base-uncased"]["present"] and rows["bert-base-uncased"]["path"].endswith("vocab.txt")


def test_models_download_offline_fails_fast() -> None:
    done, seconds = cli("models", "download", "chexbert", env={"HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2 and "HF_HUB_OFFLINE" in done.stderr and "chexbert" in done.stderr
    assert seconds < 10
    done, _ = cli("models", "download", "nope")
    assert done.returncode == 2 and "valid: chexbert" in done.stderr
