"""Load a Qwen2.5-VL policy and its processor from a hub id or a local directory.

One code path serves real checkpoints (``Qwen/Qwen2.5-VL-3B-Instruct``) and the tiny offline
models of ``models/tiny.py``: the processor is always ``ImageOnlyQwen2_5_VLProcessor`` (tokenizer +
image processor, no torchvision-based video processor), assembled from whatever processor files the
directory carries.

Pixel bounds: the paper resizes images to 262,144..401,408 pixels (EDITGRPO.md section 5); pass
them as ``min_pixels``/``max_pixels``. They are applied to the image processor after loading, so
they hold whatever the directory saved.
"""

from __future__ import annotations

from typing import Any

from editgrpo.models.processor import ImageOnlyQwen2_5_VLProcessor, register_auto_classes

DTYPES = ("float32", "bfloat16", "float16", "auto")
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")


def load_processor(
    name_or_path: str,
    *,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    padding_side: str = "left",
) -> ImageOnlyQwen2_5_VLProcessor:
    """The image-only Qwen2.5-VL processor of a checkpoint.

    ``padding_side`` defaults to left: batched generation appends after the prompt, so prompts
    must end at the same position (TRL's GRPOTrainer pads prompts on the left too)."""
    from transformers.image_utils import SizeDict

    register_auto_classes()
    if min_pixels is not None and max_pixels is not None and min_pixels > max_pixels:
        raise ValueError(f"min_pixels={min_pixels} is larger than max_pixels={max_pixels}; swap them")
    processor = ImageOnlyQwen2_5_VLProcessor.from_pretrained(name_or_path)
    image_processor = processor.image_processor
    if min_pixels is not None or max_pixels is not None:
        image_processor.size = SizeDict(
            shortest_edge=min_pixels if min_pixels is not None else image_processor.size.shortest_edge,
            longest_edge=max_pixels if max_pixels is not None else image_processor.size.longest_edge,
        )
    processor.tokenizer.padding_side = padding_side
    return processor


def load_policy(
    name_or_path: str,
    *,
    dtype: str = "float32",
    attn_implementation: str = "sdpa",
    freeze_vision: bool = False,
    device: str | None = None,
) -> Any:
    """A ``Qwen2_5_VLForConditionalGeneration`` from a hub id or local path.

    ``freeze_vision`` freezes the vision tower (patch embedding and blocks) and its patch merger,
    as in the paper's RL stage (EDITGRPO.md section 5: "vision tower frozen in RL")."""
    import torch
    from transformers import AutoModelForImageTextToText

    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ValueError(
            f"attn_implementation {attn_implementation!r} is not one of {', '.join(ATTN_IMPLEMENTATIONS)}"
        )
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    model = AutoModelForImageTextToText.from_pretrained(
        name_or_path, dtype=torch_dtype, attn_implementation=attn_implementation
    )
    if model.config.model_type != "qwen2_5_vl":
        raise ValueError(
            f"{name_or_path} is a {model.config.model_type!r} model; editgrpo's policy loader supports "
            "qwen2_5_vl checkpoints"
        )
    if freeze_vision:
        freeze_vision_tower(model)
    if device is not None:
        model.to(device)
    return model


def load_model_section(model: Any) -> tuple[ImageOnlyQwen2_5_VLProcessor, Any]:
    """``(processor, policy)`` of a recipe's ``model:`` section (``config.ModelConfig``: name_or_path,
    dtype, attn_implementation, min/max_pixels, freeze_vision): the one loading path of SFT and RL."""
    processor = load_processor(model.name_or_path, min_pixels=model.min_pixels, max_pixels=model.max_pixels)
    policy = load_policy(
        model.name_or_path,
        dtype=model.dtype,
        attn_implementation=model.attn_implementation,
        freeze_vision=model.freeze_vision,
    )
    return processor, policy


def vision_tower(model: Any) -> Any:
    """The vision encoder (blocks + merger) of a Qwen2.5-VL model."""
    return model.model.visual


def freeze_vision_tower(model: Any) -> int:
    """Stop gradients through the vision encoder and its merger; returns how many parameters froze."""
    frozen = 0
    for parameter in vision_tower(model).parameters():
        parameter.requires_grad_(False)
        frozen += parameter.numel()
    return frozen
