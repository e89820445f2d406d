"""PadChest-GR adapter on a small release tree we write ourselves (sentences are ours)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage

from editgrpo.data.adapters import padchest_gr
from editgrpo.data.manifest import DataError, RejectLog, read_manifest, write_manifest
from editgrpo.errors import UserError

# The published master-table header (one row per study and finding sentence).
MASTER_HEADER = [
    "StudyID",
    "ImageID",
    "label",
    "boxes_count",
    "extra_boxes_count",
    "locations",
    "prior_study",
    "progression_status",
    "prior_imageID",
    "sentence_en",
    "sentence_es",
    "study_is_benchmark",
    "study_is_validation",
    "split",
    "PatientID",
    "patient_is_benchmark",
    "PatientBirth",
    "PatientSex_DICOM",
    "StudyDate_DICOM",
    "StudyDate",
    "PatientAge",
    "label_group",
    "Year",
]
PADCHEST_HEADER = [
    "ImageID",
    "ImageDir",
    "StudyDate_DICOM",
    "StudyID",
    "PatientID",
    "ViewPosition_DICOM",
    "Projection",
]


def _finding(text: str | None, abnormal: bool = True, **extra: Any) -> dict[str, Any]:
    finding: dict[str, Any] = {"sentence_en": text, "sentence_es": "texto", "abnormal": abnormal}
    if abnormal:
        finding.update(boxes=[[0.1, 0.2, 0.3, 0.4]], labels=["nodule"], locations=["right upper lobe"])
    finding.update(extra)
    return finding


def _study(study_id: str, findings: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "StudyID": study_id,
        "ImageID": f"{study_id}_img.png",
        "findings": findings if findings is not None else [_finding("Small nodule in the right upper lobe.")],
    }


def _row(
    study: dict[str, Any], patient: str, date: str, split: str = "train", prior: str = ""
) -> dict[str, str]:
    return {
        "StudyID": study["StudyID"],
        "ImageID": study["ImageID"],
        "label": "nodule",
        "prior_study": "True" if prior else "False",
        "prior_imageID": prior,
        "split": split,
        "PatientID": patient,
        "StudyDate_DICOM": date,
        "study_is_benchmark": "True",
    }


def _write_png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.new("L", (8, 8), color=100).save(path)


def _write_csv(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, restval="")
        writer.writeheader()
        writer.writerows(rows)


def _write_release(
    root: Path,
    studies: list[dict[str, Any]],
    rows: list[dict[str, str]],
    *,
    prior_images: tuple[str, ...] = (),
    table: list[dict[str, str]] | None = None,
) -> Path:
    """The JSON, the master table, a PNG per study (nested as the archive unpacks), the prior PNGs,
    and optionally the PadChest table."""
    (root / padchest_gr.REPORTS_FILE).write_text(json.dumps(studies, indent=1), encoding="utf-8")
    _write_csv(root / padchest_gr.MASTER_TABLE_FILE, MASTER_HEADER, rows)
    for study in studies:
        if study.get("ImageID"):
            _write_png(root / "Padchest_GR_files" / "PadChest_GR" / study["ImageID"])
    for name in prior_images:
        _write_png(root / "PadChest_GR_progression_prior_studies" / "part1" / name)
    if table is not None:
        _write_csv(root / padchest_gr.PADCHEST_TABLE_FILES[0], PADCHEST_HEADER, table)
    return root


def _tree(root: Path, *, with_table: bool = True) -> Path:
    """Patient A: three studies out of date order (most recent earlier study is the prior).
    Patient B: a release link to an image in the prior-studies folder. Patient C: a release link
    to another PadChest-GR study. Patient D: one study, no prior; it is the one broken in tests."""
    a3 = _study("a3", [_finding("  Cardiomegaly  with   signs of  failure"), _finding(None, abnormal=False)])
    a1 = _study("a1", [_finding("No significant radiological alterations.", abnormal=False)])
    a2 = _study("a2", [_finding("Stable cardiomegaly."), _finding("No pleural effusion", abnormal=False)])
    b1 = _study("b1")
    c1, c0 = _study("c1"), _study("c0", [_finding("Old left basal consolidation.")])
    d1 = _study("d1")
    studies = [a3, a1, a2, b1, c1, c0, d1]
    rows = [
        _row(a3, "A", "20170120"),
        _row(a3, "A", "20170120"),  # a second sentence row of the same study
        _row(a1, "A", "20150301"),
        _row(a2, "A", "20160510"),
        _row(b1, "B", "20150607", split="validation", prior="prior_b.png"),
        _row(c1, "C", "20160101", split="test", prior=c0["ImageID"]),
        _row(c0, "C", "20140101", split="test"),
        _row(d1, "D", "20150101", split="test"),
    ]
    table = None
    if with_table:
        table = [
            {"ImageID": "prior_b.png", "StudyID": "pb", "PatientID": "B", "StudyDate_DICOM": "20140101", "Projection": "AP_horizontal"},
            {"ImageID": b1["ImageID"], "StudyID": "b1", "PatientID": "B", "StudyDate_DICOM": "20150607", "Projection": "PA"},
            {"ImageID": a3["ImageID"], "StudyID": "a3", "PatientID": "A", "StudyDate_DICOM": "20170120", "Projection": "AP", "ViewPosition_DICOM": "AP"},
            {"ImageID": "unrelated.png", "StudyID": "zz", "PatientID": "Z", "StudyDate_DICOM": "bad", "Projection": "L"},
        ]  # fmt: skip
    return _write_release(root, studies, rows, prior_images=("prior_b.png",), table=table)


def _paths(root: Path) -> tuple[str, str]:
    return str(root.resolve() / padchest_gr.REPORTS_FILE), str(root.resolve() / padchest_gr.MASTER_TABLE_FILE)


def test_happy_path_findings_views_splits_priors(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    log = RejectLog("fail")
    studies = padchest_gr.prepare(root, log=log)
    assert log.rejects == []
    assert [s.study_id for s in studies] == ["a1", "a2", "a3", "b1", "c0", "c1", "d1"]
    by_id = {s.study_id: s for s in studies}
    assert {s.study_id: s.split for s in studies} == {
        "a1": "train",
        "a2": "train",
        "a3": "train",
        "b1": "validate",
        "c0": "test",
        "c1": "test",
        "d1": "test",
    }
    a3 = by_id["a3"]
    assert a3.dataset == "padchest_gr" and a3.patient_id == "A" and a3.date == "2017-01-20"
    # whitespace collapsed, a period added, the empty sentence left out; no impression section.
    assert a3.findings == "Cardiomegaly with signs of failure."
    assert a3.impression is None
    assert by_id["a2"].findings == "Stable cardiomegaly. No pleural effusion."
    image = a3.images[0]
    assert image.path == str(tmp_path.resolve() / "Padchest_GR_files" / "PadChest_GR" / "a3_img.png")
    assert (image.view, image.image_id) == ("AP", "a3_img.png")
    assert by_id["b1"].images[0].view == "PA"
    assert by_id["d1"].images[0].view == "UNKNOWN"  # not in the PadChest table
    assert a3.meta["sentences"] == [
        {
            "text": "Cardiomegaly with signs of failure.",
            "abnormal": True,
            "boxes": [[0.1, 0.2, 0.3, 0.4]],
            "labels": ["nodule"],
            "locations": ["right upper lobe"],
        }
    ]

    # Same patient, no release link: the most recent earlier study, not the first one.
    assert a3.prior is not None and a3.prior.study_id == "a2"
    assert (a3.prior.date, a3.prior.findings, a3.prior.images) == (
        "2016-05-10",
        by_id["a2"].findings,
        by_id["a2"].images,
    )
    assert by_id["a2"].prior.study_id == "a1"
    assert by_id["a1"].prior is None and by_id["d1"].prior is None
    assert a3.meta["prior_source"] == "patient" and "prior_source" not in by_id["a1"].meta

    # Release link to an image of the prior-studies folder, described by the PadChest table.
    prior_b = by_id["b1"].prior
    assert prior_b is not None and by_id["b1"].meta["prior_source"] == "release"
    assert (prior_b.study_id, prior_b.date, prior_b.findings) == ("pb", "2014-01-01", None)
    expected = tmp_path.resolve() / "PadChest_GR_progression_prior_studies" / "part1" / "prior_b.png"
    assert [(i.path, i.view, i.image_id) for i in prior_b.images] == [(str(expected), "AP", "prior_b.png")]

    # Release link to another PadChest-GR study: that study, with its report.
    prior_c = by_id["c1"].prior
    assert (
        prior_c is not None
        and prior_c.study_id == "c0"
        and prior_c.findings == "Old left basal consolidation."
    )
    assert by_id["c1"].meta["prior_source"] == "release"

    # The studies pass the manifest's own validation unchanged.
    write_manifest(tmp_path / "out" / "m.jsonl", studies)
    assert read_manifest(tmp_path / "out" / "m.jsonl") == (studies, [])


def test_without_the_padchest_table_views_are_unknown_and_priors_named_by_image(tmp_path: Path) -> None:
    root = _tree(tmp_path, with_table=False)
    studies = {s.study_id: s for s in padchest_gr.prepare(root, log=RejectLog("fail"))}
    assert {i.view for s in studies.values() for i in s.images} == {"UNKNOWN"}
    prior_b = studies["b1"].prior
    assert (prior_b.study_id, prior_b.date, prior_b.images[0].view) == ("prior_b", None, "UNKNOWN")


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        (
            padchest_gr.REPORTS_FILE,
            "{root}/grounded_reports_20240819.json: PadChest-GR grounded reports not found",
        ),
        (padchest_gr.MASTER_TABLE_FILE, "{root}/master_table.csv: PadChest-GR master table not found"),
    ],
)
def test_missing_top_level_file_names_the_expected_path(tmp_path: Path, remove: str, message: str) -> None:
    root = _tree(tmp_path)
    (root / remove).unlink()
    with pytest.raises(DataError) as err:
        padchest_gr.prepare(root, log=RejectLog("skip"))
    assert str(err.value) == message.format(root=tmp_path.resolve())


def test_other_release_date_of_the_reports_file_is_found(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    (root / padchest_gr.REPORTS_FILE).rename(root / "grounded_reports_20250101.json")
    assert len(padchest_gr.prepare(root, log=RejectLog("fail"))) == 7


def test_master_table_without_a_required_column_is_refused(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    path = root / padchest_gr.MASTER_TABLE_FILE
    path.write_text(path.read_text(encoding="utf-8").replace("StudyDate_DICOM", "Fecha", 1), encoding="utf-8")
    with pytest.raises(
        DataError, match=r"master_table\.csv: missing column 'StudyDate_DICOM' \(columns: StudyID,"
    ):
        padchest_gr.prepare(root, log=RejectLog("skip"))


def test_bad_options_are_refused(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    with pytest.raises(
        UserError, match=r"^padchest_gr option check_images: 'yes' is not one of none, exists, open$"
    ):
        padchest_gr.prepare(root, log=RejectLog(), check_images="yes")
    with pytest.raises(
        UserError, match=r"^padchest_gr option max_images: -1 must be a positive integer or None$"
    ):
        padchest_gr.prepare(root, log=RejectLog(), max_images=-1)


def _edit_master(path: Path, study_id: str, **changes: str) -> None:
    """Change columns of every master-table row of one study."""
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        if row["StudyID"] == study_id:
            row.update(changes)
    _write_csv(path, MASTER_HEADER, rows)


def _break(root: Path, case: str) -> dict[str, Any]:
    """Break study d1 (record 7 of the JSON, master-table line 9) one way; returns the expected
    reject and prepare's options."""
    reports, master = _paths(root)
    studies = json.loads(Path(reports).read_text(encoding="utf-8"))
    d1 = studies[6]
    image = root.resolve() / "Padchest_GR_files" / "PadChest_GR" / "d1_img.png"
    source, line, options = reports, 7, {}
    if case == "missing image":
        image.unlink()
        field, reason = "image", f"missing image file {root.resolve() / 'Padchest_GR_files' / 'd1_img.png'}"
    elif case == "unreadable image":
        image.write_bytes(b"\x00garbage, not a png")
        options["check_images"] = "open"
        field, reason = "image", f"unreadable image {image}: cannot identify image file"
    elif case == "empty findings":
        d1["findings"] = [_finding("   ", abnormal=False), _finding(None, abnormal=False)]
        field, reason = "findings", "no findings or impression"
    elif case == "no findings list":
        d1["findings"] = []
        field, reason = "findings", "no findings or impression"
    elif case == "missing key":
        del d1["ImageID"]
        field, reason = "ImageID", "missing required key 'ImageID'"
    elif case == "missing sentence key":
        del d1["findings"][0]["sentence_en"]
        field, reason = "findings[0].sentence_en", "missing required key 'sentence_en'"
    elif case == "not in master table":
        _edit_master(Path(master), "d1", StudyID="d9")
        field, reason = "StudyID", "study not in master_table.csv"
    elif case == "bad date":
        _edit_master(Path(master), "d1", StudyDate_DICOM="20151345")
        source, line = master, 9
        field, reason = "StudyDate_DICOM", "'20151345' is not a date (YYYYMMDD)"
    elif case == "bad split":
        _edit_master(Path(master), "d1", split="dev")
        source, line = master, 9
        field, reason = "split", "'dev' is not one of train, validation, test"
    else:  # pragma: no cover - a typo in the parametrisation
        raise AssertionError(case)
    Path(reports).write_text(json.dumps(studies), encoding="utf-8")
    return {"source": source, "line": line, "field": field, "reason": reason, "options": options}


