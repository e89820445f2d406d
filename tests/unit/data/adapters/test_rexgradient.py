"""ReXGradient-160K adapter on a small release tree we write ourselves (report text is ours)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage

from editgrpo.data.adapters import rexgradient
from editgrpo.data.manifest import DataError, Reject, RejectLog, read_manifest, write_manifest
from editgrpo.errors import UserError

FILES = {"train": "train", "validate": "valid", "test": "test"}


def _image_paths(key: str, n: int) -> list[str]:
    """``ImagePath`` entries as the release writes them: relative to ``metadata/``."""
    return [
        f"../deid_png/{key}/ACC{key}/studies/1.2.{key}/series/1.3/instances/1.4.{i}.png" for i in range(n)
    ]


def _record(key: str, n_images: int = 1, **changes: Any) -> dict[str, Any]:
    record = {
        "PatientID": f"pat-{key}",
        "AccessionNumber": f"ACC{key}",
        "StudyInstanceUid": f"1.2.{key}",
        "StudyDate": "20200102",
        "Indication": "Cough for two days.",
        "Comparison": None,
        "Findings": "The lungs are clear.\nNo pleural effusion.",
        "Impression": "No acute process.",
        "ImagePath": _image_paths(key, n_images),
        "ImageViewPosition": ["PA"] * n_images,
    }
    record.update(changes)
    return record


def _write_png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.new("L", (8, 8), color=128).save(path)


def _write_release(
    root: Path, splits: dict[str, dict[str, dict[str, Any]]], *, fallback: bool = False
) -> Path:
    """``metadata/<split>_metadata_view_position.json`` (or ``<split>_metadata.json``) per split,
    and a tiny PNG for every ``ImagePath``."""
    metadata = root / "metadata"
    metadata.mkdir(parents=True, exist_ok=True)
    pattern = rexgradient.METADATA_FALLBACK_FILE if fallback else rexgradient.METADATA_FILE
    for split, records in splits.items():
        path = metadata / pattern.format(split=FILES[split])
        # allow_nan: the release writes bare NaN for empty sections.
        path.write_text(json.dumps(records, indent=1, allow_nan=True), encoding="utf-8")
        for record in records.values():
            for image in record.get("ImagePath") or []:
                _write_png((metadata / image).resolve())
    return root


def _tree(root: Path) -> Path:
    return _write_release(
        root,
        {
            "train": {
                "t2": _record(
                    "t2",
                    n_images=3,
                    ImageViewPosition=["POSTERO_ANTERIOR", "LL", None],
                    StudyDate=20191231,
                    Comparison="Prior study from 2018.",
                ),
                "t1": _record("t1", n_images=2, ImageViewPosition=["AP", "LATERAL"], Findings=math.nan),
            },
            "validate": {"v1": _record("v1", ImageViewPosition=["N/A"], Impression="None")},
            "test": {"x1": _record("x1"), "x2": _record("x2")},
        },
    )


def _metadata(root: Path, split: str) -> str:
    return str((root / "metadata" / rexgradient.METADATA_FILE.format(split=FILES[split])).resolve())


def test_happy_path_studies_views_sections_splits(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    log = RejectLog("fail")
    studies = rexgradient.prepare(root, log=log)
    assert log.rejects == []
    assert [s.study_id for s in studies] == ["t1", "t2", "v1", "x1", "x2"]
    by_id = {s.study_id: s for s in studies}
    assert {s.study_id: s.split for s in studies} == {
        "t1": "train",
        "t2": "train",
        "v1": "validate",
        "x1": "test",
        "x2": "test",
    }
    t2 = by_id["t2"]
    assert [i.view for i in t2.images] == ["PA", "LATERAL", "UNKNOWN"]
    assert all(Path(i.path).is_absolute() and Path(i.path).is_file() for i in t2.images)
    assert t2.images[0].path == str(
        tmp_path.resolve() / "deid_png/t2/ACCt2/studies/1.2.t2/series/1.3/instances/1.4.0.png"
    )
    assert t2.images[0].image_id == "1.4.0"
    assert t2.date == "2019-12-31"  # StudyDate as a number
    assert t2.patient_id == "pat-t2"
    assert t2.findings == "The lungs are clear. No pleural effusion."  # wrapped line joined
    assert t2.impression == "No acute process."
    assert t2.indication == "Cough for two days."
    assert t2.comparison == "Prior study from 2018."
    assert t2.prior is None
    assert t2.meta == {"study_instance_uid": "1.2.t2", "accession_number": "ACCt2"}
    assert t2.dataset == "rexgradient"
    # NaN findings with an impression is a usable study; "None" impression counts as empty.
    assert by_id["t1"].findings is None and by_id["t1"].impression == "No acute process."
    assert [i.view for i in by_id["t1"].images] == ["AP", "LATERAL"]
    assert by_id["v1"].impression is None and by_id["v1"].images[0].view == "UNKNOWN"
    assert by_id["x1"].date == "2020-01-02" and by_id["x1"].comparison is None

    # The studies pass the manifest's own validation unchanged.
    write_manifest(tmp_path / "out" / "m.jsonl", studies)
    assert read_manifest(tmp_path / "out" / "m.jsonl") == (studies, [])


def test_plain_metadata_file_is_used_when_the_view_position_file_is_absent(tmp_path: Path) -> None:
    root = _write_release(tmp_path, {"test": {"x1": _record("x1")}}, fallback=True)
    studies = rexgradient.prepare(root, log=RejectLog("fail"), splits=("test",))
    assert [s.study_id for s in studies] == ["x1"]


def test_missing_metadata_file_names_the_expected_path(tmp_path: Path) -> None:
    root = _write_release(tmp_path, {"train": {"t1": _record("t1")}})
    with pytest.raises(DataError) as err:
        rexgradient.prepare(root, log=RejectLog("skip"))
    expected = tmp_path.resolve() / "metadata" / "valid_metadata_view_position.json"
    assert (
        str(err.value)
        == f"{expected}: ReXGradient-160K metadata not found (nor valid_metadata.json beside it)"
    )


def test_bad_options_are_refused(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    with pytest.raises(
        UserError, match=r"^rexgradient option check_images: 'always' is not one of none, exists, open$"
    ):
        rexgradient.prepare(root, log=RejectLog(), check_images="always")
    with pytest.raises(
        UserError, match=r"^rexgradient option max_images: 0 must be a positive integer or None$"
    ):
        rexgradient.prepare(root, log=RejectLog(), max_images=0)
    with pytest.raises(DataError, match="unknown split 'valid'; valid: train, validate, test"):
        rexgradient.prepare(root, log=RejectLog(), splits=("valid",))


def _break(root: Path, case: str) -> dict[str, Any]:
    """Break study x2 (record 2 of the test file) one way; returns the expected reject and
    prepare's options."""
    path = Path(_metadata(root, "test"))
    records = json.loads(path.read_text(encoding="utf-8"))
    record = records["x2"]
    image = (path.parent / record["ImagePath"][0]).resolve()
    options: dict[str, Any] = {}
    if case == "missing image":
        image.unlink()
        field, reason = "image", f"missing image file {image}"
    elif case == "unreadable image":
        image.write_bytes(b"this is not a png")
        options["check_images"] = "open"
        field, reason = "image", f"unreadable image {image}: cannot identify image file"
    elif case == "empty findings":
        record["Findings"], record["Impression"] = "  ", None
        field, reason = "Findings", "no findings or impression"
    elif case == "bad date":
        record["StudyDate"] = "20201345"
        field, reason = "StudyDate", "'20201345' is not a date (YYYYMMDD or YYYY-MM-DD)"
    elif case == "missing key":
        del record["Impression"]
        field, reason = "Impression", "missing required key 'Impression'"
    elif case == "views do not match images":
        record["ImageViewPosition"] = ["PA", "LATERAL"]
        field, reason = "ImageViewPosition", "has 2 entries for 1 images"
    elif case == "no image":
        record["ImagePath"] = []
        field, reason = "ImagePath", "lists no image"
    else:  # pragma: no cover - a typo in the parametrisation
        raise AssertionError(case)
    path.write_text(json.dumps(records), encoding="utf-8")
    return {"field": field, "reason": reason, "options": options}


