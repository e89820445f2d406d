"""Tiny Qwen2.5-VL models built offline: random weights, a BPE tokenizer trained here, a PIL processor.

No model can be downloaded on the development and CI machines, so every test that needs a policy
uses a model built by this module in the real architecture (``Qwen2_5_VLForConditionalGeneration``:
windowed vision transformer, 2x2 patch merger, M-RoPE text decoder). What differs from a real
checkpoint is only size and the tokenizer's vocabulary:

- the tokenizer is a byte-level BPE trained on a small corpus with Qwen2's pre-tokenizer, and carries
  Qwen's special tokens (``<|im_start|>``, ``<|im_end|>``, ``<|vision_start|>``, ``<|image_pad|>`` ...)
  and a chat template that renders the Qwen2-VL chat format, so prompts are laid out as for the real
  model;
- the image processor is ``Qwen2VLImageProcessorPil`` with small pixel bounds (few visual tokens);
- the processor is ``ImageOnlyQwen2_5_VLProcessor`` (no video processor, see ``processor.py``).

Importing this module registers that processor class with ``AutoProcessor`` (the one deliberate
import-time effect, as transformers' own ``register`` examples do), for checkpoints saved before the
processor files named the stock class; new ones name ``Qwen2_5_VLProcessor`` (``processor.py``) and
load with ``models.qwen_vl.load_processor``.

Sizes (``TINY_SIZES``): ``xs`` (~0.6M parameters, unit tests; the shape a CPU prototype found best
for SynthCXR, text 128 x 2 layers, vision 64 x 2), ``s`` (~5M) and ``m`` (~24M) for demos.
Counts are with the built-in corpus (a 512-token vocabulary); a larger corpus grows the embedding.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from editgrpo.models.processor import ImageOnlyQwen2_5_VLProcessor, register_auto_classes

register_auto_classes()

# Qwen2.5-VL's special tokens, in the order Qwen's tokenizer numbers them after the BPE vocabulary
# (Qwen2.5-VL tokenizer_config.json: <|endoftext|> 151643 ... <|video_pad|> 151656).
QWEN_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

# The Qwen2-VL chat layout: "<|im_start|>{role}\n{content}<|im_end|>\n", each image item rendered as
# <|vision_start|><|image_pad|><|vision_end|> where it stands in the content, a default system
# turn when none is given, and "<|im_start|>assistant\n" as the generation prompt. The assistant
# content sits in {% generation %} so `return_assistant_tokens_mask` (TRL's assistant-only loss)
# can find it.
QWEN_VL_CHAT_TEMPLATE = (
    "{%- macro render_content(content) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- else -%}"
    "{%- for item in content -%}"
    "{%- if item['type'] == 'image' or 'image' in item or 'image_url' in item -%}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{%- endmacro -%}"
    "{%- if messages[0]['role'] != 'system' -%}"
    "<|im_start|>system{{ '\\n' }}" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>{{ '\\n' }}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "<|im_start|>{{ message['role'] }}{{ '\\n' }}"
    "{%- if message['role'] == 'assistant' -%}"
    "{% generation %}{{ render_content(message['content']) }}<|im_end|>{% endgeneration %}"
    "{%- else -%}"
    "{{ render_content(message['content']) }}<|im_end|>"
    "{%- endif -%}"
    "{{ '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant{{ '\\n' }}{%- endif -%}"
)


@dataclass(frozen=True)
class TinySpec:
    """Shape of a tiny Qwen2.5-VL. Head dims are hidden / heads; M-RoPE sections split head_dim / 2."""

    text_hidden: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    text_intermediate: int
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_intermediate: int
    vocab_size: int  # upper bound for BPE training (the corpus may support fewer merges)
    min_pixels: int
    max_pixels: int


TINY_SIZES: dict[str, TinySpec] = {
    # 112 px images -> 8x8 patches of 14 px -> 16 visual tokens after the 2x2 merge.
    "xs": TinySpec(128, 2, 4, 2, 256, 64, 2, 2, 128, 1024, 56 * 56, 112 * 112),
    "s": TinySpec(256, 4, 4, 2, 1024, 128, 2, 4, 512, 2048, 56 * 56, 112 * 112),
    "m": TinySpec(512, 6, 8, 2, 1536, 256, 4, 4, 768, 4096, 56 * 56, 224 * 224),
}


def _mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary frequencies into (temporal, height, width) sections.

    Qwen2.5-VL uses [16, 24, 24] for head_dim 128 (config.json, rope_scaling.mrope_section); we keep
    the same 2:3:3 proportions."""
    half = head_dim // 2
    temporal = half // 4
    height = (half - temporal) // 2
    return [temporal, height, half - temporal - height]


def default_corpus() -> str:
    """The built-in training text for tiny tokenizers: radiology-style sentences written for this
    project (not taken from any dataset)."""
    return resources.files("editgrpo.models").joinpath("tiny_corpus.txt").read_text(encoding="utf-8")


