"""eval/evaluate.py: reading and validating predictions, the evaluation table, and paired comparison."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from editgrpo.data.manifest import DataError
from editgrpo.eval.evaluate import CLINICAL, compare, evaluate, read_predictions
from editgrpo.metrics.lexical import meteor_unavailable_reason

GOOD = [
    "Small left pleural effusion. Mild cardiomegaly.",
    "Right lower lobe consolidation. No pneumothorax.",
    "No acute cardiopulmonary process. Lungs are clear.",
    "Moderate pulmonary edema. Bilateral pleural effusions.",
    "Large right pneumothorax. Left lung is clear.",
    "Enlarged cardiac silhouette. No focal consolidation.",
]
WRONG = [
    "No pleural effusion. Normal heart size.",
    "Lungs are clear. Large right pneumothorax.",
    "Moderate pulmonary edema. Bilateral pleural effusions.",
    "No pulmonary edema. No pleural effusion.",
    "No pneumothorax. Right lower lobe consolidation.",
    "Normal heart size. Left lower lobe pneumonia.",
]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _rows(predictions: list[str], references: list[str], prefix: str = "s") -> list[dict]:
    return [
        {"study_id": f"{prefix}{i:03d}", "prediction": p, "reference": r}
        for i, (p, r) in enumerate(zip(predictions, references, strict=True))
    ]


def test_identical_reports_score_one(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.jsonl", _rows(GOOD, GOOD))
    summary = evaluate(path, tmp_path / "out", with_meteor=False, bootstrap=100)
    columns = summary["columns"]
    for key in ("chexbert_micro_f1_14", "chexbert_micro_f1_5", "radgraph_partial", "ratescore"):
        assert columns[key]["value"] == pytest.approx(1.0)
    records = [json.loads(line) for line in (tmp_path / "out" / "per_sample.jsonl").read_text().splitlines()]
    assert [r["study_id"] for r in records] == [f"s{i:03d}" for i in range(len(GOOD))]
    for record in records:
        assert record["scores"]["chexbert_pair_micro_f1_14"] == pytest.approx(1.0)
        assert record["scores"]["radgraph_partial"] == pytest.approx(1.0)
        assert record["scores"]["ratescore"] == pytest.approx(1.0)
        assert record["labels"]["prediction"] == record["labels"]["reference"]
        assert len(record["bleu_stats"]) == 10


def test_wrong_reports_score_lower(tmp_path: Path) -> None:
    good = evaluate(
        _write(tmp_path / "g.jsonl", _rows(GOOD, GOOD)), tmp_path / "g", with_meteor=False, bootstrap=50
    )
    bad = evaluate(
        _write(tmp_path / "b.jsonl", _rows(WRONG, GOOD)), tmp_path / "b", with_meteor=False, bootstrap=50
    )
    for key in ("chexbert_micro_f1_14", "radgraph_partial", "ratescore", "bleu_4"):
        assert bad["columns"][key]["value"] < good["columns"][key]["value"]


def test_summary_columns_name_backends_and_table(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.jsonl", _rows(WRONG, GOOD))
    summary = evaluate(path, tmp_path / "out", with_meteor=False, bootstrap=200, seed=3)
    columns = summary["columns"]
    assert columns["chexbert_micro_f1_14"]["column"] == "micro-F1-14 [chexpert-rules]"
    assert columns["chexbert_macro_f1_5"]["column"] == "macro-F1-5 [chexpert-rules]"
    assert columns["radgraph_partial"]["column"] == "RadGraph partial [lexicon]"
    assert columns["ratescore"]["column"] == "RaTEScore 0.5 [lexicon+lexical]"
    assert {"bleu_1", "bleu_4", "rouge_l", "cider", "meteor", "green"} <= set(columns)
    assert columns["green"]["value"] is None and "judge" in columns["green"]["missing"]
    assert columns["meteor"]["value"] is None
    assert summary["avg"]["value"] is None and summary["avg"]["missing"] == ["green"]
    for entry in columns.values():
        if entry["value"] is not None:
            assert entry["low"] <= entry["value"] <= entry["high"]
            assert entry["n"] == len(WRONG)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["columns"] == columns
    table = (tmp_path / "out" / "table.md").read_text()
    assert "cleaning: none" in table and "lexical convention: pycocoevalcap" in table
    assert "RaTEScore 0.5 [lexicon+lexical]" in table and "missing: green" in table
    again = evaluate(path, tmp_path / "out2", with_meteor=False, bootstrap=200, seed=3)
    assert again["columns"] == columns
    other = evaluate(path, tmp_path / "out3", with_meteor=False, bootstrap=200, seed=4)
    assert any(other["columns"][k].get("low") != columns[k].get("low") for k in columns)


class _PerfectJudge:
    """A GREEN judge that always reports 2 matched findings and no error (GREEN = 1)."""

    name = "fake-judge"

    def generate(self, prompts: list[str]) -> list[str]:
        text = (
            "[Explanation]: fine.\n[Clinically Significant Errors]:\n(a) x: 0.\n(b) x: 0.\n(c) x: 0.\n"
            "(d) x: 0.\n(e) x: 0.\n(f) x: 0.\n[Clinically Insignificant Errors]:\n(a) x: 0.\n"
            "[Matched Findings]:\n2. a; b."
        )
        return [text for _ in prompts]


def test_avg_present_with_all_seven(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.jsonl", _rows(GOOD, GOOD))
    summary = evaluate(path, tmp_path / "out", with_meteor=False, bootstrap=50, green_judge=_PerfectJudge())
    assert summary["columns"]["green"]["column"] == "GREEN [fake-judge]"
    assert summary["columns"]["green"]["value"] == pytest.approx(1.0)
    avg = summary["avg"]
    expected = sum(summary["columns"][k]["value"] for k in CLINICAL) / 7
    assert avg["value"] == pytest.approx(expected) and avg["low"] <= avg["value"] <= avg["high"]


def test_metric_subset(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.jsonl", _rows(GOOD, GOOD))
    summary = evaluate(path, tmp_path / "out", metrics=["lexical"], with_meteor=False, bootstrap=20)
    assert "chexbert_micro_f1_14" not in summary["columns"] and "bleu_1" in summary["columns"]
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate(path, tmp_path / "out", metrics=["bogus"], bootstrap=20)


def test_radgraph_takes_its_graphs_from_the_graph_backend(tmp_path: Path) -> None:
    """RadGraph needs graphs: `rate` makes none, so it alone is refused (never a column of zeros);
    with a graph backend named, the RadGraph columns name it and score as that backend does."""
    path = _write(tmp_path / "p.jsonl", _rows(WRONG, GOOD))
    with pytest.raises(ValueError, match="graph_entities=radgraph"):
        evaluate(path, tmp_path / "a", metrics=["radgraph"], entities="rate", bootstrap=20)
    split = evaluate(
        path, tmp_path / "b", metrics=["radgraph"], entities="rate", graph_entities="lexicon", bootstrap=20
    )
    same = evaluate(path, tmp_path / "c", metrics=["radgraph"], bootstrap=20)
    assert split["columns"]["radgraph_partial"]["column"] == "RadGraph partial [lexicon]"
    assert split["columns"]["radgraph_partial"]["value"] == same["columns"]["radgraph_partial"]["value"]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prediction": "a.", "reference": "b."}, "study_id: missing"),
        ({"study_id": "x", "prediction": "a.", "reference": "  "}, "reference: empty reference"),
        ({"study_id": "x", "prediction": 3, "reference": "b."}, "prediction: must be a string"),
        ({"study_id": "x", "prediction": "a."}, "reference: missing reference"),
        ({"study_id": "x", "prediction": "a.", "reference": None}, "reference: missing reference"),
    ],
)
def test_validation_errors(tmp_path: Path, row: dict, message: str) -> None:
    path = _write(tmp_path / "p.jsonl", [{"study_id": "ok", "prediction": "a.", "reference": "a."}, row])
    with pytest.raises(DataError, match=f"p.jsonl:2.*{message}"):
        read_predictions(path)
    rows, rejects = read_predictions(path, on_error="skip")
    assert [r["study_id"] for r in rows] == ["ok"] and len(rejects) == 1 and rejects[0].line == 2


def test_duplicate_and_invalid_utf8(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", _rows(GOOD[:2], GOOD[:2]) + _rows(GOOD[:1], GOOD[:1]))
    with pytest.raises(DataError, match=r"d.jsonl:3 \[s000\]: study_id: duplicate of line 1"):
        read_predictions(path)
    raw = tmp_path / "u.jsonl"
    raw.write_bytes(b'{"study_id": "a", "prediction": "x.", "reference": "y."}\n{"study_id": "\xff"}\n')
    with pytest.raises(DataError, match=r"u\.jsonl:2: line: invalid UTF-8"):
        read_predictions(raw)
    rows, rejects = read_predictions(raw, on_error="skip")
    assert len(rows) == 1 and "UTF-8" in rejects[0].reason


def test_compare_with_itself(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.jsonl", _rows(WRONG, GOOD))
    result = compare(path, path, metrics=["chexbert", "radgraph", "ratescore", "lexical"], n_shuffles=200)
    assert result["n_shared"] == len(GOOD) and result["only_in_a"] == result["only_in_b"] == 0
    for entry in result["metrics"].values():
        if "missing" in entry:
            continue
        assert entry["difference"] == 0 and entry["p_value"] == 1.0


def test_compare_good_vs_bad(tmp_path: Path) -> None:
    refs = (GOOD * 5)[:30]
    good = _write(
        tmp_path / "a.jsonl",
        [*_rows(refs, refs), {"study_id": "extra", "prediction": "a.", "reference": "b."}],
    )
    bad = _write(tmp_path / "b.jsonl", _rows((WRONG * 5)[:30], refs))
    result = compare(good, bad, metrics=["chexbert"], n_shuffles=1000)
    micro = result["metrics"]["chexbert_micro_f1_14"]
    assert result["n_shared"] == 30 and result["only_in_a"] == 1 and result["only_in_b"] == 0
    assert micro["a"] == pytest.approx(1.0) and micro["difference"] > 0 and micro["p_value"] < 0.05


def test_compare_nothing_shared(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.jsonl", _rows(GOOD[:1], GOOD[:1], prefix="a"))
    b = _write(tmp_path / "b.jsonl", _rows(GOOD[:1], GOOD[:1], prefix="b"))
    with pytest.raises(ValueError, match="share no study_id"):
        compare(a, b, metrics=["lexical"], n_shuffles=10)


@pytest.mark.skipif(meteor_unavailable_reason() is not None, reason="METEOR needs Java and pycocoevalcap")
def test_meteor_column_when_available(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.jsonl", _rows(WRONG, GOOD))
    summary = evaluate(path, tmp_path / "out", metrics=["lexical"], bootstrap=50)
    meteor = summary["columns"]["meteor"]
    assert meteor["column"] == "METEOR [meteor-1.5]" and 0 < meteor["value"] < 1
    assert meteor["low"] <= meteor["value"] <= meteor["high"]
