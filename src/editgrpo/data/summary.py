"""What a prepared manifest holds, in numbers a person checks before training on it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from editgrpo.data.manifest import Reject
from editgrpo.data.schema import SPLITS, Study


def summarize(studies: Sequence[Study], rejects: Sequence[Reject] = ()) -> dict[str, Any]:
    """Studies per split, share with a prior, images per study, target coverage and rejects."""
    n = len(studies)
    per_split = Counter(s.split for s in studies)
    images = [len(s.images) for s in studies]
    reasons = Counter(f"{r.kind}: {r.field}: {_reason_kind(r.reason)}" for r in rejects)
    return {
        "studies": n,
        "per_split": {split: per_split.get(split, 0) for split in SPLITS},
        "with_prior_pct": round(100.0 * sum(s.prior is not None for s in studies) / n, 1) if n else 0.0,
        "images_per_study": round(sum(images) / n, 2) if n else 0.0,
        "max_images": max(images, default=0),
        "with_findings": sum(bool(s.findings) for s in studies),
        "with_impression": sum(bool(s.impression) for s in studies),
        "rejected": sum(r.kind == "error" for r in rejects),
        "filtered": sum(r.kind == "filtered" for r in rejects),
        "reject_reasons": dict(reasons.most_common()),
    }


def _reason_kind(reason: str) -> str:
    """Group reasons that differ only by path or number ("missing image file /x/1.png")."""
    words = []
    for word in reason.split():
        if "/" in word or any(ch.isdigit() for ch in word):
            break
        words.append(word)
    return " ".join(words) or reason
