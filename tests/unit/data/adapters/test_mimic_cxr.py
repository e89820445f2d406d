"""The MIMIC-CXR-JPG adapter on a small tree in the published layout, written into tmp_path.

Report texts are our own; images are 32x32 grayscale JPEGs. The metadata rows below are the
fixture: line numbers in messages are their index + 2 (the header is line 1).
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import pytest
from PIL import Image as PILImage

from editgrpo.data.adapters.mimic_cxr import prepare
from editgrpo.data.manifest import DataError, RejectLog
from editgrpo.errors import UserError

META_HEADER = [
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]

# (dicom_id, subject_id, study_id, ViewPosition, StudyDate, StudyTime, split)
# Subject 10000001 has three studies whose ids do not follow time: 55000000 (08:00) and 51000000
# (14:30:15.5) on the same day, then 52000000 ("91500.0" = 09:15:00, leading zero lost as in the
# release) two months later.
ROWS: list[tuple[str, ...]] = [
    ("d-early-pa", "10000001", "55000000", "PA", "21800506", "80000.0", "train"),  # line 2
    ("d-early-lat", "10000001", "55000000", "LATERAL", "21800506", "80000.0", "train"),  # line 3
    ("d-late-ap", "10000001", "51000000", "AP", "21800506", "143015.5", "train"),  # line 4
    ("d-july-pa", "10000001", "52000000", "PA", "21800701", "91500.0", "train"),  # line 5
    ("d-val-ap", "11000002", "56000000", "AP", "21900101", "120000", "validate"),  # line 6
    ("d-test-ll", "12000003", "57000000", "LL", "21950303", "235959.999", "test"),  # line 7
    ("d-test-none", "12000003", "57000000", "", "21950303", "235959.999", "test"),  # line 8
]

LINE = {row[0]: index + 2 for index, row in enumerate(ROWS)}

REPORT = """\
                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  Adult with {indication}.

 COMPARISON:  None.

 FINDINGS:

 The heart is of normal size. The lungs
 are clear without focal opacity.

 IMPRESSION:

 {impression}