def train_tokenizer(corpus: str, vocab_size: int):
    """Train a byte-level BPE on ``corpus`` with Qwen2's normaliser and pre-tokenizer and return a
    ``Qwen2Tokenizer`` carrying Qwen's special tokens and the Qwen2-VL chat template.

    Byte-level: every string is encodable whatever the corpus, so a small corpus only makes the
    encoding longer, never lossy."""
    from tokenizers import pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers import Qwen2Tokenizer

    if not corpus.strip():
        raise ValueError("train_tokenizer: the corpus is empty; give a text file with some sentences")
    # Borrow the stock Qwen2 pipeline (NFC normaliser, Qwen2 split regex, byte-level mapping) from
    # an empty Qwen2Tokenizer, then train a BPE model in it.
    backend = Qwen2Tokenizer(vocab={"<|endoftext|>": 0}, merges=[])._tokenizer
    backend.model = BPE(dropout=None, unk_token=None, fuse_unk=False, byte_fallback=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    backend.train_from_iterator(corpus.splitlines(), trainer=trainer)
    model_state = json.loads(backend.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model_state["merges"]]

    tokenizer = Qwen2Tokenizer(
        vocab=model_state["vocab"],
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL_TOKENS)})
    tokenizer.chat_template = QWEN_VL_CHAT_TEMPLATE
    tokenizer.model_max_length = 4096
    return tokenizer


def build_tiny_processor(spec: TinySpec, corpus: str | None = None) -> ImageOnlyQwen2_5_VLProcessor:
    """Tokenizer trained on ``corpus`` (default: ``default_corpus()``) + small-bounds PIL image
    processor, assembled into the image-only Qwen2.5-VL processor."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = train_tokenizer(default_corpus() if corpus is None else corpus, spec.vocab_size)
    image_processor = Qwen2VLImageProcessorPil(min_pixels=spec.min_pixels, max_pixels=spec.max_pixels)
    return ImageOnlyQwen2_5_VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=QWEN_VL_CHAT_TEMPLATE
    )


def build_tiny_config(spec: TinySpec, tokenizer):
    """A ``Qwen2_5_VLConfig`` of the given shape whose special-token ids match ``tokenizer``."""
    from transformers import Qwen2_5_VLConfig

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS}
    head_dim = spec.text_hidden // spec.text_heads
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": spec.text_hidden,
        "intermediate_size": spec.text_intermediate,
        "num_hidden_layers": spec.text_layers,
        "num_attention_heads": spec.text_heads,
        "num_key_value_heads": spec.text_kv_heads,
        "max_position_embeddings": 4096,
        "max_window_layers": spec.text_layers,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1_000_000.0,
            "mrope_section": _mrope_section(head_dim),
        },
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "tie_word_embeddings": True,
    }
    vision_config = {
        "depth": spec.vision_layers,
        "hidden_size": spec.vision_hidden,
        "intermediate_size": spec.vision_intermediate,
        "num_heads": spec.vision_heads,
        "out_hidden_size": spec.text_hidden,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        # Like the real model (full attention every 8th block), the last block attends globally.
        "fullatt_block_indexes": [spec.vision_layers - 1],
    }
    return Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def build_tiny_model(
    size: str = "xs", corpus: str | None = None, seed: int = 0
) -> tuple[object, ImageOnlyQwen2_5_VLProcessor]:
    """Build (model, processor) in memory. Same ``size``, ``corpus`` and ``seed`` give the same
    weights and tokenizer."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    spec = tiny_spec(size)
    processor = build_tiny_processor(spec, corpus)
    config = build_tiny_config(spec, processor.tokenizer)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        bos_token_id=config.text_config.bos_token_id,
        eos_token_id=config.text_config.eos_token_id,
        pad_token_id=config.text_config.pad_token_id,
    )
    model.eval()
    return model, processor


def tiny_spec(size: str) -> TinySpec:
    if size not in TINY_SIZES:
        raise ValueError(f"unknown tiny model size {size!r}; valid sizes: {', '.join(TINY_SIZES)}")
    return TINY_SIZES[size]


def save_tiny_model(
    out_dir: str | Path, size: str = "xs", corpus: str | None = None, seed: int = 0
) -> dict[str, object]:
    """Build a tiny model and save model + processor to ``out_dir`` in the Hugging Face layout.

    Returns a summary (size, parameter counts, vocabulary) that is also written to
    ``out_dir/editgrpo_tiny.json`` so a run can say what it trained."""
    model, processor = build_tiny_model(size, corpus, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    summary = {
        "size": size,
        "seed": seed,
        "spec": asdict(tiny_spec(size)),
        "parameters": sum(p.numel() for p in model.parameters()),
        "vision_parameters": sum(p.numel() for p in model.model.visual.parameters()),
        "vocab_size": len(processor.tokenizer),
        "corpus": "built-in" if corpus is None else "user",
    }
    (out / "editgrpo_tiny.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
