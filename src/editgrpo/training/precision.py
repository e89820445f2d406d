"""Which dtype the trainable weights are loaded in (SFT and RL).

A recipe's ``model.dtype: bfloat16`` (or ``float16``) asks for half-precision *compute*. Holding the
trained weights themselves in bf16 is another matter: bf16 keeps 8 mantissa bits, so an AdamW update
of lr 1e-6 (the paper's RL learning rate) is below half a unit in the last place of nearly every
weight and rounds away (a weight of 0.02 moves only when the update exceeds about 6e-5). The rule:

- under DeepSpeed (``accelerate launch`` with a DeepSpeed config, the shipped multi-GPU recipes) the
  engine keeps fp32 master weights in its optimizer and casts for compute: weights load in the
  recipe's dtype, as DeepSpeed expects;
- everywhere else (one GPU, DDP, FSDP) the weights load in float32 and the Trainer runs the forward
  pass under bf16/fp16 autocast (``bf16=True`` / ``fp16=True`` in the TrainingArguments): fp32
  master weights, half-precision matmuls. This costs weight memory (4 instead of 2 bytes a
  parameter) and keeps every update.

SFT with LoRA keeps the frozen base in the recipe's dtype: peft keeps the adapters, the only
trained weights, in float32 (``autocast_adapter_dtype``). The KL reference model and generation are
not trained and are not affected.
"""

from __future__ import annotations

import os

HALF_DTYPES = ("bfloat16", "float16")


def deepspeed_launch() -> bool:
    """Whether this process was started by ``accelerate launch`` with a DeepSpeed config (accelerate
    sets ``ACCELERATE_USE_DEEPSPEED=true`` in the environment of every process it starts)."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true", "yes")


def trainable_dtype(dtype: str, *, deepspeed: bool | None = None) -> str:
    """The dtype to load trained weights in for a recipe's ``model.dtype`` (module docstring)."""
    if dtype in HALF_DTYPES and not (deepspeed_launch() if deepspeed is None else deepspeed):
        return "float32"
    return dtype