"""

REPORTS: dict[str, str] = {
    "55000000": REPORT.format(indication="cough", impression="No acute process in study early."),
    "51000000": REPORT.format(indication="fever", impression="No acute process in study late."),
    "52000000": REPORT.format(indication="dyspnea", impression="No acute process in study july."),
    "56000000": REPORT.format(indication="chest pain", impression="Normal chest."),
    "57000000": " IMPRESSION:  Stable appearance.\n",
}


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def build_tree(
    root: Path,
    rows: list[tuple[str, ...]] = ROWS,
    reports: dict[str, str] | None = None,
    *,
    gz: bool = False,
    reports_root: Path | None = None,
    meta_header: list[str] = META_HEADER,
) -> Path:
    """Write metadata and split tables, one JPEG per row and one report per study."""
    reports = REPORTS if reports is None else reports
    suffix = ".csv.gz" if gz else ".csv"
    meta_rows = []
    for dicom_id, subject_id, study_id, view, date, time, _ in rows:
        values = {
            "dicom_id": dicom_id,
            "subject_id": subject_id,
            "study_id": study_id,
            "PerformedProcedureStepDescription": "CHEST (PA AND LAT)",
            "ViewPosition": view,
            "Rows": "32",
            "Columns": "32",
            "StudyDate": date,
            "StudyTime": time,
            "ProcedureCodeSequence_CodeMeaning": "CHEST (PA AND LAT)",
            "ViewCodeSequence_CodeMeaning": "postero-anterior",
            "PatientOrientationCodeSequence_CodeMeaning": "Erect",
        }
        meta_rows.append([values[name] for name in meta_header])
    root.mkdir(parents=True, exist_ok=True)
    _write_csv(root / f"mimic-cxr-2.0.0-metadata{suffix}", meta_header, meta_rows)
    _write_csv(
        root / f"mimic-cxr-2.0.0-split{suffix}",
        ["dicom_id", "study_id", "subject_id", "split"],
        [[d, st, su, split] for d, su, st, *_, split in rows],
    )
    for dicom_id, subject_id, study_id, *_ in rows:
        folder = root / "files" / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}"
        folder.mkdir(parents=True, exist_ok=True)
        PILImage.new("L", (32, 32), color=100).save(folder / f"{dicom_id}.jpg", "JPEG")
    report_files = (reports_root or root) / "files"
    subjects = {study_id: subject_id for _, subject_id, study_id, *_ in rows}
    for study_id, text in reports.items():
        subject_id = subjects.get(study_id)
        if subject_id is None:  # a report for a study left out of ``rows``
            continue
        folder = report_files / f"p{subject_id[:2]}" / f"p{subject_id}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"s{study_id}.txt").write_text(text, encoding="utf-8")
    return root


def image_path(root: Path, dicom_id: str) -> Path:
    _, subject_id, study_id, *_ = next(row for row in ROWS if row[0] == dicom_id)
    return root / "files" / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}" / f"{dicom_id}.jpg"


def by_id(studies):
    return {s.study_id: s for s in studies}


# --- happy path ---------------------------------------------------------------------------------


def test_studies_images_views_sections_splits(tmp_path: Path) -> None:
    root = build_tree(tmp_path / "mimic")
    log = RejectLog("fail")
    studies = prepare(root, log=log)
    assert [s.study_id for s in studies] == ["51000000", "52000000", "55000000", "56000000", "57000000"]
    assert log.rejects == []
    early = by_id(studies)["55000000"]
    assert early.dataset == "mimic-cxr"
    assert early.patient_id == "10000001"
    assert early.split == "train"
    assert early.date == "2180-05-06"
    assert early.meta == {"study_datetime": "2180-05-06T08:00:00"}
    assert [(i.image_id, i.view) for i in early.images] == [("d-early-pa", "PA"), ("d-early-lat", "LATERAL")]
    for image in early.images:
        assert Path(image.path).is_absolute() and Path(image.path).is_file()
    assert early.images[0].path == str(image_path(root.resolve(), "d-early-pa"))
    assert early.findings == "The heart is of normal size. The lungs are clear without focal opacity."
    assert early.impression == "No acute process in study early."
    assert early.indication == "Adult with cough."
    assert early.comparison == "None."
    assert early.technique == "CHEST (PA AND LAT)"
    assert by_id(studies)["56000000"].split == "validate"
    last = by_id(studies)["57000000"]
    assert last.split == "test"
    assert [i.view for i in last.images] == ["LATERAL", "UNKNOWN"]
    assert last.findings is None and last.impression == "Stable appearance."
    assert last.meta == {"study_datetime": "2195-03-03T23:59:59.999000"}


def test_prior_is_the_latest_earlier_study_by_date_and_time(tmp_path: Path) -> None:
    studies = by_id(prepare(build_tree(tmp_path), log=RejectLog()))
    # Same day: 55000000 at 08:00 precedes 51000000 at 14:30 although its id is larger.
    assert studies["55000000"].prior is None
    late = studies["51000000"].prior
    assert late is not None and late.study_id == "55000000"
    assert late.date == "2180-05-06"
    assert [i.image_id for i in late.images] == ["d-early-pa", "d-early-lat"]
    assert late.impression == "No acute process in study early."
    assert late.findings == studies["55000000"].findings
    # "91500.0" is 09:15, two months later: its prior is the afternoon study, not the morning one.
    july = studies["52000000"].prior
    assert july is not None and july.study_id == "51000000"
    assert studies["56000000"].prior is None and studies["57000000"].prior is None


def test_studies_at_the_same_instant_are_not_each_others_prior(tmp_path: Path) -> None:
    rows = [*ROWS[:3], ("d-twin", "10000001", "58000000", "AP", "21800506", "143015.5", "train")]
    reports = {**REPORTS, "58000000": REPORT.format(indication="a twin", impression="Twin.")}
    studies = by_id(prepare(build_tree(tmp_path, rows, reports), log=RejectLog()))
    assert studies["51000000"].prior.study_id == "55000000"
    assert studies["58000000"].prior.study_id == "55000000"


def test_gzipped_tables_and_a_separate_reports_root(tmp_path: Path) -> None:
    reports_root = tmp_path / "mimic-cxr-reports"
    root = build_tree(tmp_path / "jpg", gz=True, reports_root=reports_root)
    studies = prepare(root, log=RejectLog(), reports_root=reports_root)
    assert len(studies) == 5
    # reports_root may also name the files/ folder itself.
    again = prepare(root, log=RejectLog(), reports_root=reports_root / "files")
    assert [s.to_dict() for s in again] == [s.to_dict() for s in studies]


def test_check_images_none_skips_the_file_checks(tmp_path: Path) -> None:
    root = build_tree(tmp_path)
    image_path(root, "d-val-ap").unlink()
    studies = by_id(prepare(root, log=RejectLog(), check_images="none"))
    assert studies["56000000"].images[0].image_id == "d-val-ap"


# --- missing files and columns: DataError whatever on_error says ----------------------------------


@pytest.mark.parametrize("name", ["metadata", "split"])
def test_missing_table_names_the_expected_path(tmp_path: Path, name: str) -> None:
    root = build_tree(tmp_path)
    (root / f"mimic-cxr-2.0.0-{name}.csv").unlink()
    with pytest.raises(
        DataError, match=rf"mimic-cxr-2\.0\.0-{name}\.csv: not found \(nor mimic-cxr-2\.0\.0-{name}"
    ):
        prepare(root, log=RejectLog("skip"))


def test_missing_column_names_the_file_and_the_columns(tmp_path: Path) -> None:
    header = [name for name in META_HEADER if name != "StudyTime"]
    root = build_tree(tmp_path, meta_header=header)
    with pytest.raises(DataError) as info:
        prepare(root, log=RejectLog("skip"))
    message = str(info.value)
    assert "mimic-cxr-2.0.0-metadata.csv: missing required column(s) StudyTime" in message
    assert "required: dicom_id, subject_id, study_id, ViewPosition, StudyDate, StudyTime" in message


def test_bad_options_list_the_valid_values(tmp_path: Path) -> None:
    root = build_tree(tmp_path)
    with pytest.raises(UserError, match="check_images: 'decode' is not one of none, exists, open"):
        prepare(root, log=RejectLog(), check_images="decode")
    with pytest.raises(UserError, match="max_images: 0 must be a positive integer or None"):
        prepare(root, log=RejectLog(), max_images=0)


# --- bad records: fail raises with file:line, skip logs a Reject ---------------------------------


def test_missing_image(tmp_path: Path) -> None:
    root = build_tree(tmp_path)
    missing = image_path(root, "d-early-lat")
    missing.unlink()
    line = LINE["d-early-lat"]
    with pytest.raises(DataError, match=rf"metadata\.csv:{line} \[d-early-lat\]: image: missing image file"):
        prepare(root, log=RejectLog("fail"))
    log = RejectLog("skip")
    studies = by_id(prepare(root, log=log))
    [reject] = log.rejects
    assert (reject.line, reject.field, reject.record_id, reject.kind) == (
        line,
        "image",
        "d-early-lat",
        "error",
    )
    assert reject.reason == f"missing image file {missing.resolve()}"
    # The study keeps its other image; the next study's prior shows the same images.
    assert [i.image_id for i in studies["55000000"].images] == ["d-early-pa"]
    assert [i.image_id for i in studies["51000000"].prior.images] == ["d-early-pa"]


def test_study_without_any_usable_image_is_rejected(tmp_path: Path) -> None:
    root = build_tree(tmp_path)
    image_path(root, "d-val-ap").unlink()
    log = RejectLog("skip")
    studies = by_id(prepare(root, log=log))
    assert "56000000" not in studies
    assert [(r.field, r.reason, r.line) for r in log.rejects][1] == (
        "images",
        "no usable image left in the study",
        LINE["d-val-ap"],
    )


def test_unreadable_image_is_caught_by_open_only(tmp_path: Path) -> None:
    root = build_tree(tmp_path)
    image_path(root, "d-july-pa").write_bytes(b"this is not a jpeg \x00\x01\x02")
    assert len(prepare(root, log=RejectLog("fail"), check_images="exists")) == 5
    with pytest.raises(
        DataError, match=rf"metadata\.csv:{LINE['d-july-pa']} \[d-july-pa\]: image: unreadable image"
    ):
        prepare(root, log=RejectLog("fail"), check_images="open")
    log = RejectLog("skip")
    studies = by_id(prepare(root, log=log, check_images="open"))
    assert "52000000" not in studies
    assert [(r.field, r.line) for r in log.rejects] == [
        ("image", LINE["d-july-pa"]),
        ("images", LINE["d-july-pa"]),
    ]
    assert log.rejects[0].reason.startswith("unreadable image ")


def test_report_without_findings_or_impression(tmp_path: Path) -> None:
    reports = {**REPORTS, "51000000": " INDICATION:  Cough.\n\n COMPARISON:  None.\n"}
    root = build_tree(tmp_path, reports=reports)
    with pytest.raises(DataError, match=r"s51000000\.txt \[51000000\]: report: no findings or impression"):
        prepare(root, log=RejectLog("fail"))
    log = RejectLog("skip")
    studies = by_id(prepare(root, log=log))
    [reject] = log.rejects
    assert (reject.field, reject.reason, reject.line, reject.record_id) == (
        "report",
        "no findings or impression",
        None,
        "51000000",
    )
    assert reject.source.endswith("p10/p10000001/s51000000.txt")
    # A rejected study is never a prior: the July study falls back to the morning one.
    assert "51000000" not in studies
    assert studies["52000000"].prior.study_id == "55000000"


def test_missing_report_file(tmp_path: Path) -> None:
    reports = {k: v for k, v in REPORTS.items() if k != "56000000"}
    root = build_tree(tmp_path, reports=reports)
    with pytest.raises(
        DataError, match=rf"metadata\.csv:{LINE['d-val-ap']} \[56000000\]: report: missing report file"
    ):
        prepare(root, log=RejectLog("fail"))
    log = RejectLog("skip")
    assert "56000000" not in by_id(prepare(root, log=log))
    assert log.rejects[0].reason.endswith("files/p11/p11000002/s56000000.txt")


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        (4, "2180-05-06", "'2180-05-06' is not a date (YYYYMMDD)"),
        (4, "21801306", "'21801306' is not a date (YYYYMMDD)"),
        (5, "256000", "'256000' is not a time (HHMMSS[.ffffff])"),
        (5, "", "'' is not a time (HHMMSS[.ffffff])"),
    ],
)
def test_bad_date_or_time(tmp_path: Path, column: int, value: str, reason: str) -> None:
    rows = list(ROWS)
    index = LINE["d-val-ap"] - 2
    rows[index] = (*rows[index][:column], value, *rows[index][column + 1 :])
    root = build_tree(tmp_path, rows)
    field = "StudyDate" if column == 4 else "StudyTime"
    line = LINE["d-val-ap"]
    with pytest.raises(DataError) as info:
        prepare(root, log=RejectLog("fail"))
    assert f"metadata.csv:{line} [d-val-ap]: {field}: {reason}" in str(info.value)
    assert "--on-error skip" in str(info.value)
    log = RejectLog("skip")
    studies = by_id(prepare(root, log=log))
    assert [(r.line, r.field, r.reason) for r in log.rejects] == [(line, field, reason)]
    assert "56000000" not in studies and len(studies) == 4


def test_split_table_problems(tmp_path: Path) -> None:
    root = build_tree(tmp_path)
    split_csv = root / "mimic-cxr-2.0.0-split.csv"
    lines = split_csv.read_text(encoding="utf-8").splitlines()
    lines[LINE["d-val-ap"] - 1] = "d-val-ap,56000000,11000002,val"  # not a schema split name
    del lines[LINE["d-test-none"] - 1]  # this image has no split row
    split_csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    log = RejectLog("skip")
    studies = by_id(prepare(root, log=log))
    first, second, third = log.rejects
    assert (first.source, first.line, first.field) == (str(split_csv.resolve()), LINE["d-val-ap"], "split")
    assert first.reason == "'val' is not one of train, validate, test"
    assert (second.line, second.field, second.record_id) == (LINE["d-val-ap"], "split", "d-val-ap")
    assert (third.line, third.record_id) == (LINE["d-test-none"], "d-test-none")
    assert third.reason.startswith("dicom_id is not in mimic-cxr-2.0.0-split.csv")
    assert [i.image_id for i in studies["57000000"].images] == ["d-test-ll"]


def test_max_images_filter_is_logged_not_raised(tmp_path: Path) -> None:
    root = build_tree(tmp_path)
    log = RejectLog("fail")
    studies = by_id(prepare(root, log=log, max_images=1))
    assert set(studies) == {"51000000", "52000000", "56000000"}
    assert log.counts() == {"filtered": 2}
    assert [(r.line, r.field, r.reason, r.record_id) for r in log.rejects] == [
        (LINE["d-early-pa"], "images", "2 images, more than max_images=1", "55000000"),
        (LINE["d-test-ll"], "images", "2 images, more than max_images=1", "57000000"),
    ]
    assert studies["51000000"].prior is None
    assert len(prepare(root, log=RejectLog(), max_images=2)) == 5


def test_progress_counts_every_study_through_the_loop(tmp_path: Path) -> None:
    reports = {k: v for k, v in REPORTS.items() if k != "56000000"}
    calls: list[tuple[int, int | None]] = []
    log = RejectLog("skip")
    studies = prepare(
        build_tree(tmp_path, reports=reports),
        log=log,
        progress=lambda done, total: calls.append((done, total)),
    )
    # Five studies go through the loop: four kept, one rejected for its missing report.
    assert (len(studies), [r.record_id for r in log.rejects]) == (4, ["56000000"])
    dones = [done for done, _ in calls]
    assert dones == sorted(dones), calls  # done never decreases
    assert calls[0] == (0, 5) and calls[-1] == (5, 5), calls
    assert {total for _, total in calls} == {5}  # the total is known from the start
