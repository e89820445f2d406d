"""Tiny offline Qwen2.5-VL: it learns, survives save/load, and generates for multi-image prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, Qwen2_5_VLForConditionalGeneration

import editgrpo.models.tiny as tiny
from editgrpo.models.generation import VisualPrompt, build_messages, encode_prompts, generate_reports
from editgrpo.models.processor import ImageOnlyQwen2_5_VLProcessor
from editgrpo.models.qwen_vl import load_policy, load_processor


def _training_batch(processor, images):
    """One image+prompt+answer example; labels cover the answer tokens only."""
    prompt = VisualPrompt(images[:2], "Describe the findings.")
    answer = "The lungs are clear. There is no pleural effusion.<|im_end|>"
    messages = build_messages(prompt)
    prompt_text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    batch = processor(text=[prompt_text + answer], images=list(prompt.images), return_tensors="pt")
    prompt_len = processor(text=[prompt_text], images=list(prompt.images), return_tensors="pt")[
        "input_ids"
    ].shape[1]
    labels = batch["input_ids"].clone()
    labels[:, :prompt_len] = -100
    return batch, labels


def test_sizes_have_the_documented_parameter_counts() -> None:
    counts = {}
    for size in tiny.TINY_SIZES:
        model, _ = tiny.build_tiny_model(size)
        counts[size] = sum(p.numel() for p in model.parameters())
        assert isinstance(model, Qwen2_5_VLForConditionalGeneration)
    assert 0.3e6 < counts["xs"] < 1.5e6
    assert 4e6 < counts["s"] < 10e6
    assert 15e6 < counts["m"] < 30e6


def test_unknown_size_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="valid sizes: xs, s, m"):
        tiny.build_tiny_model("xxl")


def test_same_seed_same_weights_and_tokenizer() -> None:
    a, pa = tiny.build_tiny_model("xs", seed=3)
    b, pb = tiny.build_tiny_model("xs", seed=3)
    c, _ = tiny.build_tiny_model("xs", seed=4)
    assert pa.tokenizer.get_vocab() == pb.tokenizer.get_vocab()
    for (name, pa_), (_, pb_) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(pa_, pb_), name
    assert any(not torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters(), strict=True))


def test_tokenizer_has_qwen_special_tokens_and_is_lossless() -> None:
    _, processor = tiny.build_tiny_model("xs")
    tok = processor.tokenizer
    ids = [tok.convert_tokens_to_ids(t) for t in tiny.QWEN_SPECIAL_TOKENS]
    assert len(set(ids)) == len(ids) and tok.unk_token_id not in ids
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    # Each special token is one id, never split into bytes.
    vision_start, vision_end, image_pad = ids[9], ids[10], ids[12]
    assert tok("<|vision_start|><|image_pad|><|vision_end|>")["input_ids"] == [
        vision_start,
        image_pad,
        vision_end,
    ]
    # Byte-level BPE: text the corpus never saw (accents, CJK, emoji) round-trips exactly.
    text = "Épanchement pleural 胸腔积液 ✓ 12.5 mm\ttabs\nnew line"
    assert tok.decode(tok(text)["input_ids"]) == text


def test_user_corpus_shapes_the_vocabulary() -> None:
    word = "pneumomediastinum"
    default_tok = tiny.train_tokenizer(tiny.default_corpus(), 1024)
    corpus = "\n".join([f"There is {word} today."] * 50)
    user_tok = tiny.train_tokenizer(corpus, 1024)
    assert len(user_tok(" " + word)["input_ids"]) == 1
    assert len(default_tok(" " + word)["input_ids"]) > 1
    with pytest.raises(ValueError, match="corpus is empty"):
        tiny.train_tokenizer("  \n", 1024)


def test_chat_template_renders_the_qwen_vl_layout() -> None:
    _, processor = tiny.build_tiny_model("xs")
    messages = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Describe."}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "No acute process."}]},
    ]
    text = processor.apply_chat_template(messages, tokenize=False)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|><|vision_start|><|image_pad|>"
        "<|vision_end|>Describe.<|im_end|>\n"
        "<|im_start|>assistant\nNo acute process.<|im_end|>\n"
    )
    prompt = processor.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    # The {% generation %} block marks exactly the assistant answer (TRL's assistant-only loss).
    encoded = processor.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Describe."}, {"role": "assistant", "content": "No acute process."}],
        return_assistant_tokens_mask=True,
        return_dict=True,
    )
    masked = [i for i, m in zip(encoded["input_ids"], encoded["assistant_masks"], strict=True) if m]
    assert processor.tokenizer.decode(masked) == "No acute process.<|im_end|>"


def test_tiny_model_learns_a_fixed_batch(xray_images) -> None:
    """Next-token loss on one fixed batch falls over 20 AdamW steps (the model can fit data)."""
    model, processor = tiny.build_tiny_model("xs", seed=0)
    model.train()
    batch, labels = _training_batch(processor, xray_images)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = model(**batch, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 4.0, losses  # random init: about ln(vocab)
    assert losses[-1] < 0.5 * losses[0], losses
    # Gradients reached the vision tower too: the images are part of the computation.
    assert model.model.visual.patch_embed.proj.weight.grad.abs().sum() > 0


def test_round_trip_through_auto_classes(tiny_model_dir: Path, xray_images) -> None:
    processor = load_processor(str(tiny_model_dir))
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    assert isinstance(processor, ImageOnlyQwen2_5_VLProcessor)
    assert type(model) is Qwen2_5_VLForConditionalGeneration
    summary = json.loads((tiny_model_dir / "editgrpo_tiny.json").read_text())
    assert summary["parameters"] == sum(p.numel() for p in model.parameters())

    rebuilt, rebuilt_processor = tiny.build_tiny_model("xs", seed=0)
    assert processor.tokenizer.get_vocab() == rebuilt_processor.tokenizer.get_vocab()
    assert processor.chat_template == rebuilt_processor.chat_template
    inputs = encode_prompts(processor, [VisualPrompt(xray_images, "Describe the findings.")])
    with torch.no_grad():
        assert torch.allclose(model(**inputs).logits, rebuilt(**inputs).logits, atol=1e-6)


def test_generate_with_several_images_per_prompt(tiny_model_dir: Path, xray_images) -> None:
    processor = load_processor(str(tiny_model_dir))
    model = load_policy(str(tiny_model_dir), dtype="float32")
    prompts = [
        VisualPrompt(xray_images, "Current PA, current lateral and prior PA. Describe the findings."),
        VisualPrompt(xray_images[:2], "Current PA and lateral."),
    ]
    inputs = encode_prompts(processor, prompts)
    # Five images in prompt order; each contributes grid_t * grid_h * grid_w / 4 placeholder tokens.
    assert inputs["image_grid_thw"].shape == (5, 3)
    image_token = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    expected = [
        int(inputs["image_grid_thw"][:3].prod(dim=1).sum()) // 4,
        int(inputs["image_grid_thw"][3:].prod(dim=1).sum()) // 4,
    ]
    assert (inputs["input_ids"] == image_token).sum(dim=1).tolist() == expected
    assert inputs["attention_mask"][1, 0] == 0  # left padding for the shorter prompt

    first = generate_reports(model, processor, prompts, max_new_tokens=12)
    again = generate_reports(model, processor, prompts, max_new_tokens=12)
    assert first == again and len(first) == 2 and all(first)
    sampled = generate_reports(model, processor, prompts, max_new_tokens=12, temperature=1.0, seed=5)
    assert sampled == generate_reports(model, processor, prompts, max_new_tokens=12, temperature=1.0, seed=5)


def test_images_change_the_output(tiny_model_dir: Path, xray_images) -> None:
    processor = load_processor(str(tiny_model_dir))
    model = load_policy(str(tiny_model_dir), dtype="float32")
    same_text = "Describe the findings."
    a = encode_prompts(processor, [VisualPrompt([xray_images[0]], same_text)])
    b = encode_prompts(processor, [VisualPrompt([xray_images[0].transpose(0)], same_text)])
    with torch.no_grad():
        assert not torch.allclose(model(**a).logits[:, -1], model(**b).logits[:, -1])


def test_saved_checkpoints_name_the_stock_processor(tiny_model_dir: Path) -> None:
    """The files say Qwen2_5_VLProcessor (with the stock video entry), so transformers alone builds
    the stock processor: here, without torchvision, it asks for torchvision exactly as it does for
    the published Qwen2.5-VL checkpoints; editgrpo loads the same files with its image-only class."""
    config = json.loads((tiny_model_dir / "processor_config.json").read_text())
    assert config["processor_class"] == "Qwen2_5_VLProcessor"
    video = config["video_processor"]
    assert video["video_processor_type"] == "Qwen2VLVideoProcessor"
    image = config["image_processor"]
    assert {k: v for k, v in image.items() if k != "image_processor_type"} == {
        k: v for k, v in video.items() if k != "video_processor_type"
    }
    assert json.loads((tiny_model_dir / "tokenizer_config.json").read_text())["processor_class"] == (
        "Qwen2_5_VLProcessor"
    )
    from transformers.models.auto.processing_auto import processor_class_from_name

    assert processor_class_from_name("Qwen2_5_VLProcessor").__module__.startswith("transformers.")
    import importlib.util

    if importlib.util.find_spec("torchvision") is None:
        with pytest.raises(ImportError, match="Torchvision"):
            AutoProcessor.from_pretrained(tiny_model_dir)
    else:  # an environment with torchvision gets the stock processor
        assert type(AutoProcessor.from_pretrained(tiny_model_dir)).__name__ == "Qwen2_5_VLProcessor"


def test_transformers_alone_loads_a_checkpoint(tiny_model_dir: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys, json; from transformers import AutoModelForImageTextToText, AutoTokenizer;"
        f"m = AutoModelForImageTextToText.from_pretrained({str(tiny_model_dir)!r});"
        f"t = AutoTokenizer.from_pretrained({str(tiny_model_dir)!r});"
        "assert not [k for k in sys.modules if k.startswith('editgrpo')];"
        "print(json.dumps([type(m).__name__, len(t)]))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    name, vocab = json.loads(run.stdout.strip().splitlines()[-1])
    assert name == "Qwen2_5_VLForConditionalGeneration" and vocab > 100
