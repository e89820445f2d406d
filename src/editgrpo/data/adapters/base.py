"""What every dataset adapter returns, and checks they share.

Contract (one module per dataset under ``data/adapters/``): a function

    prepare(root: Path, *, log: RejectLog, **options) -> list[Study]

that reads the dataset in its published layout under ``root`` and returns studies sorted by
``study_id``, with absolute image paths, canonical views (``schema.canonical_view``), ISO dates,
sections split with ``editgrpo.text.sections`` and ``prior`` filled where the dataset has one. Every
record it cannot use goes through ``log.error`` (bad input: raises under ``--on-error fail``) or
``log.filtered`` (left out by a documented rule); nothing is dropped without a ``Reject``.
The adapter registry (``data/adapters/__init__.py``) maps CLI names to these functions.
"""

from __future__ import annotations

from pathlib import Path

from editgrpo.data.manifest import RejectLog

IMAGE_CHECKS = ("none", "exists", "open")


def check_image(
    path: Path, mode: str, log: RejectLog, source: str, line: int | None, record_id: str | None
) -> bool:
    """Is the image usable? ``exists``: the file is there; ``open``: PIL can read its header
    (cheap: no pixel decoding). A failure is logged as an error and returns False."""
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
