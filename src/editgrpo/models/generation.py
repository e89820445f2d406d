"""Batched report generation with a Qwen2.5-VL policy: images + prompt in, decoded text out.

Shapes: B prompts; each prompt carries its own number of images (current + prior, frontal +
lateral); the processor flattens all images of the batch in prompt order and
``image_grid_thw`` (num_images, 3) says how many patches each contributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class VisualPrompt:
    """One prompt: its images, in the order the text refers to them, and the instruction text."""

    images: Sequence[Any]  # PIL images
    text: str


def build_messages(prompt: VisualPrompt) -> list[dict[str, Any]]:
    """A one-turn chat: every image first, then the instruction (the layout of Qwen2.5-VL's own
    multi-image examples and of the paper's prompt, EDITGRPO.md section 5)."""
    content: list[dict[str, Any]] = [{"type": "image"} for _ in prompt.images]
    content.append({"type": "text", "text": prompt.text})
    return [{"role": "user", "content": content}]


def render_prompt(processor: Any, prompt: VisualPrompt) -> str:
    """The chat-template text of one prompt, ending with the assistant turn's opening: one
    ``<|vision_start|><|image_pad|><|vision_end|>`` per image, in ``prompt.images`` order. The one
    rendering both engines use (HF ``encode_prompts`` here, vLLM in ``generation_vllm.py``), so
    the two see the same text."""
    return processor.apply_chat_template(build_messages(prompt), add_generation_prompt=True, tokenize=False)


def encode_prompts(processor: Any, prompts: Sequence[VisualPrompt]) -> Any:
    """Tokenise a batch of prompts (left-padded) with their images into model inputs."""
    texts = [render_prompt(processor, p) for p in prompts]
    images = [image for p in prompts for image in p.images]
    return processor(text=texts, images=images or None, padding=True, return_tensors="pt")


def generate_reports(
    model: Any,
    processor: Any,
    prompts: Sequence[VisualPrompt],
    *,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    seed: int | None = None,
) -> list[str]:
    """Decode one report per prompt. ``temperature=0`` is greedy; otherwise sampling with
    ``seed`` (when given) so a run can be repeated."""
    import torch

    if not prompts:
        return []
    if processor.tokenizer.padding_side != "left":
        raise ValueError("generate_reports needs a left-padding tokenizer (load_processor sets it)")
    inputs = encode_prompts(processor, prompts).to(model.device)
    if seed is not None:
        torch.manual_seed(seed)
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, **sampling)
    # (B, prompt_len + new) -> (B, new): everything after the shared (left-padded) prompt length.
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    return processor.batch_decode(new_tokens, skip_special_tokens=True)
