"""What every dataset adapter returns, and the helpers the adapters share.

Contract (one module per dataset under ``data/adapters/``): a function

    prepare(root: Path, *, log: RejectLog, progress: ProgressCallback | None = None, **options) -> list[Study]

that reads the dataset in its published layout under ``root`` and returns studies sorted by
``study_id``, with absolute image paths, canonical views (``schema.canonical_view``), ISO dates,
sections split with ``editgrpo.text.sections`` and ``prior`` filled where the dataset has one. Every
record it cannot use goes through ``log.error`` (bad input: raises under ``--on-error fail``) or
``log.filtered`` (left out by a documented rule); nothing is dropped without a ``Reject``.
Bad options (``check_options``) are a ``UserError``; bad input files a ``DataError``.
``progress``, when given, is called as ``progress(done, total)`` while the adapter works through its
main per-record loop (per study or per row: the loop that does the slow per-record work, image
checks and report reads): ``done`` counts the records finished so far and never decreases;
``total`` is the number of records that loop will see, or ``None`` while it is not known yet. The
last call is ``(n, n)`` with ``n`` the records the loop went through (kept, rejected and filtered
alike); it is not made when the adapter raises. Adapters report through ``tracked``, which calls
``progress`` at the start, every ``PROGRESS_EVERY`` records and at the end, so it costs nothing
measurable; the CLI draws a progress bar from it.
The adapter registry (``data/adapters/__init__.py``) maps CLI names to these functions.

The helpers below exist once so that the adapters read tables, dates, empty cells, image checks and
priors the same way; dataset-specific rules stay in the adapter modules.
"""

from __future__ import annotations

import bisect
import csv
import datetime as _dt
import gzip
import json
import math
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence, Sized
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO, TypeVar

from editgrpo.data.manifest import DataError, RejectLog
from editgrpo.data.schema import Prior, Study, parse_iso_date
from editgrpo.errors import UserError

IMAGE_CHECKS = ("none", "exists", "open")

# Cell values that mean "no value": a NaN or None that went through ``str()`` (pandas ``astype(str)``
# before export) reads "nan" / "None"; "null" is JSON's spelling.
MISSING_MARKERS = frozenset({"", "nan", "none", "null"})

# ``progress(done, total)``: see the contract above.
ProgressCallback = Callable[[int, int | None], None]
# Records between two progress reports: rare enough to cost nothing next to a record's work (an
# image stat, a report read), frequent enough for a bar that moves (MIMIC-CXR has 227K studies).
PROGRESS_EVERY = 256

_T = TypeVar("_T")


# --- options ---------------------------------------------------------------------------------------


def check_options(adapter: str, check_images: str, max_images: int | None) -> None:
    """Refuse the options every adapter takes before any file is read, so a typo fails at once
    (a ``UserError``: the person fixes the command, not a file)."""
    if check_images not in IMAGE_CHECKS:
        raise UserError(
            f"{adapter} option check_images: {check_images!r} is not one of {', '.join(IMAGE_CHECKS)}"
        )
    if max_images is not None and (
        isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1
    ):
        raise UserError(f"{adapter} option max_images: {max_images!r} must be a positive integer or None")


# --- progress --------------------------------------------------------------------------------------


def tracked(
    items: Iterable[_T],
    progress: ProgressCallback | None,
    *,
    total: int | None = None,
    every: int = PROGRESS_EVERY,
) -> Iterator[_T]:
    """``items``, reporting an adapter's main loop to ``progress`` (the contract above): ``(0, total)``
    before the first item, ``(done, total)`` after every ``every`` finished items, and ``(n, n)`` once
    all ``n`` are finished (an item is finished when the loop asks for the next one). ``total``
    defaults to ``len(items)`` when ``items`` has one, else ``None``. Without ``progress`` the items
    pass through untouched."""
    if progress is None:
        yield from items
        return
    if total is None and isinstance(items, Sized):
        total = len(items)
    progress(0, total)
    done = 0
    for item in items:
        yield item
        done += 1
        if done % every == 0:
            progress(done, total)
    progress(done, done)


