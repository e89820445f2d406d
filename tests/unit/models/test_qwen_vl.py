"""One loader for tiny and real checkpoints: processor assembly, pixel bounds, vision freezing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from editgrpo.models.generation import VisualPrompt, encode_prompts
from editgrpo.models.processor import ImageOnlyQwen2_5_VLProcessor
from editgrpo.models.qwen_vl import freeze_vision_tower, load_policy, load_processor


def _as_hub_layout(src: Path, dst: Path) -> Path:
    """Rewrite a saved tiny model into the layout of the published Qwen2.5-VL repos: image
    processor settings in preprocessor_config.json naming the stock Qwen2_5_VLProcessor (whose
    video component needs torchvision), and the chat template in chat_template.json."""
    shutil.copytree(src, dst)
    processor_config = json.loads((dst / "processor_config.json").read_text())
    (dst / "processor_config.json").unlink()
    image_settings = processor_config["image_processor"]
    image_settings.update(processor_class="Qwen2_5_VLProcessor", min_pixels=3136, max_pixels=12544)
    (dst / "preprocessor_config.json").write_text(json.dumps(image_settings))
    template = (dst / "chat_template.jinja").read_text()
    (dst / "chat_template.jinja").unlink()
    (dst / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    return dst


def test_processor_loads_from_the_published_layout(tiny_model_dir: Path, tmp_path: Path, xray_images) -> None:
    hub_dir = _as_hub_layout(tiny_model_dir, tmp_path / "hub")
    processor = load_processor(str(hub_dir))
    reference = load_processor(str(tiny_model_dir))
    assert isinstance(processor, ImageOnlyQwen2_5_VLProcessor)
    assert processor.chat_template == reference.chat_template
    prompt = [VisualPrompt(xray_images, "Describe the findings.")]
    a, b = encode_prompts(processor, prompt), encode_prompts(reference, prompt)
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert torch.equal(a["pixel_values"], b["pixel_values"])


def test_pixel_bounds_set_the_number_of_visual_tokens(tiny_model_dir: Path, xray_images) -> None:
    small = load_processor(str(tiny_model_dir), min_pixels=56 * 56, max_pixels=56 * 56)
    large = load_processor(str(tiny_model_dir), min_pixels=224 * 224, max_pixels=224 * 224)
    prompt = [VisualPrompt(xray_images[:1], "x")]
    small_grid = encode_prompts(small, prompt)["image_grid_thw"][0].tolist()
    large_grid = encode_prompts(large, prompt)["image_grid_thw"][0].tolist()
    # 56x56 px -> 4x4 patches of 14 px; 224x224 -> 16x16 (temporal 1 for a still image).
    assert small_grid == [1, 4, 4]
    assert large_grid == [1, 16, 16]
    with pytest.raises(ValueError, match="min_pixels=5000 is larger than max_pixels=4000"):
        load_processor(str(tiny_model_dir), min_pixels=5000, max_pixels=4000)


def test_processor_pads_left_for_generation(tiny_model_dir: Path) -> None:
    assert load_processor(str(tiny_model_dir)).tokenizer.padding_side == "left"
    assert load_processor(str(tiny_model_dir), padding_side="right").tokenizer.padding_side == "right"


def test_video_input_is_refused_with_a_reason(tiny_model_dir: Path) -> None:
    processor = load_processor(str(tiny_model_dir))
    with pytest.raises(ValueError, match="does not process videos"):
        processor(text=["<|vision_start|><|video_pad|><|vision_end|>"], videos=[[]])


def test_freeze_vision_leaves_only_the_language_model_trainable(tiny_model_dir: Path) -> None:
    model = load_policy(str(tiny_model_dir), freeze_vision=True)
    visual = {id(p) for p in model.model.visual.parameters()}
    assert visual
    for name, parameter in model.named_parameters():
        assert parameter.requires_grad == (id(parameter) not in visual), name
    fresh = load_policy(str(tiny_model_dir))
    assert all(p.requires_grad for p in fresh.parameters())
    assert freeze_vision_tower(fresh) == sum(p.numel() for p in fresh.model.visual.parameters())


def test_dtype_and_attention_are_applied_and_checked(tiny_model_dir: Path) -> None:
    model = load_policy(str(tiny_model_dir), dtype="bfloat16", attn_implementation="eager")
    assert next(model.parameters()).dtype == torch.bfloat16
    assert model.config._attn_implementation == "eager"
    with pytest.raises(ValueError, match="dtype 'fp8' is not one of"):
        load_policy(str(tiny_model_dir), dtype="fp8")
    with pytest.raises(ValueError, match="attn_implementation 'flash' is not one of"):
        load_policy(str(tiny_model_dir), attn_implementation="flash")
