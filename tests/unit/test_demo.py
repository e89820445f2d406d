"""`editgrpo demo --quick` end to end, as CI runs it: SynthCXR -> tiny VLM -> SFT -> Dr. GRPO and
EditGRPO -> evaluation -> report, real parts throughout (no mocks); plus the pure helpers the report
is built from, on hand-computed inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fixtures.commands import editgrpo


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("trl")
    out = tmp_path_factory.mktemp("demo")
    result = editgrpo("demo", "--quick", "--out", str(out), env={"COLUMNS": "200"}, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:] + result.stdout[-4000:]
    assert "Traceback" not in result.stderr
    return out


def test_quick_demo_writes_the_report_with_three_models(quick_demo: Path) -> None:
    results = json.loads((quick_demo / "results.json").read_text())
    names = list(results["table"])
    assert [n for n in names if n.startswith("SFT (final")], names
    assert {"Dr. GRPO", "EditGRPO"} <= set(names)
    for name, row in results["table"].items():
        for key in ("chexbert_micro_f1_14", "chexbert_macro_f1_14", "radgraph_partial", "ratescore"):
            cell = row[key]
            assert math.isfinite(cell["value"]), (name, key)
            assert 0.0 <= cell["low"] <= cell["value"] <= cell["high"] <= 1.0, (name, key, cell)
            assert cell["n"] == results["synth"]["splits"]["test"]

    report = (quick_demo / "report.md").read_text()
    for name in names:
        assert f"| {name} | " in report, name
    assert "EditGRPO vs Dr. GRPO" in report and "p " in report
    html = (quick_demo / "report.html").read_text()
    assert "<table>" in html and "reward_curves.png" in html and "EditGRPO" in html

    png = (quick_demo / "reward_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    steps = results["plan"]["rl_steps"]
    for method in ("Dr. GRPO", "EditGRPO"):
        (series,) = results["curves"][method]  # one seed in the quick plan
        assert [step for step, _ in series] == list(range(1, steps + 1))
        assert all(0.0 <= reward <= 3.0 for _, reward in series)

    stats = results["edit_stats"]
    assert 0.0 <= stats["edits/changed_rate"] <= 1.0
    assert stats["edits/edited_rows_frac"] > 0.0
    ops = sum(stats[f"edits/op_rate/{op}"] for op in ("replace", "delete", "add", "none"))
    assert ops == pytest.approx(1.0, abs=1e-6)
    assert "Edit statistics" in report

    assert results["examples"] and all(e["reference"] for e in results["examples"])
    assert set(results["examples"][0]["reports"]) == set(names)
    comparison = results["comparisons"]["EditGRPO vs Dr. GRPO"]
    assert comparison["n_shared"] == results["synth"]["splits"]["test"]
    assert all(0.0 <= m["p_value"] <= 1.0 for m in comparison["metrics"].values())
    assert (quick_demo / "demo.log").is_file()


def test_moving_average_and_reward_series_by_hand() -> None:
    from editgrpo.eval.curves import moving_average, reward_series

    # window 2: [1], [1, 3], [3, 5], [5, 7] -> 1, 2, 4, 6
    assert moving_average([1.0, 3.0, 5.0, 7.0], 2).tolist() == [1.0, 2.0, 4.0, 6.0]
    assert np.allclose(moving_average([2.0, 4.0], 5), [2.0, 3.0])
    log = [
        {"step": 1, "rewards/on_policy/total": 0.5, "rewards/edited/total": 2.0},
        {"step": 2, "loss": 0.1},
        {"step": 2, "rewards/on_policy/total": 1.5},
    ]
    assert reward_series(log) == [(1, 0.5), (2, 1.5)]  # the edited copies' reward is not the curve


def test_per_finding_counts_by_hand() -> None:
    from editgrpo.eval.curves import per_finding
    from editgrpo.text.observations import CHEXPERT_14

    lesion = CHEXPERT_14.index("Lung Lesion")

    def labels(pred: int, ref: int) -> dict:
        p, r = [0] * len(CHEXPERT_14), [0] * len(CHEXPERT_14)
        p[lesion], r[lesion] = pred, ref
        return {"labels": {"prediction": p, "reference": r}}

    # tp 1, fn 2, fp 1 -> recall 1/3, precision 1/2, F1 2/(2+1+2) = 0.4
    rows = [labels(1, 1), labels(0, 1), labels(0, 1), labels(1, 0), labels(0, 0)]
    entry = per_finding(rows)["Lung Lesion"]
    assert entry["positives"] == 3
    assert entry["recall"] == pytest.approx(1 / 3)
    assert entry["precision"] == pytest.approx(0.5)
    assert entry["f1"] == pytest.approx(0.4)
    assert set(per_finding(rows)) == {"Lung Lesion"}  # observations without a positive are left out
