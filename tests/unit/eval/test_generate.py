"""`editgrpo generate` and its library half: a tiny real Qwen2.5-VL on SynthCXR, resume, user errors.

The orchestration tests pass a plain batch function (the generator is an argument of
``generate_predictions``, not a class of ours); the CLI tests load the saved tiny model for real.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from editgrpo.cli import main
from editgrpo.data.manifest import read_manifest
from editgrpo.data.synth import SynthConfig, write_synthcxr
from editgrpo.errors import UserError
from editgrpo.eval.generate import GenerateOptions, GenerationPrompt, generate_predictions, read_done


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 small SynthCXR studies, half of them in the test split, some with priors."""
    out = tmp_path_factory.mktemp("synth")
    write_synthcxr(
        out, SynthConfig(n=8, seed=0, image_size=64, with_priors=True, split_fractions=(0.25, 0.25, 0.5))
    )
    return out


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def echo_generator(calls: list[tuple[list[str], int | None]]):
    """Returns "report of <id>" per prompt and records (study ids, seed) per batch."""

    def generate(prompts: Sequence[GenerationPrompt], seed: int | None) -> list[str]:
        calls.append(([p.study_id for p in prompts], seed))
        assert all(p.images and all(image.mode == "RGB" for image in p.images) for p in prompts)
        return [f" report of {p.study_id}\n" for p in prompts]

    return generate


# --- library: generate_predictions and read_done --------------------------------------------------


def test_batches_seeds_progress_and_row_format(synth_dir: Path, tmp_path: Path) -> None:
    manifest = synth_dir / "train.jsonl"
    studies = read_manifest(manifest)[0]
    calls: list[tuple[list[str], int | None]] = []
    ticks: list[tuple[int, int]] = []
    out = tmp_path / "preds.jsonl"
    options = GenerateOptions(model="m", split="all", batch_size=3, seed=10, settings={"temperature": 0.0})
    summary = generate_predictions(
        manifest, out, lambda: echo_generator(calls), options, progress=lambda d, t: ticks.append((d, t))
    )
    n = len(studies)
    assert summary == {"out": str(out), "split": "all", "studies": n, "skipped": 0, "generated": n}
    ids = [s.study_id for s in studies]
    assert calls == [(ids[i : i + 3], 10 + i) for i in range(0, n, 3)]  # seed = seed + first index
    assert ticks == [(0, n)] + [(min(i + 3, n), n) for i in range(0, n, 3)]
    rows = rows_of(out)
    assert [r["study_id"] for r in rows] == ids
    first, study = rows[0], studies[0]
    assert first["prediction"] == f"report of {study.study_id}"  # stripped
    assert first["reference"] == study.findings and first["section"] == "findings"
    assert first["model"] == "m" and first["split"] == study.split and first["dataset"] == "synthcxr"
    assert first["views"][0].startswith("current") and first["generation"] == {"temperature": 0.0}


def test_resume_generates_only_the_missing_studies(synth_dir: Path, tmp_path: Path) -> None:
    manifest = synth_dir / "train.jsonl"
    out = tmp_path / "preds.jsonl"
    options = GenerateOptions(model="m", split="all", batch_size=2, seed=0)
    generate_predictions(manifest, out, lambda: echo_generator([]), options)
    full = out.read_text(encoding="utf-8")
    lines = full.splitlines(keepends=True)
    # Interrupted run: the last two rows are gone and a third was cut off mid-write.
    out.write_text("".join(lines[:-3]) + lines[-3][:20], encoding="utf-8")
    calls: list[tuple[list[str], int | None]] = []
    summary = generate_predictions(manifest, out, lambda: echo_generator(calls), options)
    assert summary["generated"] == 3 and summary["skipped"] == len(lines) - 3
    assert sorted(out.read_text(encoding="utf-8").splitlines()) == sorted(full.splitlines())
    # Nothing left: the generator is not even built.
    summary = generate_predictions(manifest, out, lambda: pytest.fail("built a generator"), options)
    assert (summary["generated"], summary["skipped"]) == (0, len(lines))


