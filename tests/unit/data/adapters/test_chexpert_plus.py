"""The CheXpert Plus adapter on a small tree in the published layout, written into tmp_path.

Report texts are our own; images are 32x32 grayscale JPEGs (or PNGs for the PNG-release option).
Row 4 (study3) has a newline in two cells, so the rows after it start two lines later: the
line numbers in ``LINE`` are those the adapter must report (the header is line 1).
"""

from __future__ import annotations

import csv
from pathlib import Path, PurePosixPath

import pytest
from PIL import Image as PILImage

from editgrpo.data.adapters.chexpert_plus import prepare
from editgrpo.data.manifest import DataError, RejectLog
from editgrpo.errors import UserError

CSV_NAME = "df_chexpert_plus_240401.csv"
HEADER = [
    "path_to_image",
    "path_to_dcm",
    "frontal_lateral",
    "ap_pa",
    "deid_patient_id",
    "patient_report_date_order",
    "report",
    "section_narrative",
    "section_clinical_history",
    "section_history",
    "section_comparison",
    "section_technique",
    "section_procedure_comments",
    "section_findings",
    "section_impression",
    "section_end_of_impression",
    "section_summary",
    "section_accession_number",
    "age",
    "sex",
    "race",
    "ethnicity",
    "interpreter_needed",
    "insurance_type",
    "recent_bmi",
    "deceased",
    "split",
]

P1 = "train/patient00001"
P2 = "valid/patient64541"


def row(
    path: str, frontal_lateral: str, ap_pa: str, patient: str, order: str, **extra: str
) -> dict[str, str]:
    study = PurePosixPath(path).parent.name
    values = {
        "path_to_image": path,
        "path_to_dcm": str(PurePosixPath(path).with_suffix(".dcm")),
        "frontal_lateral": frontal_lateral,
        "ap_pa": ap_pa,
        "deid_patient_id": patient,
        "patient_report_date_order": order,
        "report": f"NARRATIVE: Invented report for {patient} {study}.",
        "section_clinical_history": f"Shortness of breath, {study}.",
        "section_history": "Prior surgery.",
        "section_comparison": "None.",
        "section_technique": "Two views of the chest.",
        "section_findings": f"The lungs are clear in {study}. No effusion.",
        "section_impression": f"Normal chest {study}.",
        "section_summary": "nan",
        "age": "60",
        "sex": "Female",
        "split": "train",
    }
    values.update(extra)
    return values


# path -> line where its record starts.
ROWS: list[dict[str, str]] = [
    row(f"{P1}/study1/view1_frontal.jpg", "Frontal", "PA", "patient00001", "1"),  # line 2
    row(f"{P1}/study1/view2_lateral.jpg", "Lateral", "", "patient00001", "1"),  # line 3
    row(f"{P1}/study2/view1_frontal.jpg", "Frontal", "AP", "patient00001", "3"),  # line 4
    row(  # lines 5-7: the report and impression cells hold a newline each
        f"{P1}/study3/view1_frontal.jpg",
        "Frontal",
        "AP",
        "patient00001",
        "2.0",
        report="NARRATIVE:\nInvented two-line report.",
        section_impression="1. Normal chest study3.\n2. No change.",
    ),
    row(
        f"{P2}/study1/view1_frontal.jpg",
        "Frontal",
        "",
        "patient64541",
        "1",
        split="valid",
        section_findings="",
        section_clinical_history="nan",
    ),  # line 8
    row(
        f"{P2}/study1/view2_lateral.jpg",
        "Lateral",
        "LL",
        "patient64541",
        "1",
        split="valid",
        section_findings="",
        section_clinical_history="nan",
    ),  # line 9
]
LINE = {r["path_to_image"]: n for r, n in zip(ROWS, [2, 3, 4, 5, 8, 9], strict=True)}


