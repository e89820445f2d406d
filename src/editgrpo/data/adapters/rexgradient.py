"""ReXGradient-160K (Zhang et al. 2025, arXiv 2505.00228; Hugging Face ``rajpurkarlab/ReXGradient-160K``).

Layout of the release (the dataset card and the loaders that read it; see the checks below):

    <root>/
      metadata/
        train_metadata_view_position.json   # one file per split: train / valid / test
        valid_metadata_view_position.json   # (``<split>_metadata.json`` is the same without the
        test_metadata_view_position.json    #  cleaned view labels; used when the first is absent)
        <split>_metadata.csv                # one row per study, no image paths: not read
      deid_png/<PatientID>/<AccessionNumber>/studies/<StudyUID>/series/<SeriesUID>/instances/<SOP>.png
                                            # after ``cat deid_png.part* | tar -x``

Each metadata file is one JSON object, study key -> record. A record holds the report already split
into ``Indication`` / ``Comparison`` / ``Findings`` / ``Impression`` (null, NaN or "" when absent),
``PatientID``, ``StudyDate`` (DICOM ``YYYYMMDD``, a number or a string), ``StudyInstanceUid``,
``AccessionNumber``, and parallel per-image lists ``ImagePath`` (relative to ``metadata/``, written
``../deid_png/...``) and ``ImageViewPosition`` (PA, AP, LATERAL, LL, POSTERO_ANTERIOR, LAO, RAO,
UNKNOWN, N/A or null).

Verified against public code that reads the release (radharmony's ReXGradient harmonizer and its
dataset notes, which list the file names, the keys and the view spellings above; loaders that
parse ``StudyDate`` with ``%Y%m%d``). Assumed, because no source shows it: that the study key of
the JSON object is the release's study id (we use it as ``study_id`` as is, and keep
``StudyInstanceUid`` / ``AccessionNumber`` in ``meta``). A user with the files can check every
name quickly: they are the module constants below.

Choices:
- splits come from the file a study is in: ``train`` -> train, ``valid`` -> validate, ``test`` ->
  test (the private ReXrank test set is not distributed).
- studies with more than ``max_images`` images (default 6) are left out with a ``filtered`` reject,
  as the EditGRPO paper did (EDITGRPO.md section 7: "cases with > 6 images dropped"); ``None`` keeps
  them all.
- the dataset links no prior study, so ``prior`` stays empty.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

from editgrpo.data.adapters.base import (
    ProgressCallback,
    RecordError,
    check_image,
    check_options,
    clean_cell,
    dicom_date,
    is_missing,
    read_json,
    tracked,
)
from editgrpo.data.manifest import DataError, RejectLog
from editgrpo.data.schema import Image, Study, canonical_view
from editgrpo.text.sections import normalise_body

NAME = "rexgradient"
DATASET = "rexgradient"

METADATA_DIR = "metadata"
# Our split name -> the release's split name in the metadata file names.
RELEASE_SPLITS: dict[str, str] = {"train": "train", "validate": "valid", "test": "test"}
METADATA_FILE = "{split}_metadata_view_position.json"
METADATA_FALLBACK_FILE = "{split}_metadata.json"

# Record keys.
KEY_IMAGES = "ImagePath"
KEY_VIEWS = "ImageViewPosition"
KEY_FINDINGS = "Findings"
KEY_IMPRESSION = "Impression"
KEY_INDICATION = "Indication"
KEY_COMPARISON = "Comparison"
KEY_PATIENT = "PatientID"
KEY_DATE = "StudyDate"
KEY_STUDY_UID = "StudyInstanceUid"
KEY_ACCESSION = "AccessionNumber"
REQUIRED_KEYS: tuple[str, ...] = (KEY_IMAGES, KEY_FINDINGS, KEY_IMPRESSION)

# The paper's filter (EDITGRPO.md section 7).
MAX_IMAGES = 6


def metadata_path(root: Path, split: str) -> Path:
    """The metadata file of one split (our split name); ``DataError`` naming the expected path
    when neither the view-position file nor the plain one is there."""
    release = RELEASE_SPLITS[split]
    for folder in (root / METADATA_DIR, root):
        for pattern in (METADATA_FILE, METADATA_FALLBACK_FILE):
            path = folder / pattern.format(split=release)
            if path.is_file():
                return path
    expected = root / METADATA_DIR / METADATA_FILE.format(split=release)
    fallback = METADATA_FALLBACK_FILE.format(split=release)
    raise DataError(f"{expected}: ReXGradient-160K metadata not found (nor {fallback} beside it)")


def _load_records(path: Path) -> list[tuple[int, str | None, Any]]:
    """(1-based position, study key or None, record) for every record of a metadata file: the
    release's object keyed by study, or a list of records."""
    data = read_json(path)
    if isinstance(data, dict):
        return [(i, str(key), record) for i, (key, record) in enumerate(data.items(), start=1)]
    if isinstance(data, list):
        return [(i, None, record) for i, record in enumerate(data, start=1)]
    raise DataError(f"{path}: expected a JSON object of studies, got {type(data).__name__}")


def _text(record: dict[str, Any], key: str) -> str | None:
    """A report section, normalised; ``None`` for null, NaN (the release has bare ``NaN``) and the
    placeholders the release uses for an empty section ("None", "nan": ``base.clean_cell``;
    radharmony skips the same ones)."""
    value = record.get(key)
    if is_missing(value):
        return None
    if not isinstance(value, str):
        raise RecordError(key, f"must be a string, got {type(value).__name__}")
    if clean_cell(value) is None:
        return None
    return normalise_body(value)


