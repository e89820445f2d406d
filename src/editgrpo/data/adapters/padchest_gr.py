"""PadChest-GR (Castro et al. 2024, arXiv 2411.05085; BIMCV), the grounded-report subset of PadChest.

Layout of the release (2024-08-19; the folder names are what its archives unpack to):

    <root>/
      grounded_reports_20240819.json      # list of 4,555 studies
      master_table.csv                    # one row per (study, finding sentence): 8,787 rows
      Padchest_GR_files/**/<ImageID>      # study images (PNG), from PadChest_GR.zip.001..037
      PadChest_GR_progression_prior_studies/**/<ImageID>   # 1,446 prior-study PNGs, optional
      PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv[.gz]   # the PadChest table, optional

- ``grounded_reports_*.json``: per study ``StudyID``, ``ImageID`` (the PNG file name) and
  ``findings``, a list of sentences: ``sentence_en``, ``sentence_es``, ``abnormal`` (positive or
  negative finding), ``boxes`` / ``extra_boxes`` (two readers, normalised ``[x1, y1, x2, y2]``),
  ``labels``, ``locations``, ``progression``. Negative sentences often lack the box keys.
- ``master_table.csv`` columns: StudyID, ImageID, label, boxes_count, extra_boxes_count,
  locations, prior_study, progression_status, prior_imageID, sentence_en, sentence_es,
  study_is_benchmark, study_is_validation, split (train / validation / test), PatientID,
  patient_is_benchmark, PatientBirth, PatientSex_DICOM, StudyDate_DICOM, StudyDate, PatientAge,
  label_group, Year.
- the PadChest table (Bustos et al. 2020): ImageID, StudyID, PatientID, StudyDate_DICOM
  (``YYYYMMDD``), Projection (PA, AP, AP_horizontal, L, ...), ViewPosition_DICOM, Report, ...

Verified in public code that reads the release: the file names, the JSON keys, the master-table
columns and split names, the prior-image folder and its 1,446 images, the PadChest table columns
(its README). Assumed, because no source shows it: that ``prior_imageID`` holds the prior image's
file name and is the same on every row of a study, that ``StudyDate_DICOM`` is ``YYYYMMDD`` in the
master table as in PadChest, and that the master table has no projection column (a ``Projection``
column there is used when present). The names are the module constants below.

Choices:
- ``findings`` is the English sentences (positive and negative, in release order) joined with
  single spaces, each ending with a period; PadChest-GR has no impression. The sentences with their
  boxes, labels, locations and progression are kept in ``meta["sentences"]``.
- the view is the PadChest ``Projection`` (master table, else the PadChest table, else ``UNKNOWN``;
  PadChest-GR kept frontal images only, so most are PA or AP).
- the prior is the release's link when a study has one (``prior_imageID``): the PadChest-GR study
  with that image, else the image under the prior-studies folder, with study id, date and view
  from the PadChest table when it is there (else the image name). Otherwise it is the same
  patient's most recent earlier PadChest-GR study, the convention the paper states for MIMIC-CXR
  (EDITGRPO.md section 7). ``meta["prior_source"]`` says which. The paper's "32% with a prior"
  matches the release links (1,446 prior images for 4,555 studies); the release has 4,459
  patients, so few studies have an earlier PadChest-GR study of their own.
- images are found by file name anywhere under ``root``, as the archives unpack to differently
  nested folders; a missing one is reported at ``Padchest_GR_files/<ImageID>``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from editgrpo.data.adapters.base import (
    MissingColumnsError,
    ProgressCallback,
    RecordError,
    check_image,
    check_options,
    clean_cell,
    dicom_date,
    latest_earlier,
    prior_of,
    read_csv_records,
    read_json,
    tracked,
)
from editgrpo.data.manifest import DataError, RejectLog
from editgrpo.data.schema import Image, Prior, Study, canonical_view

NAME = "padchest-gr"
DATASET = "padchest_gr"

REPORTS_FILE = "grounded_reports_20240819.json"
REPORTS_GLOB = "grounded_reports_*.json"  # another release date
MASTER_TABLE_FILE = "master_table.csv"
PADCHEST_TABLE_FILES: tuple[str, ...] = (
    "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv",
    "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz",
)
IMAGES_DIR = "Padchest_GR_files"
PRIOR_IMAGES_DIR = "PadChest_GR_progression_prior_studies"

# grounded_reports JSON keys.
KEY_STUDY = "StudyID"
KEY_IMAGE = "ImageID"
KEY_FINDINGS = "findings"
KEY_SENTENCE = "sentence_en"
REQUIRED_KEYS: tuple[str, ...] = (KEY_STUDY, KEY_IMAGE, KEY_FINDINGS)
GROUNDING_KEYS: tuple[str, ...] = ("abnormal", "boxes", "extra_boxes", "labels", "locations", "progression")

# master_table.csv columns.
COL_STUDY = "StudyID"
COL_PATIENT = "PatientID"
COL_SPLIT = "split"
COL_DATE = "StudyDate_DICOM"
COL_PRIOR_IMAGE = "prior_imageID"
COL_PROJECTION = "Projection"
MASTER_COLUMNS: tuple[str, ...] = (COL_STUDY, COL_PATIENT, COL_SPLIT, COL_DATE)

# PadChest table columns.
PC_IMAGE = "ImageID"
PC_STUDY = "StudyID"
PC_DATE = "StudyDate_DICOM"
PC_PROJECTION = "Projection"
PC_VIEW = "ViewPosition_DICOM"

# Release split -> ours.
RELEASE_SPLITS: dict[str, str] = {"train": "train", "validation": "validate", "test": "test"}


@dataclasses.dataclass
class _MasterRow:
    """Study-level fields of the master table: the first row of the study (the prior link from the
    first row that has one)."""

    line: int
    patient_id: str | None
    split: str
    date: str | None
    prior_image: str | None
    projection: str | None


@dataclasses.dataclass(frozen=True)
class _TableRow:
    line: int
    study_id: str | None
    date: str | None
    projection: str | None


def _png_name(image_id: str) -> str:
    return image_id if image_id.lower().endswith(".png") else f"{image_id}.png"


def reports_path(root: Path) -> Path:
    """The grounded-reports JSON: the 2024-08-19 name, else the one ``grounded_reports_*.json``."""
    path = root / REPORTS_FILE
    if path.is_file():
        return path
    others = sorted(root.glob(REPORTS_GLOB))
    if len(others) == 1:
        return others[0]
    if others:
        names = ", ".join(p.name for p in others)
        raise DataError(f"{path}: not found, and several {REPORTS_GLOB} to choose from ({names})")
    raise DataError(f"{path}: PadChest-GR grounded reports not found")


def _load_reports(path: Path) -> list[Any]:
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of studies, got {type(data).__name__}")
    return data


def _csv_rows(path: Path, required: tuple[str, ...], log: RejectLog) -> Iterator[tuple[int, dict[str, str]]]:
    """``base.read_csv_records``, with this adapter's wording of a missing column (first missing
    name and the columns found), which its users and tests know."""
    try:
        yield from read_csv_records(path, required, log)
    except MissingColumnsError as err:
        raise DataError(
            f"{path}: missing column {err.missing[0]!r} (columns: {', '.join(err.found)})"
        ) from None


def _read_master(path: Path, log: RejectLog) -> dict[str, _MasterRow]:
    rows: dict[str, _MasterRow] = {}
    for line, row in _csv_rows(path, MASTER_COLUMNS, log):
        study_id = clean_cell(row.get(COL_STUDY))
        if study_id is None:
            log.error(str(path), line, COL_STUDY, "is empty")
            continue
        prior = clean_cell(row.get(COL_PRIOR_IMAGE))
        entry = rows.get(study_id)
        if entry is None:
            rows[study_id] = _MasterRow(
                line=line,
                patient_id=clean_cell(row.get(COL_PATIENT)),
                split=row[COL_SPLIT],
                date=clean_cell(row.get(COL_DATE)),
                prior_image=prior,
                projection=clean_cell(row.get(COL_PROJECTION)),
            )
        elif entry.prior_image is None and prior is not None:
            entry.prior_image = prior
    return rows


def _read_padchest_table(path: Path, wanted: set[str], log: RejectLog) -> dict[str, _TableRow]:
    """The PadChest rows of the images we need (the table has 160K rows with long reports)."""
    table: dict[str, _TableRow] = {}
    for line, row in _csv_rows(path, (PC_IMAGE,), log):
        image_id = row[PC_IMAGE]
        if image_id in wanted and image_id not in table:
            projection = clean_cell(row.get(PC_PROJECTION)) or clean_cell(row.get(PC_VIEW))
            table[image_id] = _TableRow(
                line, clean_cell(row.get(PC_STUDY)), clean_cell(row.get(PC_DATE)), projection
            )
            if len(table) == len(wanted):
                break
    return table


def _png_index(root: Path) -> dict[str, Path]:
    """File name -> path of every PNG under ``root`` (first in path order when repeated)."""
    index: dict[str, Path] = {}
    for path in sorted(root.rglob("*.png")):
        index.setdefault(path.name, path)
    return index


def _findings(raw: Any) -> tuple[str | None, list[dict[str, Any]]]:
    """The findings text and the per-sentence grounding of one study."""
    if not isinstance(raw, list):
        raise RecordError(KEY_FINDINGS, "must be a list of finding sentences")
    sentences: list[str] = []
    grounding: list[dict[str, Any]] = []
    for i, finding in enumerate(raw):
        where = f"{KEY_FINDINGS}[{i}]"
        if not isinstance(finding, dict):
            raise RecordError(where, "must be an object")
        if KEY_SENTENCE not in finding:
            raise RecordError(f"{where}.{KEY_SENTENCE}", f"missing required key {KEY_SENTENCE!r}")
        value = finding[KEY_SENTENCE]
        if value is None:
            continue
        if not isinstance(value, str):
            raise RecordError(f"{where}.{KEY_SENTENCE}", f"must be a string, got {type(value).__name__}")
        text = " ".join(value.split())
        if not text:
            continue
        if not text.endswith("."):
            text += "."
        sentences.append(text)
        grounding.append({"text": text, **{key: finding[key] for key in GROUNDING_KEYS if key in finding}})
    return " ".join(sentences) or None, grounding


def prepare(
    root: str | Path,
    *,
    log: RejectLog,
    check_images: str = "exists",
    max_images: int | None = None,
    progress: ProgressCallback | None = None,
) -> list[Study]:
    """Studies of PadChest-GR under ``root`` (the release folder; see the module docstring).

    ``check_images``: ``none``, ``exists`` (default) or ``open`` (see ``base.check_image``); it
    applies to prior images too. ``max_images``: studies with more images are filtered out (None,
    the default, keeps all; every PadChest-GR study has one image). ``progress`` (``base``
    contract) counts the grounded-report records, after the tables are read."""
    check_options("padchest_gr", check_images, max_images)
    root = Path(root).resolve()
    if not root.is_dir():
        raise DataError(f"{root}: PadChest-GR folder not found")
    reports = reports_path(root)
    master_path = root / MASTER_TABLE_FILE
    if not master_path.is_file():
        raise DataError(f"{master_path}: PadChest-GR master table not found")
    records = _load_reports(reports)
    master = _read_master(master_path, log)
    table_path = next((root / name for name in PADCHEST_TABLE_FILES if (root / name).is_file()), None)
    table: dict[str, _TableRow] = {}
    if table_path is not None:
        wanted = {
            _png_name(str(r[KEY_IMAGE]))
            for r in records
            if isinstance(r, dict) and r.get(KEY_IMAGE) is not None
        }
        wanted |= {_png_name(row.prior_image) for row in master.values() if row.prior_image}
        table = _read_padchest_table(table_path, wanted, log)
    index = _png_index(root)
    source, master_source = str(reports), str(master_path)

    studies: list[Study] = []
    links: dict[str, _MasterRow] = {}
    seen: dict[str, int] = {}
    for number, record in enumerate(tracked(records, progress), start=1):
        study_id = str(record[KEY_STUDY]) if isinstance(record, dict) and record.get(KEY_STUDY) else None
        try:
            if not isinstance(record, dict):
                raise RecordError("(record)", f"must be a JSON object, got {type(record).__name__}")
            for required in REQUIRED_KEYS:
                if required not in record or record[required] in (None, ""):
                    raise RecordError(required, f"missing required key {required!r}")
            if study_id in seen:
                raise RecordError(KEY_STUDY, f"duplicate of record {seen[study_id]}")
            seen[study_id] = number
            findings, grounding = _findings(record[KEY_FINDINGS])
            if findings is None:
                raise RecordError(KEY_FINDINGS, "no findings or impression")
            row = master.get(study_id)
            if row is None:
                raise RecordError(KEY_STUDY, f"study not in {MASTER_TABLE_FILE}")
        except RecordError as err:
            log.error(source, number, err.field_name, str(err), study_id)
            continue
        split = RELEASE_SPLITS.get(row.split)
        if split is None:
            reason = f"{row.split!r} is not one of {', '.join(RELEASE_SPLITS)}"
            log.error(master_source, row.line, COL_SPLIT, reason, study_id)
            continue
        try:
            date = dicom_date(row.date)
        except ValueError:
            log.error(master_source, row.line, COL_DATE, f"{row.date!r} is not a date (YYYYMMDD)", study_id)
            continue
        image_id = _png_name(str(record[KEY_IMAGE]))
        image_path = index.get(image_id, root / IMAGES_DIR / image_id)
        if not check_image(image_path, check_images, log, source, number, study_id):
            continue
        in_table = table.get(image_id)
        projection = row.projection or (in_table.projection if in_table else None)
        images = (Image(path=str(image_path), view=canonical_view(projection), image_id=image_id),)
        if max_images is not None and len(images) > max_images:
            log.filtered(
                source, number, KEY_IMAGE, f"{len(images)} images > max_images {max_images}", study_id
            )
            continue
        studies.append(
            Study(
                study_id=study_id,
                dataset=DATASET,
                split=split,
                images=images,
                patient_id=row.patient_id,
                date=date,
                findings=findings,
                meta={"sentences": grounding},
            )
        )
        links[study_id] = row

    by_image = {s.images[0].image_id: s for s in studies}
    # Without a release link: the same patient's most recent earlier study (dated studies only).
    previous = latest_earlier(
        (s, s.patient_id, s.date) for s in studies if s.patient_id is not None and s.date is not None
    )

    out: list[Study] = []
    for study in studies:
        row = links[study.study_id]
        prior, prior_source = None, None
        if row.prior_image is not None:
            prior_source = "release"
            prior_id = _png_name(row.prior_image)
            linked = by_image.get(prior_id)
            if linked is not None and linked is not study:
                prior = prior_of(linked)
            else:
                path = index.get(prior_id, root / PRIOR_IMAGES_DIR / prior_id)
                if not check_image(path, check_images, log, master_source, row.line, study.study_id):
                    continue
                in_table = table.get(prior_id)
                prior_date = None
                if in_table is not None and in_table.date is not None:
                    try:
                        prior_date = dicom_date(in_table.date)
                    except ValueError:
                        reason = f"{in_table.date!r} is not a date (YYYYMMDD); the prior keeps no date"
                        log.error(str(table_path), in_table.line, PC_DATE, reason, prior_id)
                prior = Prior(
                    study_id=(in_table.study_id if in_table and in_table.study_id else Path(prior_id).stem),
                    images=(
                        Image(str(path), canonical_view(in_table.projection if in_table else None), prior_id),
                    ),
                    date=prior_date,
                )
        elif study.study_id in previous:
            prior_source = "patient"
            prior = prior_of(previous[study.study_id])
        meta = {**study.meta, "prior_source": prior_source} if prior_source else study.meta
        out.append(dataclasses.replace(study, prior=prior, meta=meta))
    return sorted(out, key=lambda s: s.study_id)