def build_tree(
    root: Path,
    rows: list[dict[str, str]] = ROWS,
    *,
    header: list[str] = HEADER,
    png_root: Path | None = None,
) -> Path:
    """Write the report table and one image per row (JPEG at the given path, or PNG under png_root)."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / CSV_NAME).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    for values in rows:
        relative = Path(values["path_to_image"])
        target = root / relative if png_root is None else png_root / relative.with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        PILImage.new("L", (32, 32), color=90).save(target)
    return root


def by_id(studies):
    return {s.study_id: s for s in studies}


# --- happy path ---------------------------------------------------------------------------------


def test_studies_images_views_sections_splits(tmp_path: Path) -> None:
    root = build_tree(tmp_path / "chexpert-plus")
    log = RejectLog("fail")
    studies = prepare(root, log=log)
    assert log.rejects == []
    assert [s.study_id for s in studies] == [
        "patient00001_study1",
        "patient00001_study2",
        "patient00001_study3",
        "patient64541_study1",
    ]
    first = studies[0]
    assert first.dataset == "chexpert-plus"
    assert first.patient_id == "patient00001"
    assert first.split == "train"
    assert first.date is None
    assert first.meta == {"patient_report_date_order": 1}
    assert [(i.image_id, i.view) for i in first.images] == [
        (f"{P1}/study1/view1_frontal.jpg", "PA"),
        (f"{P1}/study1/view2_lateral.jpg", "LATERAL"),
    ]
    for image in first.images:
        assert Path(image.path).is_absolute() and Path(image.path).is_file()
    assert first.images[0].path == str(root.resolve() / P1 / "study1" / "view1_frontal.jpg")
    assert first.findings == "The lungs are clear in study1. No effusion."
    assert first.impression == "Normal chest study1."
    assert by_id(studies)["patient00001_study3"].impression == "1. Normal chest study3.\n2. No change."
    assert first.indication == "Shortness of breath, study1."
    assert first.history == "Prior surgery."
    assert first.comparison == "None."
    assert first.technique == "Two views of the chest."
    assert by_id(studies)["patient00001_study3"].meta == {"patient_report_date_order": 2}
    valid = by_id(studies)["patient64541_study1"]
    assert valid.split == "validate"
    # A frontal without AP/PA is OTHER; ap_pa "LL" on a lateral row stays LATERAL.
    assert [i.view for i in valid.images] == ["OTHER", "LATERAL"]
    assert valid.findings is None and valid.indication is None
    assert valid.impression == "Normal chest study1."


def test_prior_is_the_next_lower_report_rank(tmp_path: Path) -> None:
    studies = by_id(prepare(build_tree(tmp_path), log=RejectLog()))
    # Ranks: study1 = 1, study3 = 2, study2 = 3 (folder numbers do not give the order).
    assert studies["patient00001_study1"].prior is None
    prior3 = studies["patient00001_study3"].prior
    assert prior3 is not None and prior3.study_id == "patient00001_study1"
    assert [i.view for i in prior3.images] == ["PA", "LATERAL"]
    assert prior3.date is None
    assert prior3.impression == studies["patient00001_study1"].impression
    prior2 = studies["patient00001_study2"].prior
    assert prior2 is not None and prior2.study_id == "patient00001_study3"
    assert prior2.findings == "The lungs are clear in study3. No effusion."
    assert studies["patient64541_study1"].prior is None


def test_equal_ranks_are_not_each_others_prior(tmp_path: Path) -> None:
    rows = [*ROWS, row(f"{P1}/study4/view1_frontal.jpg", "Frontal", "PA", "patient00001", "3")]
    studies = by_id(prepare(build_tree(tmp_path, rows), log=RejectLog()))
    assert studies["patient00001_study2"].prior.study_id == "patient00001_study3"
    assert studies["patient00001_study4"].prior.study_id == "patient00001_study3"


def test_png_release_via_images_root_and_suffix(tmp_path: Path) -> None:
    root = build_tree(tmp_path, png_root=tmp_path / "PNG")
    with pytest.raises(DataError, match="missing image file"):
        prepare(root, log=RejectLog())
    studies = prepare(
        root, log=RejectLog(), images_root=root / "PNG", image_suffix=".png", check_images="open"
    )
    assert studies[0].images[0].path == str((root / "PNG" / P1 / "study1" / "view1_frontal.png").resolve())
    assert studies[0].images[0].image_id == f"{P1}/study1/view1_frontal.jpg"


# --- missing files and columns: DataError whatever on_error says ----------------------------------


def test_missing_report_table_names_the_expected_path(tmp_path: Path) -> None:
    root = build_tree(tmp_path)
    (root / CSV_NAME).unlink()
    with pytest.raises(DataError, match=rf"{CSV_NAME}: not found; is .* the CheXpert Plus root\?"):
        prepare(root, log=RejectLog("skip"))


def test_missing_column_names_the_file_and_the_columns(tmp_path: Path) -> None:
    root = build_tree(tmp_path, header=[h for h in HEADER if h not in ("ap_pa", "section_impression")])
    with pytest.raises(DataError) as info:
        prepare(root, log=RejectLog("skip"))
    message = str(info.value)
    assert f"{CSV_NAME}: missing required column(s) ap_pa, section_impression" in message
    assert (
        "required: path_to_image, frontal_lateral, ap_pa, deid_patient_id, patient_report_date_order"
        in message
    )


def test_bad_options_list_the_valid_values(tmp_path: Path) -> None:
    root = build_tree(tmp_path)
    with pytest.raises(UserError, match="check_images: 'all' is not one of none, exists, open"):
        prepare(root, log=RejectLog(), check_images="all")
    with pytest.raises(UserError, match=r"image_suffix: 'png' must look like '\.png'"):
        prepare(root, log=RejectLog(), image_suffix="png")


# --- bad records: fail raises with file:line, skip logs a Reject ---------------------------------


def test_missing_image_line_counts_multiline_reports(tmp_path: Path) -> None:
    root = build_tree(tmp_path)
    name = f"{P2}/study1/view2_lateral.jpg"
    (root / name).unlink()
    with pytest.raises(DataError, match=rf"{CSV_NAME}:9 \[{name}\]: image: missing image file"):
        prepare(root, log=RejectLog("fail"))
    log = RejectLog("skip")
    studies = by_id(prepare(root, log=log))
    [reject] = log.rejects
    assert (reject.line, reject.field, reject.record_id) == (LINE[name], "image", name)
    assert reject.reason == f"missing image file {(root / name).resolve()}"
    assert [i.view for i in studies["patient64541_study1"].images] == ["OTHER"]


def test_unreadable_image_is_caught_by_open_only(tmp_path: Path) -> None:
    root = build_tree(tmp_path)
    name = f"{P1}/study2/view1_frontal.jpg"
    (root / name).write_bytes(b"\x89 garbage, not an image")
    assert len(prepare(root, log=RejectLog("fail"))) == 4
    with pytest.raises(DataError, match=rf"{CSV_NAME}:4 \[{name}\]: image: unreadable image"):
        prepare(root, log=RejectLog("fail"), check_images="open")
    log = RejectLog("skip")
    studies = by_id(prepare(root, log=log, check_images="open"))
    assert [(r.line, r.field) for r in log.rejects] == [(4, "image"), (4, "images")]
    assert log.rejects[1].reason == "no usable image left in the study"
    assert "patient00001_study2" not in studies


def test_no_findings_or_impression(tmp_path: Path) -> None:
    rows = [dict(r) for r in ROWS]
    rows[3].update(section_findings="", section_impression="nan")  # study3, line 5
    root = build_tree(tmp_path, rows)
    with pytest.raises(
        DataError, match=r":5 \[patient00001_study3\]: section_findings, section_impression: no findings"
    ):
        prepare(root, log=RejectLog("fail"))
    log = RejectLog("skip")
    studies = by_id(prepare(root, log=log))
    [reject] = log.rejects
    assert (reject.line, reject.reason, reject.record_id) == (
        5,
        "no findings or impression",
        "patient00001_study3",
    )
    # A rejected study is never a prior: study2 (rank 3) falls back to study1 (rank 1).
    assert studies["patient00001_study2"].prior.study_id == "patient00001_study1"


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("patient_report_date_order", "first", "'first' is not an integer"),
        ("patient_report_date_order", "1.5", "'1.5' is not an integer"),
        ("split", "holdout", "'holdout' is not one of test, train, valid, validate"),
        ("deid_patient_id", "", "is empty"),
        (
            "path_to_image",
            "view1_frontal.jpg",
            "'view1_frontal.jpg' is not <split>/<patient>/<study>/<image file>",
        ),
    ],
)
def test_bad_fields(tmp_path: Path, column: str, value: str, reason: str) -> None:
    rows = [dict(r) for r in ROWS]
    rows[2][column] = value  # study2, line 4
    root = build_tree(tmp_path, rows)
    with pytest.raises(DataError) as info:
        prepare(root, log=RejectLog("fail"))
    assert f"{CSV_NAME}:4" in str(info.value) and f": {column}: {reason}" in str(info.value)
    log = RejectLog("skip")
    studies = by_id(prepare(root, log=log))
    assert [(r.line, r.field, r.reason) for r in log.rejects] == [(4, column, reason)]
    assert "patient00001_study2" not in studies and len(studies) == 3


def test_rows_of_one_study_must_agree(tmp_path: Path) -> None:
    rows = [dict(r) for r in ROWS]
    rows[1]["patient_report_date_order"] = "7"  # study1's lateral row, line 3
    root = build_tree(tmp_path, rows)
    log = RejectLog("skip")
    studies = by_id(prepare(root, log=log))
    [reject] = log.rejects
    assert (reject.line, reject.field) == (3, "patient_report_date_order")
    assert reject.reason == "7 differs from 1 on line 2 of the same study patient00001_study1"
    assert [i.view for i in studies["patient00001_study1"].images] == ["PA"]


def test_duplicate_image_row(tmp_path: Path) -> None:
    root = build_tree(tmp_path, [*ROWS, ROWS[0]])
    log = RejectLog("skip")
    assert len(prepare(root, log=log)) == 4
    assert [(r.line, r.reason) for r in log.rejects] == [(10, "duplicate of line 2")]


def test_max_images_filter_is_logged_not_raised(tmp_path: Path) -> None:
    log = RejectLog("fail")
    studies = by_id(prepare(build_tree(tmp_path), log=log, max_images=1))
    assert set(studies) == {"patient00001_study2", "patient00001_study3"}
    assert [(r.kind, r.line, r.field, r.reason, r.record_id) for r in log.rejects] == [
        ("filtered", 2, "images", "2 images, more than max_images=1", "patient00001_study1"),
        ("filtered", 8, "images", "2 images, more than max_images=1", "patient64541_study1"),
    ]
    assert studies["patient00001_study3"].prior is None


def test_progress_counts_every_study_through_the_loop(tmp_path: Path) -> None:
    calls: list[tuple[int, int | None]] = []
    log = RejectLog("skip")
    studies = prepare(
        build_tree(tmp_path), log=log, max_images=1, progress=lambda done, total: calls.append((done, total))
    )
    # Four studies go through the loop: the two with two images are filtered, two are kept.
    assert (len(studies), [r.kind for r in log.rejects]) == (2, ["filtered", "filtered"])
    dones = [done for done, _ in calls]
    assert dones == sorted(dones), calls  # done never decreases
    assert calls[0] == (0, 4) and calls[-1] == (4, 4), calls
    assert {total for _, total in calls} == {4}  # the total is known from the start
