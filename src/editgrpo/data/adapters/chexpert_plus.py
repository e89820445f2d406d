"""CheXpert Plus -> ``Study`` records (images, report sections, the patient's prior study).

Published layout (Stanford AIMI CheXpert Plus, report table of 2024-04-01)::

    <root>/df_chexpert_plus_240401.csv   one row per image: path_to_image, path_to_dcm,
                                         frontal_lateral, ap_pa, deid_patient_id,
                                         patient_report_date_order, report, section_* (findings,
                                         impression, clinical_history, history, comparison,
                                         technique, ...), demographics, split ("train" / "valid")
    <images_root>/train/patient00001/study1/view1_frontal.jpg

``path_to_image`` keeps the original CheXpert ``.jpg`` names; the release's PNG archive stores the
same tree with ``.png`` files (conventionally unpacked as ``<root>/PNG/``), so
``images_root=<root>/PNG, image_suffix=".png"`` reads that copy. ``check_images="open"`` needs
images PIL can read (JPG/PNG, not the DICOM copy).

One ``Study`` per (patient folder, study folder) of ``path_to_image``, with id
``patient00001_study1``; sections from the ``section_*`` columns (``text.sections.
from_chexpert_plus``); split "valid" renamed to "validate" (``schema.SPLITS``); view from
``frontal_lateral`` (Lateral -> LATERAL) and, for frontal images, ``ap_pa`` (AP/PA, else OTHER).
CheXpert Plus releases no dates, only ``patient_report_date_order`` (the report's rank among the
patient's reports), so ``date`` is ``None`` and the rank is kept in ``meta``. ``prior`` is the same
``deid_patient_id``'s study with the next lower rank among the studies this call returns (a rejected
or filtered study is never a prior).

Options (``prepare``): ``check_images`` ("none" | "exists" | "open", default "exists"),
``max_images`` (leave out studies with more usable images, logged as ``filtered``; default
``None`` keeps all), ``images_root`` (default ``root``), ``image_suffix`` (replace the suffix of
``path_to_image``, e.g. ".png"; default ``None`` keeps the path as given) and ``report_csv`` (the
report table's file name under ``root`` or a path; default ``df_chexpert_plus_240401.csv``).
``progress`` (``base`` contract) counts studies, after the report table is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from editgrpo.data.adapters.base import (
    ProgressCallback,
    check_options,
    clean_cell,
    read_csv_records,
    tracked,
    unique_key,
    usable_images,
    with_priors,
)
from editgrpo.data.manifest import DataError, RejectLog
from editgrpo.data.schema import Image, Study, canonical_view
from editgrpo.errors import UserError
from editgrpo.text.sections import from_chexpert_plus

DATASET = "chexpert-plus"
REPORT_CSV = "df_chexpert_plus_240401.csv"
REQUIRED_COLUMNS: tuple[str, ...] = (
    "path_to_image",
    "frontal_lateral",
    "ap_pa",
    "deid_patient_id",
    "patient_report_date_order",
    "section_findings",
    "section_impression",
    "split",
)
# The release's split names -> schema.SPLITS (CheXpert Plus has no test split of its own).
SPLIT_NAMES: dict[str, str] = {"train": "train", "valid": "validate", "validate": "validate", "test": "test"}


def prepare(
    root: Path,
    *,
    log: RejectLog,
    check_images: str = "exists",
    max_images: int | None = None,
    images_root: str | Path | None = None,
    image_suffix: str | None = None,
    report_csv: str | Path = REPORT_CSV,
    progress: ProgressCallback | None = None,
) -> list[Study]:
    """Read CheXpert Plus under ``root``; studies sorted by ``study_id`` (see the module docstring)."""
    _check_options(check_images, max_images, image_suffix)
    root = Path(root).resolve()
    if not root.is_dir():
        raise DataError(f"{root}: CheXpert Plus root is not a directory")
    table = root / report_csv
    if not table.is_file():
        raise DataError(f"{table}: not found; is {root} the CheXpert Plus root?")
    image_base = Path(images_root).resolve() if images_root is not None else root

    drafts = _read_table(table, image_base, image_suffix, log)
    source = str(table)
    kept: list[_Draft] = []
    for draft in tracked(drafts.values(), progress):
        images = usable_images(draft.images, draft.lines, check_images, log, source, draft.study_id)
        if not images:
            continue
        if draft.findings is None and draft.impression is None:
            log.error(
                source,
                draft.lines[0],
                "section_findings, section_impression",
                "no findings or impression",
                draft.study_id,
            )
            continue
        if max_images is not None and len(images) > max_images:
            log.filtered(
                source,
                draft.lines[0],
                "images",
                f"{len(images)} images, more than max_images={max_images}",
                draft.study_id,
            )
            continue
        draft.images = images
        kept.append(draft)
    return _with_priors(kept)


@dataclass
class _Draft:
    """A study while it is being assembled from its image rows (``Study`` is frozen)."""

    study_id: str
    patient: str
    order: int
    split: str
    findings: str | None
    impression: str | None
    study: Study
    images: list[Image] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)


def _check_options(check_images: str, max_images: int | None, image_suffix: str | None) -> None:
    check_options("chexpert_plus", check_images, max_images)
    if image_suffix is not None and not (image_suffix.startswith(".") and len(image_suffix) > 1):
        raise UserError(f"chexpert_plus option image_suffix: {image_suffix!r} must look like '.png'")


def _value(row: dict[str, str], name: str) -> str:
    """A cell, stripped, with the missing markers (pandas' "nan", ...) as "" (``base.clean_cell``)."""
    return clean_cell(row[name]) or ""


def _view(frontal_lateral: str, ap_pa: str) -> str:
    """Canonical view from the two view columns: lateral images are LATERAL whatever ``ap_pa``
    says; frontal ones take ``ap_pa`` when it is AP or PA, else OTHER (a frontal of unknown
    projection); without ``frontal_lateral``, ``ap_pa`` alone decides."""
    kind = frontal_lateral.lower()
    projection = canonical_view(ap_pa) if ap_pa else "UNKNOWN"
    if kind == "lateral":
        return "LATERAL"
    if kind == "frontal":
        return projection if projection in ("AP", "PA") else "OTHER"
    return projection


def _order(raw: str) -> int | None:
    """``patient_report_date_order`` as an int ("3" or pandas' "3.0"); None when it is not one."""
    try:
        number = float(raw)
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def _read_table(table: Path, image_base: Path, image_suffix: str | None, log: RejectLog) -> dict[str, _Draft]:
    """study_id -> draft study with its image rows."""
    source = str(table)
    drafts: dict[str, _Draft] = {}
    seen: dict[str, int] = {}
    # Raw values: ``from_chexpert_plus`` reads the report sections as written; ``_value`` strips.
    for line, row in read_csv_records(table, REQUIRED_COLUMNS, log, strip=False):
        relative = _value(row, "path_to_image")
        if not unique_key(log, source, line, "path_to_image", relative, seen):
            continue
        record = relative
        parts = PurePosixPath(relative).parts
        if len(parts) < 3 or PurePosixPath(relative).is_absolute():
            log.error(
                source,
                line,
                "path_to_image",
                f"{relative!r} is not <split>/<patient>/<study>/<image file>",
                record,
            )
            continue
        patient = _value(row, "deid_patient_id")
        if not patient:
            log.error(source, line, "deid_patient_id", "is empty", record)
            continue
        order = _order(_value(row, "patient_report_date_order"))
        if order is None:
            raw = row["patient_report_date_order"]
            log.error(source, line, "patient_report_date_order", f"{raw!r} is not an integer", record)
            continue
        split = SPLIT_NAMES.get(_value(row, "split").lower())
        if split is None:
            valid = ", ".join(sorted(set(SPLIT_NAMES)))
            log.error(source, line, "split", f"{row['split']!r} is not one of {valid}", record)
            continue
        sections = from_chexpert_plus(row)
        study_id = f"{parts[-3]}_{parts[-2]}"
        draft = drafts.get(study_id)
        if draft is None:
            study = Study(
                study_id=study_id,
                dataset=DATASET,
                split=split,
                patient_id=patient,
                date=None,
                indication=sections.indication,
                comparison=sections.comparison,
                technique=sections.technique,
                history=sections.history,
                findings=sections.findings,
                impression=sections.impression,
                meta={"patient_report_date_order": order},
            )
            draft = drafts[study_id] = _Draft(
                study_id, patient, order, split, sections.findings, sections.impression, study
            )
        else:
            clash = _clash(draft, patient, order, split, sections.findings, sections.impression)
            if clash is not None:
                name, ours, theirs = clash
                log.error(
                    source,
                    line,
                    name,
                    f"{ours!r} differs from {theirs!r} on line {draft.lines[0]} of the same study {study_id}",
                    record,
                )
                continue
        path = image_base / relative
        if image_suffix is not None:
            path = path.with_suffix(image_suffix)
        view = _view(_value(row, "frontal_lateral"), _value(row, "ap_pa"))
        draft.images.append(Image(path=str(path), view=view, image_id=relative))
        draft.lines.append(line)
    return drafts


def _clash(
    draft: _Draft, patient: str, order: int, split: str, findings: str | None, impression: str | None
) -> tuple[str, object, object] | None:
    """The first study-level field on which an image row disagrees with the study's first row."""
    pairs = (
        ("deid_patient_id", patient, draft.patient),
        ("patient_report_date_order", order, draft.order),
        ("split", split, draft.split),
        ("section_findings", findings, draft.findings),
        ("section_impression", impression, draft.impression),
    )
    return next(((name, ours, theirs) for name, ours, theirs in pairs if ours != theirs), None)


def _with_priors(drafts: list[_Draft]) -> list[Study]:
    """Attach each study's prior: the same patient's study with the next lower report rank (the
    latest strictly lower rank; equal ranks are not each other's prior)."""
    return with_priors(
        (replace(draft.study, images=tuple(draft.images)), draft.patient, draft.order) for draft in drafts
    )
