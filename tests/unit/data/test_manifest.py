"""Manifests: round trip, validation messages naming file, line and field, the skip policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from editgrpo.data.manifest import (
    DataError,
    RejectLog,
    read_manifest,
    resolve_image_path,
    write_manifest,
    write_rejects,
)
from editgrpo.data.schema import Image, Prior, Study, canonical_view
from editgrpo.data.summary import summarize


def _study(study_id: str = "s1", **changes) -> Study:
    base = dict(
        study_id=study_id,
        dataset="fixture",
        split="train",
        images=(Image("images/a.png", "PA", "a"), Image("/abs/b.png", "LATERAL")),
        patient_id="p1",
        date="2020-01-02",
        indication="Cough.",
        findings="Lungs are clear.",
        impression="Normal.",
        prior=Prior("s0", (Image("images/p.png", "AP"),), "2019-12-01T10:00:00", "Old findings.", None),
        labels={"Cardiomegaly": 0, "No Finding": 1},
        meta={"source": "test"},
    )
    base.update(changes)
    return Study(**base)


def test_round_trip(tmp_path: Path) -> None:
    studies = [_study("s1"), _study("s2", prior=None, labels=None, split="test")]
    path = tmp_path / "m.jsonl"
    assert write_manifest(path, studies) == 2
    loaded, rejects = read_manifest(path)
    assert loaded == studies and rejects == []


def test_relative_image_paths_resolve_against_the_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "sub" / "m.jsonl"
    assert resolve_image_path(manifest, "images/a.png") == (tmp_path / "sub" / "images" / "a.png").resolve()
    assert resolve_image_path(manifest, "/abs/b.png") == Path("/abs/b.png")


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"split": "dev"}, "split", "'dev' is not one of train, validate, test"),
        ({"study_id": ""}, "study_id", "is empty"),
        ({"date": "02/01/2020"}, "date", "'02/01/2020' is not an ISO date (YYYY-MM-DD[THH:MM:SS])"),
        ({"images": [{"path": "a.png", "view": "SIDE"}]}, "images[0].view", "'SIDE' is not one of PA, AP"),
        ({"images": [{"view": "PA"}]}, "images[0].path", "is required"),
        ({"labels": {"Edema": 2}}, "labels.Edema", "2 is not 1, 0 or -1"),
        ({"prior": {"study_id": "x", "date": "2020-13-01"}}, "prior.date", "'2020-13-01' is not an ISO date"),
        ({"findngs": "x"}, "findngs", "is not a study field"),
        ({"findings": 3}, "findings", "must be a string, got int"),
    ],
)
def test_bad_fields_name_file_line_and_field(tmp_path: Path, change: dict, field: str, reason: str) -> None:
    good = _study("s1").to_dict()
    bad = {**_study("s2").to_dict(), **change}
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(bad) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_manifest(path)
    assert str(err.value).startswith(f"{path}:3")
    assert f": {field}: {reason}" in str(err.value)
    studies, rejects = read_manifest(path, on_error="skip")
    assert [s.study_id for s in studies] == ["s1"]
    assert [(r.line, r.field) for r in rejects] == [(3, field)]


def test_invalid_json_and_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    row = json.dumps(_study("s1").to_dict())
    path.write_text(row + "\n{not json\n" + row + "\n", encoding="utf-8")
    studies, rejects = read_manifest(path, on_error="skip")
    assert len(studies) == 1
    assert [(r.line, r.field, r.reason.split(":")[0]) for r in rejects] == [
        (2, "(json)", "invalid JSON"),
        (3, "study_id", "duplicate of line 1"),
    ]
    with pytest.raises(DataError, match="manifest not found"):
        read_manifest(tmp_path / "none.jsonl")


def test_reject_log_policies(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"^f\.csv:7 \[r1\]: image: missing image file x\.png \(use --on-error skip"
    ):
        RejectLog("fail").error("f.csv", 7, "image", "missing image file x.png", "r1")
    log = RejectLog("skip")
    log.error("f.csv", 7, "image", "missing image file x.png", "r1")
    log.filtered("f.csv", 9, "images", "7 images > max_images 6", "r2")
    assert log.counts() == {"error": 1, "filtered": 1}
    lines = write_rejects(tmp_path / "r.jsonl", log.rejects).read_text().splitlines()
    assert json.loads(lines[1]) == {
        "source": "f.csv",
        "line": 9,
        "field": "images",
        "reason": "7 images > max_images 6",
        "record_id": "r2",
        "kind": "filtered",
    }
    with pytest.raises(ValueError, match="on_error must be one of fail, skip"):
        RejectLog("ignore")


def test_views_and_sections() -> None:
    assert [canonical_view(v) for v in ("PA", "ap", "LL", "Lateral", "AP AXIAL", None, "")] == [
        "PA",
        "AP",
        "LATERAL",
        "LATERAL",
        "OTHER",
        "UNKNOWN",
        "UNKNOWN",
    ]
    study = _study()
    assert study.section("findings_impression") == "Lungs are clear.\nNormal."
    with pytest.raises(ValueError, match="valid: findings, impression, findings_impression"):
        study.section("history")


def test_summary_counts() -> None:
    log = RejectLog("skip")
    log.error("a", 1, "image", "missing image file /x/1.png")
    log.error("a", 2, "image", "missing image file /x/2.png")
    studies = [_study("s1"), _study("s2", prior=None, split="test", images=())]
    summary = summarize(studies, log.rejects)
    assert summary["per_split"] == {"train": 1, "validate": 0, "test": 1}
    assert summary["with_prior_pct"] == 50.0 and summary["images_per_study"] == 1.0
    assert summary["rejected"] == 2 and summary["reject_reasons"] == {"error: image: missing image file": 2}
