"""``make demo``: the most complete real job the package can run end to end, on a CPU, offline.

Today (foundation stage): build a tiny random-weight Qwen2.5-VL with its offline tokenizer, save it,
load it back through the same loader a real checkpoint uses, and generate a report for a
multi-view study (current frontal + current lateral + prior frontal). The text is noise: the
weights are random. The demo issue replaces this with SFT -> Dr. GRPO vs EditGRPO on SynthCXR.

Outputs under ``out``: ``tiny-model/`` (a loadable checkpoint), ``reports.json`` (prompt, views,
generated text) and ``resolved_config.yaml``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from editgrpo.config import GenerateConfig, ModelConfig, save_resolved_config

# The paper's instruction (EDITGRPO.md section 5) for a three-image study.
DEMO_PROMPT = (
    "As a radiologist assistant, your task is to interpret a chest X-ray study. Given the current PA "
    "image, the current lateral image, and the prior PA image. Please provide a detailed description "
    "of the findings from the image(s) in the current study. If there are prior studies available, "
    "please incorporate relevant details from those as well in your analysis."
)


def placeholder_radiograph(view: str, size: int = 112, seed: int = 0) -> Any:
    """A grayscale drawing shaped like a chest film (dark lungs, bright mediastinum); stands in
    for images until the data layer's SynthCXR exists."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    image = Image.new("L", (size, size), 170)
    draw = ImageDraw.Draw(image)
    s = size
    if view == "lateral":
        draw.ellipse([0.2 * s, 0.15 * s, 0.8 * s, 0.85 * s], fill=60)
        draw.ellipse([0.45 * s, 0.45 * s, 0.75 * s, 0.8 * s], fill=150)
    else:
        draw.ellipse([0.12 * s, 0.15 * s, 0.47 * s, 0.85 * s], fill=55)
        draw.ellipse([0.53 * s, 0.15 * s, 0.88 * s, 0.85 * s], fill=55)
        draw.ellipse([0.40 * s, 0.45 * s, 0.70 * s, 0.80 * s], fill=185)
    noise = rng.normal(0.0, 8.0, (size, size))
    pixels = np.clip(np.asarray(image.filter(ImageFilter.GaussianBlur(2)), dtype=float) + noise, 0, 255)
    return Image.fromarray(pixels.astype("uint8"), mode="L")


def run_demo(out: str | Path, size: str = "s", seed: int = 0, max_new_tokens: int = 48) -> dict[str, Any]:
    from transformers.utils import logging as hf_logging

    from editgrpo.models.generation import VisualPrompt, generate_reports
    from editgrpo.models.qwen_vl import load_policy, load_processor
    from editgrpo.models.tiny import save_tiny_model

    hf_logging.disable_progress_bar()  # the demo prints its own summary; bars would bury it
    out = Path(out)
    model_dir = out / "tiny-model"
    summary = save_tiny_model(model_dir, size=size, seed=seed)
    config = GenerateConfig(
        seed=seed,
        model=ModelConfig(
            name_or_path=str(model_dir),
            dtype="float32",
            min_pixels=56 * 56,
            max_pixels=112 * 112,
            max_images=3,
        ),
        output=str(out / "reports.json"),
        batch_size=1,
        max_new_tokens=max_new_tokens,
        temperature=1.0,
    )
    save_resolved_config(config, out)
    processor = load_processor(
        config.model.name_or_path, min_pixels=config.model.min_pixels, max_pixels=config.model.max_pixels
    )
    model = load_policy(config.model.name_or_path, dtype=config.model.dtype)
    views = ["current PA", "current lateral", "prior PA"]
    images = [placeholder_radiograph(v.split()[-1], seed=seed + i) for i, v in enumerate(views)]
    (report,) = generate_reports(
        model,
        processor,
        [VisualPrompt(images, DEMO_PROMPT)],
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        seed=seed,
    )
    result = {"model": summary, "views": views, "prompt": DEMO_PROMPT, "report": report}
    Path(config.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result
