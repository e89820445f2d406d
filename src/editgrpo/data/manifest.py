"""JSONL study manifests: writing, reading with validation, and the reject log.

One ``Study`` per line (``Study.to_dict``). Reading validates every field; a problem is reported as
``FILE:LINE: FIELD: reason``. Two policies (``on_error``):

- ``fail`` (default): the first problem raises ``DataError`` (a ``UserError``: CLI exit code 2).
- ``skip``: the record is left out and a ``Reject`` is logged with its reason; callers write the
  log next to their output (``write_rejects``) and count it in their summary, so nothing is
  dropped silently.

Adapters share ``RejectLog`` for the same policy on raw dataset files, and also log records left
out on purpose by a documented filter (``kind="filtered"``, e.g. ReXGradient studies with more than
6 images); filters never raise.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from editgrpo.data.schema import SPLITS, VIEWS, Image, Prior, Study, parse_iso_date
from editgrpo.errors import UserError

ON_ERROR = ("fail", "skip")


class DataError(UserError):
    """A problem in an input file, named by file, line (or record) and field."""


@dataclass(frozen=True)
class Reject:
    """One record left out: where it came from, which field, why."""

    source: str
    line: int | None
    field: str
    reason: str
    record_id: str | None = None
    kind: str = "error"  # "error" (bad input) or "filtered" (left out by a documented rule)

    def render(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        record = f" [{self.record_id}]" if self.record_id else ""
        return f"{where}{record}: {self.field}: {self.reason}"


@dataclass
class RejectLog:
    """Collects rejects under an ``on_error`` policy (``fail`` raises at the first error)."""

    on_error: str = "fail"
    rejects: list[Reject] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}, got {self.on_error!r}")

    def error(
        self, source: str, line: int | None, field_name: str, reason: str, record_id: str | None = None
    ) -> None:
        reject = Reject(str(source), line, field_name, reason, record_id)
        if self.on_error == "fail":
            hint = " (use --on-error skip to leave such records out and list them in a rejects file)"
            raise DataError(reject.render() + hint)
        self.rejects.append(reject)

    def filtered(
        self, source: str, line: int | None, field_name: str, reason: str, record_id: str | None = None
    ) -> None:
        self.rejects.append(Reject(str(source), line, field_name, reason, record_id, kind="filtered"))

    def counts(self) -> dict[str, int]:
        return dict(Counter(r.kind for r in self.rejects))


def write_rejects(path: str | Path, rejects: Iterable[Reject]) -> Path:
    """One JSON object per rejected record (source, line, field, reason, record_id, kind)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", encoding="utf-8") as handle:
        for reject in rejects:
            handle.write(json.dumps(asdict(reject), ensure_ascii=False) + "\n")
    return target