CASES = [
    "missing image",
    "unreadable image",
    "empty findings",
    "bad date",
    "missing key",
    "views do not match images",
    "no image",
]


@pytest.mark.parametrize("case", CASES)
def test_broken_record_fails_with_file_index_field_reason(tmp_path: Path, case: str) -> None:
    root = _tree(tmp_path)
    broken = _break(root, case)
    with pytest.raises(DataError) as err:
        rexgradient.prepare(root, log=RejectLog("fail"), **broken["options"])
    message = str(err.value)
    assert message.startswith(f"{_metadata(root, 'test')}:2 [x2]: {broken['field']}: {broken['reason']}")
    assert "--on-error skip" in message


@pytest.mark.parametrize("case", CASES)
def test_broken_record_is_skipped_and_listed(tmp_path: Path, case: str) -> None:
    root = _tree(tmp_path)
    broken = _break(root, case)
    log = RejectLog("skip")
    studies = rexgradient.prepare(root, log=log, **broken["options"])
    assert [s.study_id for s in studies] == ["t1", "t2", "v1", "x1"]
    assert len(log.rejects) == 1
    reject = log.rejects[0]
    assert (reject.source, reject.line, reject.field, reject.record_id, reject.kind) == (
        _metadata(root, "test"),
        2,
        broken["field"],
        "x2",
        "error",
    )
    assert reject.reason.startswith(broken["reason"])


