"""``editgrpo prepare``: run a dataset adapter and write its manifest, rejects and summary.

Outputs, for ``--out OUT.jsonl``: the manifest; ``OUT.rejects.jsonl`` (one line per record left out,
with its reason) whenever anything was left out; ``OUT.summary.json`` (``data.summary``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from editgrpo.data.adapters import get_adapter
from editgrpo.data.manifest import RejectLog, write_manifest, write_rejects
from editgrpo.data.summary import summarize


def sidecar_paths(out: str | Path) -> tuple[Path, Path]:
    """(rejects, summary) paths written beside a manifest."""
    out = Path(out)
    stem = out.name.removesuffix(".jsonl")
    return out.with_name(stem + ".rejects.jsonl"), out.with_name(stem + ".summary.json")


def prepare_dataset(
    dataset: str,
    root: str | Path,
    out: str | Path,
    *,
    on_error: str = "fail",
    status: Callable[[str], None] | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Read ``dataset`` under ``root`` with its adapter, write the manifest and its sidecars, and
    return the summary. Options are passed to the adapter (None values are left out). ``status``
    gets a message per phase; ``progress(done, total)`` is the adapter's record count
    (``adapters.base`` contract)."""
    prepare = get_adapter(dataset)
    log = RejectLog(on_error)
    started = time.perf_counter()
    if status:
        status(f"reading {dataset} from {root}")
    options = {k: v for k, v in options.items() if v is not None}
    studies = prepare(Path(root), log=log, progress=progress, **options)
    if status:
        status(f"writing {len(studies)} studies to {out}")
    write_manifest(out, studies)
    rejects_path, summary_path = sidecar_paths(out)
    summary = {"dataset": dataset, "manifest": str(out), **summarize(studies, log.rejects)}
    if log.rejects:
        summary["rejects_file"] = str(write_rejects(rejects_path, log.rejects))
    elif rejects_path.exists():
        rejects_path.unlink()  # a stale file from an earlier run would misreport this one
    summary["seconds"] = round(time.perf_counter() - started, 2)
    summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