def write_manifest(path: str | Path, studies: Iterable[Study]) -> int:
    """Write studies as JSONL; returns how many were written."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with target.open("w", encoding="utf-8") as handle:
        for study in studies:
            handle.write(json.dumps(study.to_dict(), ensure_ascii=False) + "\n")
            count += 1
    return count


class _FieldError(ValueError):
    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(reason)
        self.field_name = field_name


def _str(data: dict[str, Any], key: str, prefix: str, *, required: bool = False) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise _FieldError(prefix + key, "is required")
        return None
    if not isinstance(value, str):
        raise _FieldError(prefix + key, f"must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise _FieldError(prefix + key, "is empty")
    return value


def _date(data: dict[str, Any], key: str, prefix: str) -> str | None:
    value = _str(data, key, prefix)
    if value is None:
        return None
    try:
        return parse_iso_date(value)
    except ValueError:
        raise _FieldError(prefix + key, f"{value!r} is not an ISO date (YYYY-MM-DD[THH:MM:SS])") from None


def _images(data: dict[str, Any], key: str, prefix: str) -> tuple[Image, ...]:
    raw = data.get(key, [])
    if not isinstance(raw, list):
        raise _FieldError(prefix + key, f"must be a list, got {type(raw).__name__}")
    images = []
    for i, item in enumerate(raw):
        where = f"{prefix}{key}[{i}]."
        if not isinstance(item, dict):
            raise _FieldError(f"{prefix}{key}[{i}]", "must be an object with path and view")
        unknown = set(item) - {"path", "view", "image_id"}
        if unknown:
            raise _FieldError(where + sorted(unknown)[0], "is not an image field (path, view, image_id)")
        path = _str(item, "path", where, required=True)
        view = _str(item, "view", where) or "UNKNOWN"
        if view not in VIEWS:
            raise _FieldError(where + "view", f"{view!r} is not one of {', '.join(VIEWS)}")
        images.append(Image(path=path, view=view, image_id=_str(item, "image_id", where)))
    return tuple(images)


_STUDY_KEYS = {f for f in Study.__dataclass_fields__}
_PRIOR_KEYS = {f for f in Prior.__dataclass_fields__}


def study_from_dict(data: Any) -> Study:
    """Build a ``Study`` from a manifest object; raises ``ValueError`` naming the field."""
    if not isinstance(data, dict):
        raise _FieldError("(record)", f"must be a JSON object, got {type(data).__name__}")
    unknown = set(data) - _STUDY_KEYS
    if unknown:
        raise _FieldError(
            sorted(unknown)[0], f"is not a study field (known: {', '.join(sorted(_STUDY_KEYS))})"
        )
    split = _str(data, "split", "", required=True)
    if split not in SPLITS:
        raise _FieldError("split", f"{split!r} is not one of {', '.join(SPLITS)}")
    prior = None
    raw_prior = data.get("prior")
    if raw_prior is not None:
        if not isinstance(raw_prior, dict):
            raise _FieldError("prior", "must be an object or null")
        unknown = set(raw_prior) - _PRIOR_KEYS
        if unknown:
            raise _FieldError("prior." + sorted(unknown)[0], "is not a prior field")
        prior = Prior(
            study_id=_str(raw_prior, "study_id", "prior.", required=True),
            images=_images(raw_prior, "images", "prior."),
            date=_date(raw_prior, "date", "prior."),
            findings=_str(raw_prior, "findings", "prior."),
            impression=_str(raw_prior, "impression", "prior."),
        )
    labels = data.get("labels")
    if labels is not None:
        if not isinstance(labels, dict):
            raise _FieldError("labels", "must be an object of observation -> 1, 0 or -1")
        for name, value in labels.items():
            if value not in (1, 0, -1) or isinstance(value, bool):
                raise _FieldError(f"labels.{name}", f"{value!r} is not 1, 0 or -1")
    meta = data.get("meta", {})
    if not isinstance(meta, dict):
        raise _FieldError("meta", "must be an object")
    return Study(
        study_id=_str(data, "study_id", "", required=True),
        dataset=_str(data, "dataset", "", required=True),
        split=split,
        images=_images(data, "images", ""),
        patient_id=_str(data, "patient_id", ""),
        date=_date(data, "date", ""),
        indication=_str(data, "indication", ""),
        comparison=_str(data, "comparison", ""),
        technique=_str(data, "technique", ""),
        history=_str(data, "history", ""),
        findings=_str(data, "findings", ""),
        impression=_str(data, "impression", ""),
        prior=prior,
        labels=dict(labels) if labels is not None else None,
        meta=dict(meta),
    )


def iter_manifest(path: str | Path, log: RejectLog | None = None) -> Iterator[Study]:
    """Yield valid studies of a manifest; problems go to ``log`` (default: fail at the first)."""
    log = log if log is not None else RejectLog("fail")
    source = Path(path)
    if not source.is_file():
        raise DataError(f"{source}: manifest not found")
    seen: dict[str, int] = {}
    with source.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as err:
                log.error(str(source), number, "(json)", f"invalid JSON: {err.msg} at column {err.colno}")
                continue
            record_id = data.get("study_id") if isinstance(data, dict) else None
            try:
                study = study_from_dict(data)
            except _FieldError as err:
                log.error(str(source), number, err.field_name, str(err), record_id)
                continue
            if study.study_id in seen:
                log.error(
                    str(source),
                    number,
                    "study_id",
                    f"duplicate of line {seen[study.study_id]}",
                    study.study_id,
                )
                continue
            seen[study.study_id] = number
            yield study


def read_manifest(path: str | Path, on_error: str = "fail") -> tuple[list[Study], list[Reject]]:
    """All valid studies of a manifest, and the rejects (empty unless ``on_error="skip"``)."""
    log = RejectLog(on_error)
    studies = list(iter_manifest(path, log))
    return studies, log.rejects


def resolve_image_path(manifest_path: str | Path, image_path: str) -> Path:
    """An image path as stored in a manifest: absolute, or relative to the manifest's directory."""
    path = Path(image_path)
    return path if path.is_absolute() else Path(manifest_path).resolve().parent / path
