"""Training label frequencies for the ``chexpert_balanced`` reward (``editgrpo label-stats``).

``label_stats`` labels the reference of every study of a training manifest once, in batches, with
the reward's labeler backend, and writes ``freqs.json`` (format: ``rewards/label_freqs``): per
CheXpert observation the share f_c of references labelled positive, an uncertain label counting
as positive with ``uncertain_as="positive"`` (the reward's convention, ``metrics/chexbert_f1``) or
as negative with ``"negative"``. Studies whose section is empty are left out and counted
(``skipped``); identical reference texts are labelled once and counted once per study.

Reusable cache (``cache=PATH``): a JSONL file, one line per labelled text,
``{"key": sha256(labeler identity + "\\n" + text), "labeler": identity, "labels": {...}}``, where the
identity is the backend name, plus its options when any are given (e.g. a CheXbert checkpoint), so
labels of one model are never reused for another. The raw 4-class labels are stored (1 / 0 / -1 /
None), so a rerun with the other ``uncertain_as`` also labels nothing. A rerun on the same manifest
labels nothing new; a grown manifest labels only its new texts, which are appended to the file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from editgrpo.annotators.chexpert import build_labeler
from editgrpo.data.manifest import read_manifest
from editgrpo.errors import UserError
from editgrpo.metrics.chexbert_f1 import UNCERTAIN_AS, binarize
from editgrpo.text.observations import CHEXPERT_14

SECTIONS = ("findings", "impression", "findings_impression")
BATCH_SIZE = 64


def labeler_identity(labeler: str, options: Mapping[str, Any] | None) -> str:
    """The name cache keys are made with: the backend, plus its options when there are any."""
    if not options:
        return labeler
    return f"{labeler}:{json.dumps(dict(options), sort_keys=True, default=str)}"


def cache_key(identity: str, text: str) -> str:
    return hashlib.sha256(f"{identity}\n{text}".encode()).hexdigest()


def _read_cache(path: Path) -> dict[str, dict[str, int | None]]:
    cached: dict[str, dict[str, int | None]] = {}
    if not path.is_file():
        return cached
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                cached[row["key"]] = row["labels"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserError(
                    f"{path}:{number}: not a label cache line (key, labeler, labels). "
                    "Fix: delete the cache file or give another --cache path."
                ) from None
    return cached


def label_stats(
    manifest: str | Path,
    out: str | Path,
    *,
    labeler: str = "rules",
    labeler_options: Mapping[str, Any] | None = None,
    section: str = "findings_impression",
    uncertain_as: str = "positive",
    progress: Callable[[int, int], None] | None = None,
    cache: str | Path | None = None,
    batch_size: int = BATCH_SIZE,
) -> dict[str, Any]:
    """Label ``manifest``'s references and write ``out`` (freqs.json). ``progress(done, total)`` is
    called after each batch with distinct texts done / to do. Returns the file's content plus
    ``out``, ``labelled`` (texts labelled now) and ``cache_hits``."""
    if section not in SECTIONS:
        raise UserError(f"unknown section {section!r}. Fix: use one of {', '.join(SECTIONS)}.")
    if uncertain_as not in UNCERTAIN_AS:
        raise UserError(f"unknown uncertain_as {uncertain_as!r}. Fix: use one of {', '.join(UNCERTAIN_AS)}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    studies, _ = read_manifest(manifest)
    texts = [study.section(section) for study in studies]
    present = [t for t in texts if t and t.strip()]
    if not present:
        raise UserError(
            f"{manifest}: no study has a {section} text to label. Fix: check the manifest/section."
        )
    identity = labeler_identity(labeler, labeler_options)
    cache_path = Path(cache) if cache is not None else None
    cached = _read_cache(cache_path) if cache_path is not None else {}
    distinct = list(dict.fromkeys(present))
    keys = {text: cache_key(identity, text) for text in distinct}
    todo = [text for text in distinct if keys[text] not in cached]
    hits = len(distinct) - len(todo)
    if progress is not None:
        progress(hits, len(distinct))
    if todo:
        model = build_labeler(labeler, **dict(labeler_options or {}))
        handle = None
        if cache_path is not None:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            handle = cache_path.open("a", encoding="utf-8")
        try:
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                vectors = model.label(batch)
                for text, vector in zip(batch, vectors, strict=True):
                    labels = {name: vector.get(name) for name in CHEXPERT_14}
                    cached[keys[text]] = labels
                    if handle is not None:
                        row = {"key": keys[text], "labeler": identity, "labels": labels}
                        handle.write(json.dumps(row) + "\n")
                if handle is not None:
                    handle.flush()
                if progress is not None:
                    progress(hits + start + len(batch), len(distinct))
        finally:
            if handle is not None:
                handle.close()
    binary = binarize([cached[keys[text]] for text in present], uncertain_as=uncertain_as)  # (N, 14)
    counts = binary.sum(axis=0)  # (14,)
    n = len(present)
    result: dict[str, Any] = {
        "labels": {name: float(counts[j]) / n for j, name in enumerate(CHEXPERT_14)},
        "counts": {name: int(counts[j]) for j, name in enumerate(CHEXPERT_14)},
        "n": n,
        "skipped": len(texts) - n,
        "labeler": labeler,
        "labeler_identity": identity,
        "uncertain_as": uncertain_as,
        "manifest": str(manifest),
        "section": section,
    }
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return {**result, "out": str(target), "labelled": len(todo), "cache_hits": hits}