def _image_path(raw: str, metadata_dir: Path, root: Path) -> Path:
    """An ``ImagePath`` entry as an absolute path: relative to the metadata folder (the release
    writes ``../deid_png/...``), or else relative to ``root`` when the metadata folder sits deeper."""
    relative = PurePosixPath(raw.replace("\\", "/"))
    if relative.is_absolute():
        return Path(os.path.normpath(raw))
    beside_metadata = Path(os.path.normpath(metadata_dir / relative))
    if beside_metadata.is_file():
        return beside_metadata
    parts = [p for p in relative.parts if p not in ("..", ".")]
    under_root = root.joinpath(*parts)
    return under_root if under_root.is_file() else beside_metadata


def _images(record: dict[str, Any]) -> tuple[list[str], list[Any]]:
    paths = record[KEY_IMAGES]
    if not isinstance(paths, list) or not all(isinstance(p, str) and p.strip() for p in paths):
        raise RecordError(KEY_IMAGES, "must be a list of image paths")
    if not paths:
        raise RecordError(KEY_IMAGES, "lists no image")
    views = record.get(KEY_VIEWS)
    if is_missing(views):
        views = [None] * len(paths)
    if not isinstance(views, list):
        raise RecordError(KEY_VIEWS, "must be a list with one view per image")
    if len(views) != len(paths):
        raise RecordError(KEY_VIEWS, f"has {len(views)} entries for {len(paths)} images")
    return paths, views


def _optional_id(record: dict[str, Any], key: str) -> str | None:
    value = record.get(key)
    return None if is_missing(value) or str(value).strip() == "" else str(value)


def prepare(
    root: str | Path,
    *,
    log: RejectLog,
    check_images: str = "exists",
    max_images: int | None = MAX_IMAGES,
    splits: tuple[str, ...] = tuple(RELEASE_SPLITS),
    progress: ProgressCallback | None = None,
) -> list[Study]:
    """Studies of ReXGradient-160K under ``root`` (the release folder holding ``metadata/``).

    ``check_images``: ``none``, ``exists`` (default) or ``open`` (see ``base.check_image``).
    ``max_images``: studies with more images are filtered out (default 6, the paper's rule; None
    keeps all). ``splits``: which of train / validate / test to read (each needs its file).
    ``progress`` (``base`` contract) counts the records of all the split files, which are all
    read first (so a missing file also fails before any record is checked)."""
    check_options("rexgradient", check_images, max_images)
    unknown = [s for s in splits if s not in RELEASE_SPLITS]
    if unknown:
        raise DataError(f"unknown split {unknown[0]!r}; valid: {', '.join(RELEASE_SPLITS)}")
    root = Path(root).resolve()
    if not root.is_dir():
        raise DataError(f"{root}: ReXGradient-160K folder not found")

    # Every file is found before any is read, and read before the loop, so the total is known.
    files = [(split, metadata_path(root, split)) for split in splits]
    entries = [(split, path, *entry) for split, path in files for entry in _load_records(path)]
    studies: dict[str, Study] = {}
    seen: dict[str, str] = {}
    for split, path, index, key, record in tracked(entries, progress):
        source = str(path)
        study_id = key
        if isinstance(record, dict) and study_id is None:
            study_id = _optional_id(record, KEY_STUDY_UID)
        try:
            if not isinstance(record, dict):
                raise RecordError("(record)", f"must be a JSON object, got {type(record).__name__}")
            if study_id is None:
                raise RecordError(KEY_STUDY_UID, f"missing required key {KEY_STUDY_UID!r}")
            for required in REQUIRED_KEYS:
                if required not in record:
                    raise RecordError(required, f"missing required key {required!r}")
            if study_id in seen:
                raise RecordError("study id", f"duplicate of {seen[study_id]}")
            seen[study_id] = f"{source}:{index}"
            paths, views = _images(record)
            if max_images is not None and len(paths) > max_images:
                log.filtered(
                    source,
                    index,
                    KEY_IMAGES,
                    f"{len(paths)} images > max_images {max_images} (the paper drops studies with more than 6)",
                    study_id,
                )
                continue
            findings = _text(record, KEY_FINDINGS)
            impression = _text(record, KEY_IMPRESSION)
            if findings is None and impression is None:
                raise RecordError(KEY_FINDINGS, "no findings or impression")
            try:
                date = dicom_date(record.get(KEY_DATE))
            except ValueError:
                raise RecordError(
                    KEY_DATE, f"{record.get(KEY_DATE)!r} is not a date (YYYYMMDD or YYYY-MM-DD)"
                ) from None
            indication = _text(record, KEY_INDICATION)
            comparison = _text(record, KEY_COMPARISON)
        except RecordError as err:
            log.error(source, index, err.field_name, str(err), study_id)
            continue
        images = []
        usable = True
        for raw, view in zip(paths, views, strict=True):
            image_path = _image_path(raw, path.parent, root)
            usable = check_image(image_path, check_images, log, source, index, study_id) and usable
            images.append(Image(path=str(image_path), view=canonical_view(view), image_id=Path(raw).stem))
        if not usable:
            continue
        meta = {
            name: value
            for name, value in (
                ("study_instance_uid", _optional_id(record, KEY_STUDY_UID)),
                ("accession_number", _optional_id(record, KEY_ACCESSION)),
            )
            if value is not None
        }
        studies[study_id] = Study(
            study_id=study_id,
            dataset=DATASET,
            split=split,
            images=tuple(images),
            patient_id=_optional_id(record, KEY_PATIENT),
            date=date,
            indication=indication,
            comparison=comparison,
            findings=findings,
            impression=impression,
            meta=meta,
        )
    return [studies[k] for k in sorted(studies)]