# --- records ---------------------------------------------------------------------------------------


class RecordError(ValueError):
    """A problem in one record: the field it is in and the reason. Raised inside an adapter's
    per-record checks and turned into one ``log.error`` by its loop, so each check is one line."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(reason)
        self.field_name = field_name


def unique_key(
    log: RejectLog, source: str, line: int, field_name: str, key: str, seen: dict[str, int]
) -> bool:
    """Is ``key`` usable as a record's key: not empty and not on an earlier line of ``source``? The
    first occurrence wins (``seen``: key -> line, updated here); the others are logged as errors."""
    if not key:
        log.error(source, line, field_name, "is empty")
        return False
    if key in seen:
        log.error(source, line, field_name, f"duplicate of line {seen[key]}", key)
        return False
    seen[key] = line
    return True


def is_missing(value: Any) -> bool:
    """None or a float NaN: how JSON nulls and pandas' empty cells arrive from the releases."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def clean_cell(value: Any) -> str | None:
    """A cell as a stripped string, or ``None`` when it holds no value (``is_missing`` or one of
    ``MISSING_MARKERS``, any case): the releases spell "empty" several ways."""
    if is_missing(value):
        return None
    text = str(value).strip()
    return None if text.lower() in MISSING_MARKERS else text


def parse_dicom_da(text: str) -> _dt.date:
    """A DICOM DA value (``YYYYMMDD``, exactly eight digits) as a date; ``ValueError`` otherwise."""
    if not (len(text) == 8 and text.isdigit()):
        raise ValueError(f"{text!r} is not a date (YYYYMMDD)")
    return _dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))


def dicom_date(value: Any) -> str | None:
    """A study date as ``YYYY-MM-DD``: ``YYYYMMDD`` (DICOM DA) as a string or a number (an integer,
    or a float as pandas writes an integer column with gaps, also as text with ``.0``), or an ISO
    date kept as is. ``None`` when missing (``is_missing`` or blank); ``ValueError`` when not a
    valid date."""
    if is_missing(value) or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{value!r} is not a date")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{value!r} is not a date")
        value = int(value)
    text = str(value) if isinstance(value, int) else value.strip().removesuffix(".0")
    if len(text) == 8 and text.isdigit():
        return parse_dicom_da(text).isoformat()
    return parse_iso_date(text)


# --- files -----------------------------------------------------------------------------------------


class MissingColumnsError(DataError):
    """A CSV table lacks required columns (or has no header at all): nothing in it can be used.
    Carries the columns, so an adapter can word the error its own way."""

    def __init__(self, path: Path, required: Sequence[str], found: Sequence[str] | None) -> None:
        self.path = path
        self.required = tuple(required)
        self.found = tuple(found) if found is not None else ()
        self.missing = tuple(name for name in required if name not in self.found)
        if found is None:
            message = f"{path}: empty file; expected a header with columns {', '.join(required)}"
        else:
            message = (
                f"{path}: missing required column(s) {', '.join(self.missing)} "
                f"(required: {', '.join(required)}; found: {', '.join(found)})"
            )
        super().__init__(message)


def _open_text(path: Path) -> TextIO:
    # utf-8-sig: tables saved by Excel start with a byte-order mark that would stick to the first column.
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return path.open(encoding="utf-8-sig", newline="")


def read_csv_records(
    path: Path, required: Sequence[str], log: RejectLog, *, strip: bool = True
) -> Iterator[tuple[int, dict[str, str]]]:
    """(line where the record starts, row) for each data row of a CSV table, plain or ``.gz``
    (PhysioNet ships ``.csv.gz``). The header is line 1 and a quoted value spanning several lines
    counts from its first, so a reject points at the record's start. Blank rows are skipped.
    A missing column is a ``MissingColumnsError``; a ragged row goes to ``log`` (field ``(row)``);
    an unreadable or non-UTF-8 file is a ``DataError``. ``strip``: strip every value (header names
    always are); off for adapters that need the raw text."""
    try:
        with _open_text(path) as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise MissingColumnsError(path, required, None)
            header = [name.strip() for name in header]
            if any(name not in header for name in required):
                raise MissingColumnsError(path, required, header)
            end = reader.line_num
            for values in reader:
                start, end = end + 1, reader.line_num
                if not any(value.strip() for value in values):
                    continue
                if len(values) != len(header):
                    log.error(
                        str(path), start, "(row)", f"has {len(values)} fields, the header has {len(header)}"
                    )
                    continue
                if strip:
                    values = [value.strip() for value in values]
                yield start, dict(zip(header, values, strict=True))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: cannot read as a UTF-8 CSV: {err}") from None


