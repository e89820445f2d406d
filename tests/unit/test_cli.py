"""The console script, run as a user runs it: real subprocesses, real files, exit codes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fixtures.commands import editgrpo


def test_help_lists_the_subcommands() -> None:
    result = editgrpo("--help")
    assert result.returncode == 0
    for name in ("config", "tiny-model", "demo"):
        assert name in result.stdout


def test_config_show_prints_the_resolved_yaml() -> None:
    result = editgrpo("config", "show", "recipes/paper/rl.yaml", "rollout.group_size=16", "edit.num_edits=8")
    assert result.returncode == 0, result.stderr
    assert "stage: rl" in result.stdout
    assert "  group_size: 16" in result.stdout and "  num_edits: 8" in result.stdout


def test_config_validate_accepts_a_good_recipe() -> None:
    result = editgrpo("config", "validate", "recipes/paper/sft.yaml")
    assert (result.returncode, result.stdout.strip()) == (
        0,
        "ok: recipes/paper/sft.yaml is a valid 'sft' config",
    )


def test_config_errors_exit_2_with_every_problem_and_no_traceback(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("stage: rl\nmodel:\n  dtyp: float32\n", encoding="utf-8")
    result = editgrpo("config", "validate", str(recipe), "edit.num_edits=9")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert result.stderr.startswith(f"editgrpo config: error: 2 problem(s) in config {recipe}:")
    assert (
        f"{recipe}:3: model.dtyp = 'float32': is not a key of ModelConfig. Fix: did you mean 'model.dtype'?"
        in (result.stderr)
    )
    assert (
        "override 'edit.num_edits=9': edit.num_edits = 9: must be <= rollout.group_size // 2 (4)"
        in result.stderr
    )


def test_missing_recipe_is_a_user_error() -> None:
    result = editgrpo("config", "show", "nope.yaml")
    assert result.returncode == 2 and "recipe = 'nope.yaml': file not found" in result.stderr


def test_tiny_model_builds_a_loadable_checkpoint(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Small left pleural effusion.\n" * 20, encoding="utf-8")
    out = tmp_path / "tiny"
    result = editgrpo("tiny-model", str(out), "--size", "xs", "--corpus", str(corpus), "--seed", "2")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["size"] == "xs" and summary["corpus"] == "user" and summary["seed"] == 2
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json"} <= {
        p.name for p in out.iterdir()
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "huge"], "--size 'huge' is not a tiny size; valid: xs, s, m"),
        (["--corpus", "/nonexistent/corpus.txt"], "--corpus /nonexistent/corpus.txt: file not found"),
    ],
)
def test_tiny_model_user_errors(tmp_path: Path, args: list[str], message: str) -> None:
    result = editgrpo("tiny-model", str(tmp_path / "out"), *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_prepare_iu_xray_writes_manifest_rejects_and_summary(tmp_path: Path) -> None:
    from fixtures.openi import write_archive

    archive = write_archive(tmp_path / "r.tgz")
    out = tmp_path / "out" / "iu.jsonl"
    failed = editgrpo("prepare", "iu-xray", "--reports", str(archive), "--out", str(out))
    assert failed.returncode == 2 and "[CXR4]: findings: no findings or impression" in failed.stderr
    assert "Traceback" not in failed.stderr
    result = editgrpo(
        "prepare", "iu-xray", "--reports", str(archive), "--out", str(out), "--on-error", "skip"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("3 studies (train ")
    assert "left out: 1 rejected, 0 filtered" in result.stdout
    assert len(out.read_text().splitlines()) == 3
    summary = json.loads((out.parent / "iu.summary.json").read_text())
    assert summary["studies"] == 3 and summary["rejected"] == 1
    assert json.loads((out.parent / "iu.rejects.jsonl").read_text())["record_id"] == "CXR4"


def test_prepare_progress_bar_is_drawn_on_a_terminal_and_silent_on_a_pipe(tmp_path: Path) -> None:
    from fixtures.openi import write_archive

    archive = write_archive(tmp_path / "r.tgz")
    args = ("prepare", "iu-xray", "--reports", str(archive), "--out", str(tmp_path / "iu.jsonl"))
    args += ("--on-error", "skip")
    # rich's switches (rich.console.Console): stderr taken as a terminal, or not, whatever runs the tests.
    piped = editgrpo(*args, env={"TTY_COMPATIBLE": "0", "TTY_INTERACTIVE": "0"})
    terminal = editgrpo(
        *args, env={"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "TERM": "xterm", "COLUMNS": "300"}
    )
    assert (piped.returncode, terminal.returncode) == (0, 0), piped.stderr + terminal.stderr
    assert piped.stdout == terminal.stdout and piped.stdout.startswith("3 studies (train ")
    assert piped.stderr == ""
    # The dataset's bar, its last frame at four of four reports, and the phase beside it.
    assert "iu-xray" in terminal.stderr and "4/4" in terminal.stderr
    assert "writing 3 studies" in terminal.stderr


def test_prepare_argument_errors(tmp_path: Path) -> None:
    result = editgrpo("prepare", "iu-xray", "--out", str(tmp_path / "x.jsonl"))
    assert result.returncode == 2 and "iu-xray needs --reports ARCHIVE" in result.stderr
    result = editgrpo("prepare", "mimic-cxr", "--out", str(tmp_path / "x.jsonl"))
    assert result.returncode == 2 and "mimic-cxr needs --root DIR" in result.stderr


def test_synth_writes_a_small_benchmark(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    result = editgrpo("synth", "--n", "30", "--seed", "3", "--out", str(out), "--with-priors")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    rows = sum(
        len((out / f"{split}.jsonl").read_text().splitlines()) for split in ("train", "validate", "test")
    )
    assert rows == 30 and summary == json.loads((out / "synthcxr.json").read_text())
    bad = editgrpo("synth", "--n", "0", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "SynthConfig.n = 0" in bad.stderr and "Traceback" not in bad.stderr


def test_label_prints_the_14_labels_in_chexbert_order(tmp_path: Path) -> None:
    from editgrpo.text.observations import CHEXPERT_14

    result = editgrpo("label", "--text", "Stable mild cardiomegaly. No effusion.")
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    assert row["labeler"] == "chexpert-rules" and list(row["labels"]) == list(CHEXPERT_14)
    assert row["labels"]["Cardiomegaly"] == 1 and row["labels"]["Pleural Effusion"] == 0
    reports = tmp_path / "r.jsonl"
    reports.write_text('{"id": "a", "text": "No pneumothorax."}\n{"study_id": "s", "findings": "Edema."}\n')
    rows = [json.loads(line) for line in editgrpo("label", str(reports)).stdout.splitlines()]
    assert [(r["id"], r["labels"]["Pneumothorax"], r["labels"]["Edema"]) for r in rows] == [
        ("a", 0, None),
        ("s", None, 1),
    ]
    reports.write_text('{"id": "a", "txt": "No pneumothorax."}\n')
    bad = editgrpo("label", str(reports))
    assert bad.returncode == 2 and f"{reports}:1: no 'text', 'report'" in bad.stderr
    assert editgrpo("label").returncode == 2
    missing = editgrpo("label", "--text", "x", "--backend", "chexbert")
    assert missing.returncode == 2 and "needs --checkpoint" in missing.stderr


def test_label_stats_evaluate_and_compare(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    assert (
        editgrpo("synth", "--n", "24", "--seed", "5", "--out", str(out), "--image-size", "64").returncode == 0
    )
    stats = editgrpo("label-stats", str(out / "train.jsonl"), "--out", str(tmp_path / "freqs.json"))
    assert stats.returncode == 0, stats.stderr
    freqs = json.loads((tmp_path / "freqs.json").read_text())
    assert freqs["labeler"] == "rules" and len(freqs["labels"]) == 14

    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_text(
        "".join(
            json.dumps({"study_id": r["study_id"], "prediction": r["findings"], "reference": r["findings"]})
            + "\n"
            for r in rows
        )
    )
    bad.write_text(
        "".join(
            json.dumps(
                {"study_id": r["study_id"], "prediction": "No acute process.", "reference": r["findings"]}
            )
            + "\n"
            for r in rows
        )
    )
    result = editgrpo(
        "evaluate", str(good), "--out", str(tmp_path / "eval"), "--no-meteor", "--bootstrap", "50"
    )
    assert result.returncode == 0, result.stderr
    assert "micro-F1-14 [chexpert-rules]" in result.stdout
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["columns"]["chexbert_micro_f1_14"]["value"] == 1.0
    compared = editgrpo(
        "compare",
        str(good),
        str(bad),
        "--metrics",
        "chexbert",
        "--shuffles",
        "500",
        "--bootstrap",
        "200",
        "--out",
        str(tmp_path / "cmp"),
    )
    assert compared.returncode == 0, compared.stderr
    # The printed Markdown table: A (a perfect copy) beats B on micro-F1-14 with a CI above 0; p is
    # a randomisation p-value over these few studies (add-one corrected, so never 0).
    row = next(line for line in compared.stdout.splitlines() if line.startswith("| micro-F1-14"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[1]) == 1.0 and float(cells[2]) < 1.0
    difference, low, high = (float(x) for x in re.findall(r"[+-]\d\.\d+", cells[3]))
    assert 0 < low <= difference <= high and difference == pytest.approx(1.0 - float(cells[2]), abs=1e-4)
    assert cells[4] == "< 0.001" or 0 < float(cells[4]) <= 1
    assert (tmp_path / "cmp" / "compare.md").read_text() == compared.stdout.split("written:")[0]
    assert "<table>" in (tmp_path / "cmp" / "compare.html").read_text()
    missing = editgrpo("evaluate", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "x"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
