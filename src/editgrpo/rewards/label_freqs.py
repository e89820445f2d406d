"""The training label frequencies file (``freqs.json``) of the ``chexpert_balanced`` component.

Written by ``editgrpo label-stats`` (``eval/label_stats.label_stats``), read here::

    {"labels": {observation: f_c for the 14 CheXpert observations},   # positive share in [0, 1]
     "counts": {observation: references labelled positive},
     "n": number of references labelled,
     "labeler": labeler backend ("rules" or "chexbert"),
     "uncertain_as": "positive" or "negative" (how an uncertain label counted),
     "manifest": the training manifest, "section": the reference section labelled}

``load_label_freqs`` refuses a file it cannot trust (missing, not JSON, not the 14 observations, a
value outside [0, 1], or labelled with another labeler / uncertain convention than the reward
uses), naming the file and the problem: the component never falls back to a uniform weighting.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from editgrpo.errors import UserError
from editgrpo.text.observations import CHEXPERT_14

FIX = "run `editgrpo label-stats MANIFEST --out freqs.json` on the training manifest"


class LabelFreqsError(UserError, ValueError):
    """A frequencies file that is missing, malformed or made with other settings."""


def load_label_freqs(
    path: str | Path, *, labeler: str | None = None, uncertain_as: str | None = None
) -> dict[str, Any]:
    """The parsed ``freqs.json``; checks it against ``labeler`` / ``uncertain_as`` when given."""
    source = Path(path)

    def fail(problem: str, fix: str = FIX) -> LabelFreqsError:
        return LabelFreqsError(f"{source}: {problem}. Fix: {fix}.")

    if not source.is_file():
        raise fail("label frequencies file not found")
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise fail(f"cannot read the label frequencies file ({err})") from None
    except json.JSONDecodeError as err:
        raise fail(f"is not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("labels"), dict):
        raise fail('has no "labels" object of observation -> frequency')
    labels = data["labels"]
    missing = [name for name in CHEXPERT_14 if name not in labels]
    extra = sorted(set(labels) - set(CHEXPERT_14))
    if missing or extra:
        raise fail(
            f"must give the 14 CheXpert observations, got {len(labels)} labels"
            + (f"; missing {missing}" if missing else "")
            + (f"; unknown {extra}" if extra else "")
        )
    bad = {
        name: value
        for name, value in labels.items()
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0
    }
    if bad:
        raise fail(f"frequencies must be numbers in [0, 1], got {bad}")
    for key, wanted in (("labeler", labeler), ("uncertain_as", uncertain_as)):
        if wanted is not None and data.get(key) != wanted:
            raise fail(
                f"was made with {key}={data.get(key)!r} but the reward uses {key}={wanted!r}",
                f"rerun label-stats with the reward's {key} ({wanted!r}), or configure the reward to match",
            )
    return {**data, "labels": {name: float(labels[name]) for name in CHEXPERT_14}}