def read_json(path: Path) -> Any:
    """A whole JSON file; invalid JSON is a ``DataError`` naming the line and column."""
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON: {err.msg} at line {err.lineno} column {err.colno}") from None


# --- images ----------------------------------------------------------------------------------------


def check_image(
    path: Path, mode: str, log: RejectLog, source: str, line: int | None, record_id: str | None
) -> bool:
    """Is the image usable? ``exists``: the file is there; ``open``: PIL can read its header
    (cheap: no pixel decoding). A failure is logged as an error and returns False. An unknown
    ``mode`` is a ``UserError`` rather than a silent ``exists``."""
    if mode not in IMAGE_CHECKS:
        raise UserError(f"check_images: {mode!r} is not one of {', '.join(IMAGE_CHECKS)}")
    if mode == "none":
        return True
    if not path.is_file():
        log.error(source, line, "image", f"missing image file {path}", record_id)
        return False
    if mode == "open":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                image.verify()
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            log.error(source, line, "image", f"unreadable image {path}: {err}", record_id)
            return False
    return True


def usable_images(
    images: Sequence[Any], lines: Sequence[int], mode: str, log: RejectLog, source: str, study_id: str
) -> list[Any]:
    """The study's images that pass ``check_image`` (each failure logged by it, at its table line);
    a study left with none is logged as an error too (the caller then drops it)."""
    kept = [
        image
        for image, line in zip(images, lines, strict=True)
        if check_image(Path(image.path), mode, log, source, line, image.image_id)
    ]
    if not kept:
        log.error(source, lines[0], "images", "no usable image left in the study", study_id)
    return kept


# --- priors ----------------------------------------------------------------------------------------


def prior_of(study: Study) -> Prior:
    """``study`` as another study's prior: its images, date and report."""
    return Prior(
        study_id=study.study_id,
        images=study.images,
        date=study.date,
        findings=study.findings,
        impression=study.impression,
    )


def latest_earlier(entries: Iterable[tuple[Study, Hashable, Any]]) -> dict[str, Study]:
    """study_id -> the same patient's study with the latest strictly earlier rank, from
    (study, patient, rank) entries; among equal ranks the larger ``study_id`` is the later one.
    Studies of equal rank are not each other's prior, and only the given studies can be priors,
    so a rejected or filtered study never is. Study ids must be unique."""
    by_patient: dict[Hashable, list[tuple[Any, str, Study]]] = {}
    for study, patient, rank in entries:
        by_patient.setdefault(patient, []).append((rank, study.study_id, study))
    previous: dict[str, Study] = {}
    for group in by_patient.values():
        group.sort(key=lambda entry: (entry[0], entry[1]))
        ranks = [rank for rank, _, _ in group]
        for rank, study_id, _ in group:
            index = bisect.bisect_left(ranks, rank) - 1
            if index >= 0:
                previous[study_id] = group[index][2]
    return previous


def with_priors(entries: Iterable[tuple[Study, Hashable, Any]]) -> list[Study]:
    """The studies of (study, patient, rank) entries, each with ``prior`` set from
    ``latest_earlier``, sorted by ``study_id`` (the adapter contract)."""
    entries = list(entries)
    previous = latest_earlier(entries)
    out = [
        replace(study, prior=prior_of(previous[study.study_id])) if study.study_id in previous else study
        for study, _, _ in entries
    ]
    return sorted(out, key=lambda s: s.study_id)
