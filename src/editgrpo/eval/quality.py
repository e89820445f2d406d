"""Degenerate model output and where the predictions came from: what ``evaluate`` adds to its summary
besides the metrics, so a report shows "There. There. There." instead of letting it pass as a low
score among others.

``degenerate_outputs(rows)`` counts, over the predictions as the model wrote them (before any
evaluation cleaner, which would hide repeats):

- ``empty``: a prediction with no non-whitespace character;
- ``repeated_sentence``: a prediction stating one sentence twice (case- and whitespace-normalised
  sentences; ``text.sentences.has_repeated_sentence``, the rule of the trainer's
  ``collapse/*/repeated_sentence_rate`` too);
- ``same_report``: studies whose (non-empty, whitespace-normalised) prediction is also the
  prediction of another study; ``same_report_texts`` how many distinct texts that is. A model that
  writes one template for every study shows up here even when each copy scores well.

Each kind keeps up to ``max_examples`` examples (study ids and text; for ``same_report`` the text,
how many studies share it and the first ids), most frequent first.

``provenance(rows, path)`` reads what ``generate`` writes into every row (``model``, ``dataset``,
``split``, ``section``, ``generation`` settings): one value per field when the rows agree, every
distinct value otherwise, and nothing for a field no row has (predictions made elsewhere). When
``model`` is a local folder, its absolute path is the checkpoint, with the training step from
``trainer_state.json`` (transformers writes it into every ``checkpoint-N``) when present.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from editgrpo.text.sentences import has_repeated_sentence

PROVENANCE_FIELDS: tuple[str, ...] = ("model", "dataset", "split", "section", "generation")


def _normalised(text: str) -> str:
    return " ".join(text.split())


def degenerate_outputs(rows: Sequence[Mapping[str, Any]], max_examples: int = 3) -> dict[str, Any]:
    """Counts and examples of empty, self-repeating and shared predictions (module docstring)."""
    empty = [row for row in rows if not str(row["prediction"]).strip()]
    repeated = [row for row in rows if has_repeated_sentence(str(row["prediction"]))]
    by_text: dict[str, list[str]] = {}
    for row in rows:
        text = _normalised(str(row["prediction"]))
        if text:
            by_text.setdefault(text, []).append(str(row["study_id"]))
    shared = sorted(
        ((text, ids) for text, ids in by_text.items() if len(ids) > 1), key=lambda item: -len(item[1])
    )
    return {
        "n": len(rows),
        "empty": len(empty),
        "repeated_sentence": len(repeated),
        "same_report": sum(len(ids) for _, ids in shared),
        "same_report_texts": len(shared),
        "examples": {
            "empty": [
                {"study_id": r["study_id"], "prediction": r["prediction"]} for r in empty[:max_examples]
            ],
            "repeated_sentence": [
                {"study_id": r["study_id"], "prediction": r["prediction"]} for r in repeated[:max_examples]
            ],
            "same_report": [
                {"prediction": text, "studies": len(ids), "study_ids": ids[:5]}
                for text, ids in shared[:max_examples]
            ],
        },
    }


def _distinct(values: list[Any]) -> Any:
    keys = Counter(json.dumps(v, sort_keys=True, default=str) for v in values)
    if len(keys) == 1:
        return values[0]
    return [json.loads(k) for k, _ in keys.most_common()]


def _checkpoint(model: str) -> dict[str, Any] | None:
    path = Path(model).expanduser()
    if not path.is_dir():
        return None
    out: dict[str, Any] = {"path": str(path.resolve())}
    state = path / "trainer_state.json"
    if state.is_file():
        # A damaged state file does not make the evaluation wrong; the step is just unknown.
        with contextlib.suppress(json.JSONDecodeError, AttributeError):
            out["global_step"] = json.loads(state.read_text(encoding="utf-8")).get("global_step")
    return out


def package_version() -> str:
    """The installed distribution's version ("unknown" when editgrpo runs from a bare source tree)."""
    try:
        return metadata.version("editgrpo")
    except metadata.PackageNotFoundError:
        return "unknown"


def provenance(rows: Sequence[Mapping[str, Any]], path: str | Path) -> dict[str, Any]:
    """Where the predictions came from (module docstring); always has ``predictions`` and
    ``editgrpo`` (the version that scored them)."""
    out: dict[str, Any] = {"predictions": str(Path(path).resolve()), "editgrpo": package_version()}
    for name in PROVENANCE_FIELDS:
        values = [row[name] for row in rows if row.get(name) is not None]
        if values:
            out[name] = _distinct(values)
    model = out.get("model")
    if isinstance(model, str):
        checkpoint = _checkpoint(model)
        if checkpoint is not None:
            out["checkpoint"] = checkpoint
    return out
