"""Supervised fine-tuning (EDITGRPO.md section 1): cross-entropy on the target section given the
study's images and the paper's prompt, loss on answer tokens only, a checkpoint per epoch.

The recipe, top to bottom (``run_sft``):

1. config      -- an ``SFTConfig`` (``editgrpo.config.load_config``), written next to the outputs;
2. model       -- processor + policy through ``models.qwen_vl`` (one path for tiny and real models);
3. manifests   -- the train (and eval) studies (``data.manifest.read_manifest``);
4. examples    -- prompt/completion pairs: the user turn of ``data.prompts.build_prompt`` with its
                  images as placeholders, the assistant turn = the target section; image paths ride
                  along and are opened per batch by ``StudyCollator``;
5. train       -- TRL's ``SFTTrainer`` with ``completion_only_loss`` (labels -100 on the system and
                  user turns, image-pad and padding tokens);
6. save        -- Trainer checkpoints (model + processor) per epoch, and ``final/`` at the end.

Why a collator of our own: TRL's ``DataCollatorForVisionLanguageModeling`` (trl/trainer/sft_trainer.py)
already renders prompt/completion pairs with the chat template, left-pads prompts, right-pads
completions and masks the prompt; it wants PIL images in an ``images`` key. ``StudyCollator`` only
opens the image files of the batch and delegates, so the dataset holds paths (cheap, picklable) and
no image is decoded before its batch is built.

Shapes: B studies per batch, T tokens (prompt + completion, padded), and the processor's flat
``pixel_values`` for all images of the batch with ``image_grid_thw`` (num_images, 3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from editgrpo.config import SFTConfig, save_resolved_config
from editgrpo.data.manifest import read_manifest
from editgrpo.data.prompts import PromptOptions, build_prompt
from editgrpo.data.schema import Study
from editgrpo.errors import UserError

FINAL_CHECKPOINT = "final"


@dataclass(frozen=True)
class SFTExamples:
    """Prompt/completion rows (TRL's conversational prompt-completion format) and the studies left
    out because they have no text for the target section."""

    rows: list[dict[str, Any]]
    skipped: list[str] = field(default_factory=list)


@dataclass
class SFTResult:
    """What a run did: steps, the last logged training loss, and where the checkpoints are."""

    output_dir: str
    final_checkpoint: str
    global_step: int
    train_loss: float
    train_examples: int
    eval_examples: int
    skipped: list[str]
    checkpoints: list[str]


# ---------------------------------------------------------------------------------------------
# Examples
# ---------------------------------------------------------------------------------------------


def build_examples(
    studies: Sequence[Study],
    *,
    image_root: str | Path | None,
    target_section: str,
    options: PromptOptions | None = None,
) -> SFTExamples:
    """One prompt/completion row per study with a target text.

    ``prompt`` is the user turn with one ``{"type": "image"}`` placeholder per image (TRL's
    ``prepare_multimodal_messages`` fills placeholders with the batch's images, in order);
    ``completion`` is the assistant turn; ``images`` holds the image paths in prompt order."""
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for study in studies:
        prompt = build_prompt(study, options, image_root=image_root, target_section=target_section)
        if not prompt.target:
            skipped.append(study.study_id)
            continue
        user, assistant = prompt.messages
        content = [
            {"type": "image"} if item["type"] == "image" else {"type": "text", "text": item["text"]}
            for item in user["content"]
        ]
        rows.append(
            {
                "prompt": [{"role": "user", "content": content}],
                "completion": [assistant],
                "images": list(prompt.image_paths),
            }
        )
    return SFTExamples(rows, skipped)


def read_examples(manifest: str | Path, config: SFTConfig, limit: int | None) -> SFTExamples:
    """The examples of one manifest; image paths are relative to the manifest's folder."""
    path = Path(manifest)
    if not path.is_file():
        raise UserError(f"manifest {path}: file not found")
    studies, _ = read_manifest(path)
    if limit is not None:
        studies = studies[:limit]
    options = PromptOptions(max_images=config.model.max_images, use_prior_images=config.data.use_prior_images)
    return build_examples(
        studies, image_root=path.resolve().parent, target_section=config.data.target_section, options=options
    )


def as_dataset(rows: list[dict[str, Any]]) -> Any:
    """Rows as a ``datasets.Dataset`` (SFTTrainer accepts nothing else). Arrow unifies the content
    items to ``{"type", "text"}`` (``text`` None on image placeholders), which the chat templates and
    TRL's placeholder filling read the same way as the plain rows."""
    from datasets import Dataset

    return Dataset.from_list(rows)


# ---------------------------------------------------------------------------------------------
# Collator
# ---------------------------------------------------------------------------------------------


class StudyCollator:
    """Open each row's image files (RGB) and hand the batch to TRL's vision-language collator
    with ``completion_only_loss=True``: labels are the input ids on completion tokens (the target
    text, ``<|im_end|>`` and the template's newline after it) and -100 everywhere else (system and
    user turns, image-pad tokens, padding)."""

    def __init__(self, processor: Any, max_length: int | None = None) -> None:
        from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

        self.inner = DataCollatorForVisionLanguageModeling(
            processor=processor, max_length=max_length, completion_only_loss=True
        )

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        from PIL import Image

        batch = []
        for row in rows:
            images = []
            for image_path in row["images"]:
                with Image.open(image_path) as image:
                    images.append(image.convert("RGB"))
            # A new dict per row: the TRL collator rewrites "prompt"/"completion" in place.
            batch.append({"prompt": row["prompt"], "completion": row["completion"], "images": images})
        return self.inner(batch)


# ---------------------------------------------------------------------------------------------
# Recipe
# ---------------------------------------------------------------------------------------------


def _training_arguments(config: SFTConfig, has_eval: bool) -> Any:
    from trl import SFTConfig as TRLSFTConfig

    optim = config.optim
    strategy = "epoch" if config.save_each_epoch else "steps"
    return TRLSFTConfig(
        output_dir=config.output_dir,
        seed=config.seed,
        per_device_train_batch_size=config.per_device_batch_size,
        per_device_eval_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        num_train_epochs=config.num_epochs,
        max_steps=config.max_steps,
        learning_rate=optim.learning_rate,
        weight_decay=optim.weight_decay,
        lr_scheduler_type=optim.lr_scheduler,
        # transformers 5 dropped warmup_ratio: a warmup_steps value below 1 is that ratio of all steps.
        warmup_steps=optim.warmup_ratio,
        max_grad_norm=optim.max_grad_norm,
        logging_steps=config.logging_steps,
        save_strategy=strategy,
        save_steps=config.save_steps,
        eval_strategy=("epoch" if config.save_each_epoch else "steps") if has_eval else "no",
        eval_steps=config.save_steps if has_eval and not config.save_each_epoch else None,
        max_length=config.max_length,
        completion_only_loss=True,
        gradient_checkpointing=config.gradient_checkpointing,
        # Rows carry prompt, completion and image paths; StudyCollator needs all three.
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        use_cpu=config.use_cpu,
        bf16=config.model.dtype == "bfloat16" and not config.use_cpu,
        fp16=config.model.dtype == "float16" and not config.use_cpu,
        report_to="none",
        dataloader_num_workers=0,
    )


def run_sft(config: SFTConfig) -> SFTResult:
    """Run the SFT recipe of ``config`` (see the module docstring for the phases)."""
    from trl import SFTTrainer

    from editgrpo.models.qwen_vl import load_policy, load_processor

    # Phase 1: config, resolved next to the outputs.
    if config.data.train is None:
        raise UserError("data.train is not set: give the training manifest (a JSONL file) in the recipe")
    for name, manifest in (("data.train", config.data.train), ("data.eval", config.data.eval)):
        if manifest is not None and not Path(manifest).is_file():
            raise UserError(f"{name} = {manifest!r}: file not found; give a JSONL study manifest")
    output_dir = Path(config.output_dir)
    save_resolved_config(config, output_dir)

    # Phase 2: processor and policy (tiny or real: the same loader).
    processor = load_processor(
        config.model.name_or_path, min_pixels=config.model.min_pixels, max_pixels=config.model.max_pixels
    )
    model = load_policy(
        config.model.name_or_path,
        dtype=config.model.dtype,
        attn_implementation=config.model.attn_implementation,
        freeze_vision=config.model.freeze_vision,
    )

    # Phases 3-4: manifests -> prompt/completion examples.
    train = read_examples(config.data.train, config, config.data.max_train_samples)
    if not train.rows:
        raise UserError(
            f"{config.data.train}: no study has a {config.data.target_section!r} text to train on"
        )
    evaluation = (
        read_examples(config.data.eval, config, config.data.max_eval_samples) if config.data.eval else None
    )
    eval_rows = evaluation.rows if evaluation is not None and evaluation.rows else None

    # Phase 5: train (answer-only loss through StudyCollator).
    trainer = SFTTrainer(
        model=model,
        args=_training_arguments(config, has_eval=eval_rows is not None),
        train_dataset=as_dataset(train.rows),
        eval_dataset=as_dataset(eval_rows) if eval_rows is not None else None,
        processing_class=processor,
        data_collator=StudyCollator(processor, max_length=config.max_length),
    )
    trainer.train()

    # Phase 6: the final checkpoint (model + processor); per-epoch ones are the Trainer's checkpoint-N.
    final = output_dir / FINAL_CHECKPOINT
    trainer.save_model(str(final))
    processor.save_pretrained(str(final))
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return SFTResult(
        output_dir=str(output_dir),
        final_checkpoint=str(final),
        global_step=trainer.state.global_step,
        train_loss=float(losses[-1]) if losses else math.nan,
        train_examples=len(train.rows),
        eval_examples=len(eval_rows or []),
        skipped=train.skipped,
        checkpoints=sorted(str(p) for p in output_dir.glob("checkpoint-*")),
    )