CASES = [
    "missing image",
    "unreadable image",
    "empty findings",
    "no findings list",
    "missing key",
    "missing sentence key",
    "not in master table",
    "bad date",
    "bad split",
]


@pytest.mark.parametrize("case", CASES)
def test_broken_record_fails_with_file_line_field_reason(tmp_path: Path, case: str) -> None:
    root = _tree(tmp_path)
    broken = _break(root, case)
    with pytest.raises(DataError) as err:
        padchest_gr.prepare(root, log=RejectLog("fail"), **broken["options"])
    assert str(err.value).startswith(
        f"{broken['source']}:{broken['line']} [d1]: {broken['field']}: {broken['reason']}"
    )


@pytest.mark.parametrize("case", CASES)
def test_broken_record_is_skipped_and_listed(tmp_path: Path, case: str) -> None:
    root = _tree(tmp_path)
    broken = _break(root, case)
    log = RejectLog("skip")
    studies = padchest_gr.prepare(root, log=log, **broken["options"])
    assert [s.study_id for s in studies] == ["a1", "a2", "a3", "b1", "c0", "c1"]
    assert len(log.rejects) == 1
    reject = log.rejects[0]
    assert (reject.source, reject.line, reject.field, reject.record_id, reject.kind) == (
        broken["source"],
        broken["line"],
        broken["field"],
        "d1",
        "error",
    )
    assert reject.reason.startswith(broken["reason"])