def test_read_done_rejects_other_models_and_broken_lines(tmp_path: Path) -> None:
    out = tmp_path / "preds.jsonl"
    assert read_done(out, "m") == set()
    out.write_text('{"study_id": "a", "model": "m"}\n{"study_id": "b", "model": "m"}', encoding="utf-8")
    assert read_done(out, "m") == {"a", "b"}
    assert out.read_text(encoding="utf-8").endswith("}\n")  # a complete last row gets its newline
    with pytest.raises(UserError, match="holds predictions of model 'm', not 'other'"):
        read_done(out, "other")
    out.write_text('{"study_id": "a", "model": "m"}\nnot json\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"preds.jsonl:2: invalid JSON"):
        read_done(out, "m")


def test_a_split_without_studies_names_the_splits_present(synth_dir: Path, tmp_path: Path) -> None:
    options = GenerateOptions(model="m", split="validate")
    with pytest.raises(UserError, match=r"no studies in split 'validate' \(splits present: test\)"):
        generate_predictions(
            synth_dir / "test.jsonl", tmp_path / "p.jsonl", lambda: pytest.fail("built"), options
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split": "dev"}, "split 'dev' is not one of train, validate, test, all"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"target_section": "history"}, "target_section 'history' is not one of"),
    ],
)
def test_options_are_checked(kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        GenerateOptions(model="m", **kwargs)


# --- CLI with the tiny real model -----------------------------------------------------------------


def test_cli_generates_one_prediction_per_test_study_and_resumes(
    synth_dir: Path, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = synth_dir / "test.jsonl"
    out = tmp_path / "preds.jsonl"
    args = ["generate", "--model", str(tiny_model_dir), "--manifest", str(manifest), "--out", str(out)]
    # Sampling: a random-weight model's greedy text can be empty (an early end-of-turn token).
    args += ["--batch-size", "3", "--max-new-tokens", "8", "--temperature", "1.0", "--seed", "1"]
    assert main(args) == 0
    test_ids = [s.study_id for s in read_manifest(manifest)[0]]
    assert len(test_ids) >= 3
    rows = rows_of(out)
    assert [r["study_id"] for r in rows] == test_ids
    assert all(isinstance(r["prediction"], str) and r["prediction"] for r in rows)
    assert {r["model"] for r in rows} == {str(tiny_model_dir)}
    assert json.loads(capsys.readouterr().out)["generated"] == len(test_ids)

    before = out.read_bytes()
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) | {"out": None} == {
        "out": None,
        "split": "test",
        "studies": len(test_ids),
        "skipped": len(test_ids),
        "generated": 0,
    }
    assert out.read_bytes() == before


def test_cli_greedy_default_is_deterministic(
    synth_dir: Path, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outputs = []
    for name in ("a.jsonl", "b.jsonl"):
        out = tmp_path / name
        args = ["generate", "--model", str(tiny_model_dir), "--manifest", str(synth_dir / "test.jsonl")]
        assert main([*args, "--out", str(out), "--max-new-tokens", "6", "--max-images", "2"]) == 0
        outputs.append([(r["prediction"], r["views"]) for r in rows_of(out)])
    assert outputs[0] == outputs[1]
    assert all(len(views) <= 2 for _, views in outputs[0])


def test_cli_user_errors_exit_2_with_a_message(
    synth_dir: Path, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "p.jsonl")
    cases = [
        (["--model", str(tiny_model_dir), "--manifest", str(tmp_path / "none.jsonl")], "manifest not found"),
        (["--model", str(tmp_path / "no-model"), "--manifest", str(synth_dir / "test.jsonl")], "no such directory"),
        (["--model", str(tmp_path), "--manifest", str(synth_dir / "test.jsonl")], "cannot load a Qwen2.5-VL"),
        (["--model", str(tiny_model_dir), "--manifest", str(synth_dir / "test.jsonl"), "--batch-size", "0"], "batch_size must be >= 1"),
    ]  # fmt: skip
    for extra, message in cases:
        assert main(["generate", *extra, "--out", out]) == 2, extra
        captured = capsys.readouterr()
        assert captured.err.startswith("editgrpo generate: error:") and message in captured.err, captured.err
        assert "Traceback" not in captured.err
    assert not Path(out).exists()
