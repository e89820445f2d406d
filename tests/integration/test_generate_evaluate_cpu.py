"""End to end on the CPU: a tiny model writes reports for a SynthCXR test split with
`editgrpo generate`, and `editgrpo evaluate` scores them (issue 9 acceptance)."""

from __future__ import annotations

import json
from pathlib import Path

from editgrpo.cli import main
from editgrpo.data.synth import SynthConfig, write_synthcxr
from editgrpo.models.tiny import save_tiny_model


def test_generate_then_evaluate_on_synthcxr(tmp_path: Path, capsys) -> None:
    model_dir = tmp_path / "tiny"
    save_tiny_model(model_dir, size="xs", seed=0)
    data = tmp_path / "synth"
    write_synthcxr(data, SynthConfig(n=60, seed=3, image_size=64))
    predictions = tmp_path / "preds.jsonl"
    args = [
        "generate",
        "--model",
        str(model_dir),
        "--manifest",
        str(data / "test.jsonl"),
        "--out",
        str(predictions),
    ]
    assert main([*args, "--max-new-tokens", "16", "--temperature", "1.0", "--batch-size", "4"]) == 0
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    test_ids = [json.loads(line)["study_id"] for line in (data / "test.jsonl").read_text().splitlines()]
    assert sorted(r["study_id"] for r in rows) == sorted(test_ids) and rows

    out = tmp_path / "eval"
    code = main(
        [
            "evaluate",
            str(predictions),
            "--out",
            str(out),
            "--no-meteor",
            "--bootstrap",
            "50",
            "--on-error",
            "skip",
        ]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    # Random weights write noise: the clinical scores exist, lie in their ranges and are not those
    # of a perfect report (CheXbert-F1 still credits noise that, like a normal reference, mentions
    # no finding: No Finding matches No Finding); refused rows are counted, not dropped silently.
    assert summary["n"] + summary["n_rejected"] == len(rows)
    columns = summary["columns"]
    for name in ("chexbert_micro_f1_14", "radgraph_partial", "ratescore"):
        assert 0.0 <= columns[name]["low"] <= columns[name]["value"] <= columns[name]["high"] <= 1.0, name
    assert columns["chexbert_micro_f1_14"]["value"] < 1.0
    assert columns["radgraph_partial"]["value"] < 0.5
    assert columns["green"]["missing"]
    per_sample = (out / "per_sample.jsonl").read_text().splitlines()
    assert len(per_sample) == summary["n"]
    assert "micro-F1-14 [chexpert-rules]" in (out / "table.md").read_text()
    assert (out / "report.html").read_text().count("data:image/png;base64,") >= 2
    capsys.readouterr()
