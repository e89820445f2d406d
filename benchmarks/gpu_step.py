"""One RL training step of the Qwen2.5-VL-3B architecture on one GPU: step time and peak memory.

The model is built from a ``Qwen2_5_VLConfig`` with the 3B sizes (Qwen/Qwen2.5-VL-3B-Instruct's
config.json: text hidden 2048, 36 layers, 16 heads, 2 KV heads, MLP 11008, vocab 151936, tied
embeddings; vision depth 32, hidden 1280, MLP 3420, 16 heads, out_hidden 2048, full attention in
blocks 7/15/23/31) with random weights, in bf16 with sdpa attention and gradient checkpointing, the
vision tower frozen (EDITGRPO.md section 5). A batch is B completions, each a study with one image
of ~``--pixels`` pixels (random ``pixel_values`` with the ``image_grid_thw`` of that size and one
image-pad token per merged 28x28 block), a ~``--prompt-tokens`` text prompt and
``--completion-tokens`` completion tokens.

One step, what the trainer does per micro-batch when the optimizer steps once per rollout batch:
1. reference log-probs: a no-grad forward of a frozen copy of the model (the KL reference);
2. policy log-probs: a forward with gradients (only the completion positions go through lm_head);
3. ``editgrpo.core.losses.policy_loss``: on_policy, old log-probs = the detached policy log-probs
   (one optimizer step per rollout batch), random advantages, k3 KL with beta 0.01, dr_grpo;
4. backward, gradient clipping at 1.0, ``torch.optim.AdamW`` step (lr 1e-6, wd 0.01).
Rollout generation and reward scoring are not part of the step. The optimizer keeps its state in
the parameters' dtype (bf16): a DeepSpeed run keeps fp32 master weights and moments instead
(~12 more bytes per trainable parameter, sharded over the ranks), so peak memory here is what one
GPU needs for weights + activations, not a ZeRO-3 rank's figure.

Figures: median step time over ``--steps`` steps after ``--warmup`` warm-up steps, peak memory
(``torch.cuda.max_memory_allocated``), tokens/s (all B x T tokens) and completion tokens/s.
Without CUDA the last line is ``{"skipped": "no CUDA device"}`` (exit 0). ``--tiny`` runs the same
code with a tiny config on the CPU (on CUDA when present), to check the code path anywhere:

    .venv/bin/python benchmarks/gpu_step.py            # the 3B architecture, needs a GPU
    .venv/bin/python benchmarks/gpu_step.py --tiny     # seconds on a CPU

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import time
from dataclasses import dataclass

# Qwen2.5-VL special tokens (Qwen/Qwen2.5-VL-3B-Instruct config.json).
QWEN_IDS = {
    "bos": 151643,
    "eos": 151645,
    "vision_start": 151652,
    "vision_end": 151653,
    "image": 151655,
    "video": 151656,
}


@dataclass(frozen=True)
class Shape:
    text_hidden: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    text_intermediate: int
    vocab: int
    vision_depth: int
    vision_hidden: int
    vision_intermediate: int
    vision_heads: int
    fullatt_blocks: tuple[int, ...]
    mrope_section: tuple[int, int, int]
    ids: dict[str, int]


QWEN2_5_VL_3B = Shape(
    2048, 36, 16, 2, 11008, 151936, 32, 1280, 3420, 16, (7, 15, 23, 31), (16, 24, 24), QWEN_IDS
)
# head_dim 16 -> 8 rotary frequencies split 2:3:3 like the real [16, 24, 24].
TINY = Shape(
    64,
    2,
    4,
    2,
    128,
    512,
    2,
    32,
    64,
    2,
    (1,),
    (2, 3, 3),
    {"bos": 504, "eos": 505, "vision_start": 502, "vision_end": 503, "image": 500, "video": 501},
)


def build_config(shape: Shape):
    from transformers import Qwen2_5_VLConfig

    ids = shape.ids
    text_config = {
        "vocab_size": shape.vocab,
        "hidden_size": shape.text_hidden,
        "intermediate_size": shape.text_intermediate,
        "num_hidden_layers": shape.text_layers,
        "num_attention_heads": shape.text_heads,
        "num_key_value_heads": shape.text_kv_heads,
        "max_position_embeddings": 128_000,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1_000_000.0,
            "mrope_section": list(shape.mrope_section),
        },
        "bos_token_id": ids["bos"],
        "eos_token_id": ids["eos"],
        "pad_token_id": ids["bos"],
        "tie_word_embeddings": True,
        "use_cache": False,
    }
    vision_config = {
        "depth": shape.vision_depth,
        "hidden_size": shape.vision_hidden,
        "intermediate_size": shape.vision_intermediate,
        "num_heads": shape.vision_heads,
        "out_hidden_size": shape.text_hidden,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": list(shape.fullatt_blocks),
    }
    return Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["image"],
        video_token_id=ids["video"],
        vision_start_token_id=ids["vision_start"],
        vision_end_token_id=ids["vision_end"],
        tie_word_embeddings=True,
    )


def image_grid(pixels: int) -> tuple[int, int]:
    """(height, width) in 14 px patches, both even (2x2 merge), as square as possible, with
    height * width * 14^2 <= pixels (the processor's max_pixels rule)."""
    side = max(2, 2 * int(math.sqrt(pixels) // 28))
    height = side + 2 if (side + 2) * side * 196 <= pixels else side
    return height, side


def make_batch(
    shape: Shape, batch: int, pixels: int, prompt_tokens: int, completion_tokens: int, device, dtype
):
    """Random inputs of the right shapes: B sequences of [prompt text, <vision_start>, image pads,
    <vision_end>, prompt text, completion]; pixel_values (B * h * w, 3 * 2 * 14 * 14)."""
    import torch

    height, width = image_grid(pixels)
    pads = height * width // 4  # one token per merged 2x2 patch block
    ids = shape.ids
    text_high = min(ids.values()) - 1  # random text ids stay below the special tokens
    before = prompt_tokens // 2
    after = prompt_tokens - before
    rows = []
    for _ in range(batch):
        rows.append(
            torch.cat(
                [
                    torch.randint(0, text_high, (before,)),
                    torch.tensor([ids["vision_start"]]),
                    torch.full((pads,), ids["image"]),
                    torch.tensor([ids["vision_end"]]),
                    torch.randint(0, text_high, (after + completion_tokens,)),
                ]
            )
        )
    input_ids = torch.stack(rows).to(device)  # (B, T)
    patch_dim = 3 * 2 * 14 * 14  # channels x temporal_patch_size x patch^2
    pixel_values = torch.randn(batch * height * width, patch_dim, dtype=dtype, device=device)
    image_grid_thw = torch.tensor([[1, height, width]] * batch, device=device)  # (B images, 3)
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "pixel_values": pixel_values,
        "image_grid_thw": image_grid_thw,
        "visual_tokens": pads,
    }


def completion_logp(model, inputs, completion_tokens: int):
    """(B, C) log-probs of the last C tokens; lm_head runs on the C positions that predict them."""
    import torch

    out = model(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        pixel_values=inputs["pixel_values"],
        image_grid_thw=inputs["image_grid_thw"],
        logits_to_keep=completion_tokens + 1,
        use_cache=False,
    )
    logits = out.logits[:, :-1].float()  # (B, C, V): position t predicts token t + 1
    targets = inputs["input_ids"][:, -completion_tokens:]  # (B, C)
    return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny config (CPU unless CUDA is present)")
    parser.add_argument("--batch", type=int, default=8, help="completions per micro-batch (default 8)")
    parser.add_argument("--pixels", type=int, default=401_408, help="pixels per image (default 401408)")
    parser.add_argument("--prompt-tokens", type=int, default=120, help="prompt text tokens (default 120)")
    parser.add_argument("--completion-tokens", type=int, default=256, help="completion tokens (default 256)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny:
        figures: dict[str, object] = {"skipped": "no CUDA device"}
        print(json.dumps(figures))
        return figures
    if args.tiny:
        shape, dtype = TINY, (torch.bfloat16 if cuda else torch.float32)
        pixels = min(args.pixels, 56 * 56)
        completion_tokens = min(args.completion_tokens, 16)
        prompt_tokens = min(args.prompt_tokens, 16)
    else:
        shape, dtype = QWEN2_5_VL_3B, torch.bfloat16
        pixels, completion_tokens, prompt_tokens = args.pixels, args.completion_tokens, args.prompt_tokens
    device = torch.device("cuda" if cuda else "cpu")

    from transformers import Qwen2_5_VLForConditionalGeneration

    from editgrpo.core.losses import policy_loss
    from editgrpo.models.qwen_vl import freeze_vision_tower

    torch.manual_seed(args.seed)
    config = build_config(shape)
    config._attn_implementation = "sdpa"
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            model = Qwen2_5_VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(default_dtype)
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    model.train()
    frozen = freeze_vision_tower(model)
    # transformers 5 renamed gradient_checkpointing_enable (deprecated) to activation_checkpointing_enable.
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-6, weight_decay=0.01)
    inputs = make_batch(shape, args.batch, pixels, prompt_tokens, completion_tokens, device, dtype)
    seq_len = inputs["input_ids"].shape[1]

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def step() -> float:
        sync()
        start = time.perf_counter()
        with torch.no_grad():
            ref_logp = completion_logp(reference, inputs, completion_tokens)  # (B, C)
        logp = completion_logp(model, inputs, completion_tokens)  # (B, C)
        mask = torch.ones_like(logp, dtype=torch.bool)
        loss, _ = policy_loss(
            logp,
            logp.detach(),
            torch.randn(args.batch, device=device),
            mask,
            torch.zeros_like(mask),
            treatment="on_policy",
            ref_logp=ref_logp,
            kl_beta=0.01,
            kl_estimator="k3",
            aggregation="dr_grpo",
            max_completion_length=completion_tokens,
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        if not torch.isfinite(loss):
            raise SystemExit(f"non-finite loss {loss.item()}")
        return time.perf_counter() - start

    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = [step() for _ in range(args.steps)]
    median = statistics.median(times)
    figures = {
        "model": "tiny" if args.tiny else "qwen2_5_vl_3b_arch",
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "dtype": str(dtype).removeprefix("torch."),
        "batch": args.batch,
        "seq_len": seq_len,
        "visual_tokens_per_image": inputs["visual_tokens"],
        "image_grid_thw": inputs["image_grid_thw"][0].tolist(),
        "completion_tokens": completion_tokens,
        "params": sum(p.numel() for p in model.parameters()),
        "trainable_params": sum(p.numel() for p in trainable),
        "frozen_vision_params": frozen,
        "gradient_checkpointing": bool(
            getattr(model, "is_activation_checkpointing", None)
            or getattr(model, "is_gradient_checkpointing", False)
        ),
        "steps": args.steps,
        "step_s_median": round(median, 4),
        "step_s_min": round(min(times), 4),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "tokens_per_s": round(args.batch * seq_len / median, 1),
        "completion_tokens_per_s": round(args.batch * completion_tokens / median, 1),
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
