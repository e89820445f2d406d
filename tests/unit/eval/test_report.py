"""eval/report.py: the offline HTML report of an evaluation folder."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from editgrpo.eval.evaluate import evaluate
from editgrpo.eval.report import per_label_f1, rank_score, worst_examples, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

PREDICTIONS = [
    "Small left pleural effusion. Mild cardiomegaly.",
    "Right lower lobe consolidation. No pneumothorax.",
    "No acute cardiopulmonary process. Lungs are clear.",
    "Moderate pulmonary edema. Bilateral pleural effusions.",
    # The worst study: says the opposite of its reference, with characters HTML must escape.
    "No pneumothorax <normal> & no effusion.",
    "Enlarged cardiac silhouette. No focal consolidation.",
]
REFERENCES = [
    "Small left pleural effusion. Mild cardiomegaly.",
    "Right lower lobe consolidation. No pneumothorax.",
    "No acute cardiopulmonary process. Lungs are clear.",
    "Moderate pulmonary edema. Small bilateral pleural effusions.",
    "Large right pneumothorax. Left pleural effusion.",
    "Enlarged cardiac silhouette. No focal consolidation.",
]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    path = root / "predictions.jsonl"
    rows = [
        {"study_id": f"s{i:03d}", "prediction": p, "reference": r}
        for i, (p, r) in enumerate(zip(PREDICTIONS, REFERENCES, strict=True))
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    out = root / "out"
    evaluate(path, out, with_meteor=False, bootstrap=50)
    return out


def _images(text: str) -> list[bytes]:
    return [
        base64.b64decode(m) for m in re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    ]


def test_report_is_self_contained_and_complete(evaluated: Path) -> None:
    path = write_report(evaluated)
    assert path == evaluated / "report.html" and path.is_file()
    text = path.read_text(encoding="utf-8")
    summary = json.loads((evaluated / "summary.json").read_text(encoding="utf-8"))
    for entry in [*summary["columns"].values(), summary["avg"]]:
        assert html.escape(entry["column"]) in text
    # Missing columns say why (GREEN without a judge, METEOR without the jar, Avg without GREEN).
    assert "missing (no GREEN judge given)" in text
    assert "missing: green" in text
    assert f"cleaning: {summary['clean']}" in text
    # The worst study is listed, escaped.
    assert html.escape(PREDICTIONS[4]) in text
    assert PREDICTIONS[4] not in text
    images = _images(text)
    assert len(images) == 4  # clinical, lexical, CIDEr-D, per-label F1
    assert all(image.startswith(PNG_SIGNATURE) for image in images)
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text and "<link" not in text


def test_worst_ranking_uses_the_clinical_mean() -> None:
    records = [
        {"study_id": "a", "scores": {"chexbert_pair_micro_f1_14": 1.0, "radgraph_partial": 0.5}},
        {"study_id": "b", "scores": {"chexbert_pair_micro_f1_14": None, "ratescore": 0.2, "rouge_l": 0.9}},
        {"study_id": "c", "scores": {"rouge_l": 0.4}},
        {"study_id": "d", "scores": {}},
    ]
    assert rank_score(records[0]) == pytest.approx(0.75)
    assert rank_score(records[1]) == pytest.approx(0.2)  # None left out; ROUGE-L ignored when clinical exists
    assert rank_score(records[2]) == pytest.approx(0.4)  # fallback
    assert rank_score(records[3]) is None
    assert [r["study_id"] for _, r in worst_examples(records, 2)] == ["b", "c"]


def test_per_label_f1_by_hand() -> None:
    zeros = [0] * 14
    # Label 0: tp 1, fp 1, fn 0 -> 2/3. Label 1: fn 1 -> 0. Others: positive nowhere -> None.
    records = [
        {"labels": {"prediction": [1, 0, *zeros[2:]], "reference": [1, 1, *zeros[2:]]}},
        {"labels": {"prediction": [1, *zeros[1:]], "reference": zeros}},
        {"labels": {"prediction": None, "reference": None}},
    ]
    f1 = per_label_f1(records)
    assert f1 is not None
    assert f1[0] == pytest.approx(2 / 3)
    assert f1[1] == 0.0
    assert f1[2:] == [None] * 12
    assert per_label_f1([{"scores": {}}]) is None


def test_report_without_labels_notes_the_missing_chart(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    rows = [
        {"study_id": f"s{i}", "prediction": p, "reference": r}
        for i, (p, r) in enumerate(zip(PREDICTIONS, REFERENCES, strict=True))
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    evaluate(path, tmp_path / "out", metrics=["lexical"], with_meteor=False, bootstrap=20)
    text = write_report(tmp_path / "out", n_worst=2).read_text(encoding="utf-8")
    assert "carries no per-study label vectors" in text
    assert len(_images(text)) == 2  # lexical and CIDEr-D
    assert "2 worst-scoring studies" in text


def test_missing_inputs_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"summary\.json: not found"):
        write_report(tmp_path)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    _chromium() is None,
    reason="no chromium / chromium-browser on PATH for the screenshot check: `make browser` installs "
    "the Debian package when run as root (make test does it first)",
)
def test_report_renders_in_headless_chromium(evaluated: Path, tmp_path: Path) -> None:
    report = write_report(evaluated)
    shot = tmp_path / "report.png"
    command = [
        str(_chromium()),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,2000",
        report.resolve().as_uri(),
    ]
    subprocess.run(command, capture_output=True, timeout=120, check=False)
    assert shot.is_file(), "chromium wrote no screenshot"
    data = shot.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 20_000  # a blank 1200x2000 page compresses to a few kB