def test_studies_with_more_than_six_images_are_filtered_not_failed(tmp_path: Path) -> None:
    root = _write_release(
        tmp_path,
        {"test": {"x6": _record("x6", n_images=6), "x7": _record("x7", n_images=7)}},
    )
    log = RejectLog("fail")  # a filter never raises
    studies = rexgradient.prepare(root, log=log, splits=("test",))
    assert [s.study_id for s in studies] == ["x6"]
    assert log.rejects == [
        Reject(
            _metadata(root, "test"),
            2,
            "ImagePath",
            "7 images > max_images 6 (the paper drops studies with more than 6)",
            "x7",
            kind="filtered",
        )
    ]
    assert log.counts() == {"filtered": 1}
    kept = rexgradient.prepare(root, log=RejectLog("fail"), splits=("test",), max_images=None)
    assert [len(s.images) for s in kept] == [6, 7]


def test_duplicate_study_key_across_splits_is_an_error(tmp_path: Path) -> None:
    root = _write_release(tmp_path, {"train": {"s1": _record("s1")}, "test": {"s1": _record("s1")}})
    log = RejectLog("skip")
    studies = rexgradient.prepare(root, log=log, splits=("train", "test"))
    assert [(s.study_id, s.split) for s in studies] == [("s1", "train")]
    assert [(r.field, r.reason) for r in log.rejects] == [
        ("study id", f"duplicate of {_metadata(root, 'train')}:1")
    ]


def test_check_images_none_trusts_the_paths(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    _break(root, "missing image")
    studies = rexgradient.prepare(root, log=RejectLog("fail"), check_images="none")
    assert "x2" in {s.study_id for s in studies}


def test_progress_counts_the_records_of_every_split_file(tmp_path: Path) -> None:
    calls: list[tuple[int, int | None]] = []
    log = RejectLog("skip")
    studies = rexgradient.prepare(
        _tree(tmp_path), log=log, max_images=2, progress=lambda done, total: calls.append((done, total))
    )
    # Five records in three files go through one loop: t2 (three images) is filtered, four are kept.
    assert (len(studies), [(r.kind, r.record_id) for r in log.rejects]) == (4, [("filtered", "t2")])
    dones = [done for done, _ in calls]
    assert dones == sorted(dones), calls  # done never decreases
    assert calls[0] == (0, 5) and calls[-1] == (5, 5), calls
    assert {total for _, total in calls} == {5}  # the total is known from the start