def test_missing_prior_image_rejects_the_study_at_its_master_table_line(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    prior = root.resolve() / "PadChest_GR_progression_prior_studies" / "part1" / "prior_b.png"
    prior.unlink()
    log = RejectLog("skip")
    studies = padchest_gr.prepare(root, log=log)
    assert "b1" not in {s.study_id for s in studies}
    expected = root.resolve() / "PadChest_GR_progression_prior_studies" / "prior_b.png"
    assert [(r.source, r.line, r.field, r.reason, r.record_id) for r in log.rejects] == [
        (_paths(root)[1], 6, "image", f"missing image file {expected}", "b1")
    ]


def test_duplicate_study_in_the_reports_is_an_error(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    reports = Path(_paths(root)[0])
    studies = json.loads(reports.read_text(encoding="utf-8"))
    reports.write_text(json.dumps([*studies, studies[0]]), encoding="utf-8")
    log = RejectLog("skip")
    assert len(padchest_gr.prepare(root, log=log)) == 7
    assert [(r.line, r.field, r.reason, r.record_id) for r in log.rejects] == [
        (8, "StudyID", "duplicate of record 1", "a3")
    ]


def test_bad_date_in_the_padchest_table_is_reported_and_the_prior_keeps_no_date(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    table = root / padchest_gr.PADCHEST_TABLE_FILES[0]
    table.write_text(table.read_text(encoding="utf-8").replace("20140101", "2014-02-30"), encoding="utf-8")
    log = RejectLog("skip")
    studies = {s.study_id: s for s in padchest_gr.prepare(root, log=log)}
    assert studies["b1"].prior.date is None and studies["b1"].prior.study_id == "pb"
    reason = "'2014-02-30' is not a date (YYYYMMDD); the prior keeps no date"
    assert [(r.source, r.line, r.field, r.reason, r.record_id) for r in log.rejects] == [
        (str(table.resolve()), 2, "StudyDate_DICOM", reason, "prior_b.png")
    ]
    with pytest.raises(DataError, match="StudyDate_DICOM: '2014-02-30' is not a date"):
        padchest_gr.prepare(root, log=RejectLog("fail"))


def test_progress_counts_every_report_record_through_the_loop(tmp_path: Path) -> None:
    calls: list[tuple[int, int | None]] = []
    log = RejectLog("skip")
    studies = padchest_gr.prepare(
        _tree(tmp_path), log=log, progress=lambda done, total: calls.append((done, total))
    )
    assert (len(studies), log.rejects) == (7, [])
    dones = [done for done, _ in calls]
    assert dones == sorted(dones), calls  # done never decreases
    assert calls[0] == (0, 7) and calls[-1] == (7, 7), calls
    assert {total for _, total in calls} == {7}  # the total is known from the start
