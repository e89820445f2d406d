"""Chat messages for a study, following the paper's prompt (EDITGRPO.md section 5).

The instruction names every image with its view label ("the current PA image, the current lateral
image, and the prior PA image"), then adds INDICATION, TECHNIQUE and COMPARISON lines when the study
has them. Images come first in the user turn, in the order the sentence names them: current
images before prior ones, frontal (PA, AP) before lateral before others; within a view, manifest
order. ``max_images`` keeps current images first, then fills with prior images. The prior's
*report* is not given to the model unless ``include_prior_report`` (the paper gives prior images
only). Output depends on nothing but the study and the options.

Image items carry the path and, when set, ``min_pixels``/``max_pixels`` (the per-image keys of
Qwen's ``qwen_vl_utils`` message format), so the caller can load and resize them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from editgrpo.data.schema import Image, Study

INSTRUCTION_HEAD = "As a radiologist assistant, your task is to interpret a chest X-ray study."
INSTRUCTION_TAIL = (
    "Please provide a detailed description of the findings from the image(s) in the current study. "
    "If there are prior studies available, please incorporate relevant details from those as well in "
    "your analysis."
)
VIEW_WORDS = {"PA": "PA", "AP": "AP", "LATERAL": "lateral", "OTHER": "", "UNKNOWN": ""}
_VIEW_ORDER = {"PA": 0, "AP": 1, "LATERAL": 2, "OTHER": 3, "UNKNOWN": 4}


@dataclass(frozen=True)
class PromptOptions:
    max_images: int = 6
    use_prior_images: bool = True
    include_indication: bool = True
    include_technique: bool = True
    include_comparison: bool = True
    include_prior_report: bool = False
    min_pixels: int | None = None
    max_pixels: int | None = None

    def __post_init__(self) -> None:
        if self.max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {self.max_images}")
        if self.min_pixels is not None and self.max_pixels is not None and self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels {self.min_pixels} > max_pixels {self.max_pixels}; swap them")


@dataclass(frozen=True)
class StudyPrompt:
    """The user turn for one study: chat messages, and the images with their labels in order."""

    messages: list[dict[str, Any]]
    image_paths: list[str]
    view_labels: list[str]
    text: str
    dropped_images: int = 0
    target: str | None = field(default=None)


def _ordered(images: tuple[Image, ...]) -> list[Image]:
    return sorted(images, key=lambda image: _VIEW_ORDER.get(image.view, 4))  # stable within a view


def view_label(when: str, image: Image) -> str:
    """ "current PA", "prior lateral", or just "current" when the view is unknown."""
    word = VIEW_WORDS.get(image.view, "")
    return f"{when} {word}" if word else when


def _name_images(labels: list[str]) -> str:
    phrases = [f"the {label} image" for label in labels]
    if len(phrases) == 1:
        return f"Given {phrases[0]}."
    return "Given " + ", ".join(phrases[:-1]) + f", and {phrases[-1]}."


def select_images(study: Study, options: PromptOptions) -> tuple[list[tuple[str, Image]], int]:
    """(when, image) pairs in prompt order within the limit, and how many were left out."""
    current = [("current", image) for image in _ordered(study.images)]
    prior = []
    if options.use_prior_images and study.prior is not None:
        prior = [("prior", image) for image in _ordered(study.prior.images)]
    chosen = (current + prior)[: options.max_images]
    return chosen, len(current) + len(prior) - len(chosen)


def build_prompt(
    study: Study,
    options: PromptOptions | None = None,
    *,
    image_root: str | Path | None = None,
    target_section: str | None = None,
) -> StudyPrompt:
    """Messages for ``study``. Relative image paths are joined to ``image_root`` (the manifest's
    folder) when given. With ``target_section`` the reference text is returned as ``target`` and
    appended as the assistant turn (the SFT example)."""
    options = options or PromptOptions()
    chosen, dropped = select_images(study, options)
    labels = [view_label(when, image) for when, image in chosen]
    lines = [INSTRUCTION_HEAD]
    if chosen:
        lines.append(_name_images(labels))
    lines.append(INSTRUCTION_TAIL)
    text = " ".join(lines)
    extra = []
    if options.include_indication and study.indication:
        extra.append(f"INDICATION: {study.indication}")
    if options.include_technique and study.technique:
        extra.append(f"TECHNIQUE: {study.technique}")
    if options.include_comparison and study.comparison:
        extra.append(f"COMPARISON: {study.comparison}")
    if options.include_prior_report and study.prior is not None:
        prior_text = " ".join(p for p in (study.prior.findings, study.prior.impression) if p)
        if prior_text:
            extra.append(f"PRIOR REPORT: {prior_text}")
    if extra:
        text = text + "\n" + "\n".join(extra)

    paths = []
    content: list[dict[str, Any]] = []
    for _, image in chosen:
        path = image.path
        if image_root is not None and not Path(path).is_absolute():
            path = str(Path(image_root) / path)
        paths.append(path)
        item: dict[str, Any] = {"type": "image", "image": path}
        if options.min_pixels is not None:
            item["min_pixels"] = options.min_pixels
        if options.max_pixels is not None:
            item["max_pixels"] = options.max_pixels
        content.append(item)
    content.append({"type": "text", "text": text})
    messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
    target = study.section(target_section) if target_section is not None else None
    if target is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": target}]})
    return StudyPrompt(messages, paths, labels, text, dropped, target)
