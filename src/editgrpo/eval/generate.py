"""Write one generated report per study of a manifest split, resumably, as JSONL.

``generate_predictions`` reads the manifest, keeps one split, builds each study's prompt with
``data.prompts.build_prompt`` (current + prior images in the paper's order, INDICATION /
TECHNIQUE / COMPARISON lines), loads the images, and hands batches to a generator function. The
generator is passed in (``make_generator`` builds it, called only when there is something to
generate): this layer may not import ``editgrpo.models`` (tests/test_layers.py), so the CLI wires
``models.qwen_vl`` + ``models.generation.generate_reports`` into it.

Output: JSONL, one object per study, appended batch by batch and flushed::

    {"study_id": "synth-000007",        # the manifest's study id (the resume key)
     "prediction": "The lungs are ...",  # the decoded text (special tokens dropped, stripped)
     "reference": "The lungs are ...",   # the study's target section, null when it has none
     "model": "Qwen/Qwen2.5-VL-3B-Instruct",  # the --model argument as given
     "dataset": "synthcxr", "split": "test",
     "section": "findings",              # which section "reference" holds
     "views": ["current PA", "current lateral", "prior PA"],  # the images given, in prompt order
     "dropped_images": 0,                # images left out by max_images
     "generation": {...}}                # the generator's settings (temperature, seed, ...)

Resume: study ids already in ``out`` are skipped and new rows appended, so an interrupted run is
continued by running the same command again. A last line cut off mid-write (no newline, invalid
JSON) is removed first; any other invalid line, or rows of another model, stop the run with a
``UserError`` rather than mix outputs. With sampling, batch ``k`` gets the seed
``seed + index of its first study in the split``, so a run resumed at a batch boundary draws what
the uninterrupted run would have drawn (for the same batch size).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from editgrpo.data.manifest import read_manifest
from editgrpo.data.prompts import PromptOptions, build_prompt
from editgrpo.data.schema import SPLITS, Study
from editgrpo.errors import UserError

ALL_SPLITS = "all"
SECTIONS = ("findings", "impression", "findings_impression")


@dataclass(frozen=True)
class GenerationPrompt:
    """One study's model input: PIL images in prompt order and the instruction text (the fields
    of ``models.generation.VisualPrompt``)."""

    study_id: str
    images: list[Any]
    text: str


# (prompts of one batch, seed for this batch) -> one decoded text per prompt, in order.
BatchGenerator = Callable[[Sequence[GenerationPrompt], int | None], list[str]]


@dataclass(frozen=True)
class GenerateOptions:
    """What to generate for and how the rows are labelled; decoding settings live in the generator
    (``settings`` is copied into every row's ``generation`` field)."""

    model: str
    split: str = "test"
    batch_size: int = 8
    seed: int | None = 0
    target_section: str = "findings"
    prompt: PromptOptions = field(default_factory=PromptOptions)
    settings: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.split not in (*SPLITS, ALL_SPLITS):
            raise UserError(f"split {self.split!r} is not one of {', '.join((*SPLITS, ALL_SPLITS))}")
        if self.batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.target_section not in SECTIONS:
            raise UserError(f"target_section {self.target_section!r} is not one of {', '.join(SECTIONS)}")


def select_split(studies: Sequence[Study], split: str, manifest: str | Path) -> list[Study]:
    """The studies of ``split`` in manifest order (all of them for ``"all"``); none is an error."""
    chosen = list(studies) if split == ALL_SPLITS else [s for s in studies if s.split == split]
    if not chosen:
        present = sorted({s.split for s in studies})
        raise UserError(
            f"{manifest}: no studies in split {split!r} (splits present: {', '.join(present) or 'none'}); "
            f"pick one of those or '{ALL_SPLITS}'"
        )
    return chosen


def read_done(out: str | Path, model: str) -> set[str]:
    """Study ids already written to ``out`` by ``model``; repairs a last line cut off mid-write."""
    path = Path(out)
    if not path.exists():
        return set()
    if not path.is_file():
        raise UserError(f"{path}: exists and is not a file")
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    tail = lines.pop()  # "" when the file ends with a newline
    if tail:
        try:
            json.loads(tail)
        except json.JSONDecodeError:
            # An interrupted write: drop the partial row; it is regenerated.
            path.write_text(text[: len(text) - len(tail)], encoding="utf-8")
        else:
            with path.open("a", encoding="utf-8") as handle:
                handle.write("\n")
            lines.append(tail)
    done: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{number}: invalid JSON ({err.msg}); fix or remove the line") from None
        if not isinstance(row, dict) or not isinstance(row.get("study_id"), str):
            raise UserError(f"{path}:{number}: not a prediction row (no string 'study_id')")
        if row.get("model") != model:
            raise UserError(
                f"{path}:{number}: holds predictions of model {row.get('model')!r}, not {model!r}; "
                "write to another --out file"
            )
        done.add(row["study_id"])
    return done


def load_images(paths: Sequence[str], study_id: str) -> list[Any]:
    """RGB PIL images (X-rays are often grayscale; the processor wants three channels)."""
    from PIL import Image, UnidentifiedImageError

    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        except FileNotFoundError:
            raise UserError(f"study {study_id}: image {path} not found") from None
        except (UnidentifiedImageError, OSError) as err:
            raise UserError(f"study {study_id}: image {path} cannot be read ({err})") from None
    return images


def generate_predictions(
    manifest: str | Path,
    out: str | Path,
    make_generator: Callable[[], BatchGenerator],
    options: GenerateOptions,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Generate the missing predictions of ``options.split`` into ``out``; returns a summary.

    ``progress(done, total)`` is called before the first batch and after each one, ``total``
    counting only the studies still to generate."""
    studies = select_split(read_manifest(manifest)[0], options.split, manifest)
    done = read_done(out, options.model)
    position = {study.study_id: index for index, study in enumerate(studies)}
    pending = [study for study in studies if study.study_id not in done]
    summary: dict[str, Any] = {
        "out": str(out),
        "split": options.split,
        "studies": len(studies),
        "skipped": len(studies) - len(pending),
        "generated": 0,
    }
    if progress is not None:
        progress(0, len(pending))
    if not pending:
        return summary
    generate = make_generator()
    image_root = Path(manifest).resolve().parent
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with Path(out).open("a", encoding="utf-8") as handle:
        for start in range(0, len(pending), options.batch_size):
            batch = pending[start : start + options.batch_size]
            prompts = [build_prompt(study, options.prompt, image_root=image_root) for study in batch]
            inputs = [
                GenerationPrompt(study.study_id, load_images(prompt.image_paths, study.study_id), prompt.text)
                for study, prompt in zip(batch, prompts, strict=True)
            ]
            seed = None if options.seed is None else options.seed + position[batch[0].study_id]
            texts = generate(inputs, seed)
            if len(texts) != len(batch):
                raise RuntimeError(f"the generator returned {len(texts)} texts for {len(batch)} prompts")
            for study, prompt, text in zip(batch, prompts, texts, strict=True):
                row = {
                    "study_id": study.study_id,
                    "prediction": text.strip(),
                    "reference": study.section(options.target_section),
                    "model": options.model,
                    "dataset": study.dataset,
                    "split": study.split,
                    "section": options.target_section,
                    "views": prompt.view_labels,
                    "dropped_images": prompt.dropped_images,
                    "generation": dict(options.settings),
                }
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            summary["generated"] += len(batch)
            if progress is not None:
                progress(summary["generated"], len(pending))
    return summary


def resolve_device(name: str) -> str:
    """``auto``: the first CUDA device when there is one, else the CPU; other names pass through."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
