"""MIMIC-CXR-JPG 2.x -> ``Study`` records (images, report sections, the patient's prior study).

Published layout (PhysioNet MIMIC-CXR-JPG 2.0.0/2.1.0; reports from MIMIC-CXR 2.0.0's
``mimic-cxr-reports.zip``)::

    <root>/mimic-cxr-2.0.0-metadata.csv[.gz]   dicom_id, subject_id, study_id, ViewPosition,
                                               StudyDate (YYYYMMDD), StudyTime (HHMMSS.ffffff), ...
    <root>/mimic-cxr-2.0.0-split.csv[.gz]      dicom_id, study_id, subject_id, split
    <root>/files/p10/p10000032/s50414267/<dicom_id>.jpg
    <reports_root>/files/p10/p10000032/s50414267.txt

The first folder is ``p`` plus the first two digits of ``subject_id`` (PhysioNet's data
description). ``StudyTime`` was exported as a number, so times before 10:00 lose their leading zero
("93412.0" is 09:34:12); it is zero-padded to six digits before parsing, the convention of MedFuse's
MIMIC-CXR loader (``f"{int(float(x)):06}"``).

One ``Study`` per ``study_id``: its images (metadata order), the sections of its free-text report
(``text.sections.parse_free_text``), the official split ("validate" kept as is, ``schema.SPLITS``),
``date`` as an ISO date (the full study datetime is in ``meta["study_datetime"]``) and ``prior``:
the patient's most recent study with a strictly earlier StudyDate+StudyTime among the studies this
call returns, so every prior is itself a usable record (a rejected or filtered study is never a
prior, and two studies at the same instant are not each other's prior).

Options (``prepare``): ``check_images`` ("none" | "exists" | "open", default "exists"),
``max_images`` (leave out studies with more usable images than this, logged as ``filtered``; the
EditGRPO paper used up to 6; default ``None`` keeps all) and ``reports_root`` (where the report
archive was extracted; default ``root``; either the folder holding ``files/`` or ``files/`` itself).
``progress`` (``base`` contract) counts studies, after the two tables are read.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from pathlib import Path

from editgrpo.data.adapters.base import (
    ProgressCallback,
    check_options,
    parse_dicom_da,
    read_csv_records,
    tracked,
    unique_key,
    usable_images,
    with_priors,
)
from editgrpo.data.manifest import DataError, RejectLog
from editgrpo.data.schema import SPLITS, Image, Study, canonical_view
from editgrpo.text.sections import parse_free_text

DATASET = "mimic-cxr"
METADATA_FILE = "mimic-cxr-2.0.0-metadata.csv"
SPLIT_FILE = "mimic-cxr-2.0.0-split.csv"
METADATA_COLUMNS: tuple[str, ...] = (
    "dicom_id",
    "subject_id",
    "study_id",
    "ViewPosition",
    "StudyDate",
    "StudyTime",
)
SPLIT_COLUMNS: tuple[str, ...] = ("dicom_id", "study_id", "subject_id", "split")

_DIGITS = re.compile(r"^\d+$")
_STUDY_TIME = re.compile(r"^(\d{1,6})(?:\.(\d*))?$")


def prepare(
    root: Path,
    *,
    log: RejectLog,
    check_images: str = "exists",
    max_images: int | None = None,
    reports_root: str | Path | None = None,
    progress: ProgressCallback | None = None,
) -> list[Study]:
    """Read MIMIC-CXR-JPG under ``root``; studies sorted by ``study_id`` (see the module docstring)."""
    check_options("mimic_cxr", check_images, max_images)
    root = Path(root).resolve()
    if not root.is_dir():
        raise DataError(f"{root}: MIMIC-CXR-JPG root is not a directory")
    metadata_path = _find_table(root, METADATA_FILE)
    split_path = _find_table(root, SPLIT_FILE)
    reports_base = _reports_base(Path(reports_root).resolve() if reports_root is not None else root)

    splits = _read_splits(split_path, log)
    studies = _read_metadata(metadata_path, splits, log)

    kept: list[_Draft] = []
    meta_source = str(metadata_path)
    for draft in tracked(studies.values(), progress):
        images = usable_images(draft.images, draft.lines, check_images, log, meta_source, draft.study_id)
        if not images:
            continue
        draft.images = images
        if not _build_study(draft, reports_base, meta_source, log):
            continue
        if max_images is not None and len(images) > max_images:
            log.filtered(
                meta_source,
                draft.lines[0],
                "images",
                f"{len(images)} images, more than max_images={max_images}",
                draft.study_id,
            )
            continue
        kept.append(draft)
    return _with_priors(kept)


@dataclass
class _Draft:
    """A study while it is being assembled (``Study`` is frozen)."""

    study_id: str
    subject_id: str
    split: str
    when: _dt.datetime
    images: list[Image] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    study: Study | None = None


def _find_table(root: Path, name: str) -> Path:
    """The plain or gzipped copy of a release table (PhysioNet ships ``.csv.gz``)."""
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{root / name}: not found (nor {name}.gz); is {root} the MIMIC-CXR-JPG root?")


def _reports_base(reports_root: Path) -> Path:
    """The folder holding ``pXX/`` report folders: ``<reports_root>/files`` or ``reports_root`` itself."""
    files = reports_root / "files"
    return files if files.is_dir() else reports_root


def _read_splits(path: Path, log: RejectLog) -> dict[str, str]:
    """dicom_id -> split, from the official split table."""
    source = str(path)
    splits: dict[str, str] = {}
    seen: dict[str, int] = {}
    for line, row in read_csv_records(path, SPLIT_COLUMNS, log):
        dicom_id, split = row["dicom_id"], row["split"]
        if not unique_key(log, source, line, "dicom_id", dicom_id, seen):
            continue
        if split not in SPLITS:
            log.error(source, line, "split", f"{split!r} is not one of {', '.join(SPLITS)}", dicom_id)
            continue
        splits[dicom_id] = split
    return splits


def _study_datetime(date: str, time: str) -> tuple[_dt.datetime | None, str, str]:
    """(datetime, field, reason): the datetime, or None and the field at fault with why."""
    try:
        day = parse_dicom_da(date)
    except ValueError:
        return None, "StudyDate", f"{date!r} is not a date (YYYYMMDD)"
    match = _STUDY_TIME.match(time)
    try:
        if match is None:
            raise ValueError
        clock = match.group(1).zfill(6)
        micro = int((match.group(2) or "").ljust(6, "0")[:6])
        moment = _dt.time(int(clock[:2]), int(clock[2:4]), int(clock[4:]), micro)
    except ValueError:
        return None, "StudyTime", f"{time!r} is not a time (HHMMSS[.ffffff])"
    return _dt.datetime.combine(day, moment), "", ""


def _read_metadata(path: Path, splits: dict[str, str], log: RejectLog) -> dict[str, _Draft]:
    """study_id -> draft study with its images, from the metadata table (one row per image)."""
    source = str(path)
    root = path.parent
    studies: dict[str, _Draft] = {}
    seen: dict[str, int] = {}
    for line, row in read_csv_records(path, METADATA_COLUMNS, log):
        dicom_id, subject_id, study_id = row["dicom_id"], row["subject_id"], row["study_id"]
        if not unique_key(log, source, line, "dicom_id", dicom_id, seen):
            continue
        record = dicom_id
        bad_id = next((name for name in ("subject_id", "study_id") if not _DIGITS.match(row[name])), None)
        if bad_id is not None:
            log.error(source, line, bad_id, f"{row[bad_id]!r} is not a numeric id", record)
            continue
        when, bad_field, reason = _study_datetime(row["StudyDate"], row["StudyTime"])
        if when is None:
            log.error(source, line, bad_field, reason, record)
            continue
        split = splits.get(dicom_id)
        if split is None:
            log.error(
                source,
                line,
                "split",
                f"dicom_id is not in {SPLIT_FILE}[.gz] (or its row was rejected)",
                record,
            )
            continue
        draft = studies.get(study_id)
        if draft is None:
            draft = studies[study_id] = _Draft(study_id, subject_id, split, when)
        elif draft.subject_id != subject_id or draft.split != split:
            name, ours, theirs = (
                ("subject_id", subject_id, draft.subject_id)
                if draft.subject_id != subject_id
                else ("split", split, draft.split)
            )
            log.error(
                source,
                line,
                name,
                f"{ours!r} differs from {theirs!r} on line {draft.lines[0]} of the same study {study_id}",
                record,
            )
            continue
        # A study's images normally share StudyDate/StudyTime; if not, the study is as old as its
        # first image.
        draft.when = min(draft.when, when)
        folder = root / "files" / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}"
        draft.images.append(
            Image(
                path=str(folder / f"{dicom_id}.jpg"),
                view=canonical_view(row["ViewPosition"]),
                image_id=dicom_id,
            )
        )
        draft.lines.append(line)
    return studies


def _build_study(draft: _Draft, reports_base: Path, source: str, log: RejectLog) -> bool:
    """Read the study's report and fill ``draft.study``; False (logged) when the report is unusable."""
    subject_id = draft.subject_id
    path = reports_base / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{draft.study_id}.txt"
    line = draft.lines[0]
    if not path.is_file():
        log.error(source, line, "report", f"missing report file {path}", draft.study_id)
        return False
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        log.error(source, line, "report", f"unreadable report file {path}: {err}", draft.study_id)
        return False
    sections = parse_free_text(text)
    if sections.findings is None and sections.impression is None:
        log.error(str(path), None, "report", "no findings or impression", draft.study_id)
        return False
    draft.study = Study(
        study_id=draft.study_id,
        dataset=DATASET,
        split=draft.split,
        images=tuple(draft.images),
        patient_id=subject_id,
        date=draft.when.date().isoformat(),
        indication=sections.indication,
        comparison=sections.comparison,
        technique=sections.technique,
        history=sections.history,
        findings=sections.findings,
        impression=sections.impression,
        meta={"study_datetime": draft.when.isoformat()},
    )
    return True


def _with_priors(drafts: list[_Draft]) -> list[Study]:
    """Attach each study's prior: the same subject's latest strictly earlier study among ``drafts``."""
    entries = []
    for draft in drafts:
        assert draft.study is not None  # set by _build_study for every kept draft
        entries.append((draft.study, draft.subject_id, draft.when))
    return with_priors(entries)
