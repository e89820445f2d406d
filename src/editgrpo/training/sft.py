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
                  user turns, image-pad and padding tokens); full fine-tuning, or LoRA adapters on the
                  language model's projections (``lora.enabled``, peft through TRL's ``peft_config``);
                  at each epoch end ``ClinicalEvalCallback`` writes greedy reports for up to
                  ``eval_clinical_samples`` eval studies and scores them with the offline metrics;
6. save        -- Trainer checkpoints per epoch (full fine-tuning: model + processor; LoRA: the
                  adapter + processor, see ``merge_lora_checkpoint``), and ``final/`` at the end,
                  always a full model (LoRA merged into the weights) + processor, loadable by
                  ``models.qwen_vl.load_policy`` like any checkpoint.

Why a collator of our own: TRL's ``DataCollatorForVisionLanguageModeling`` (trl/trainer/sft_trainer.py)
already renders prompt/completion pairs with the chat template, left-pads prompts, right-pads
completions and masks the prompt; it wants PIL images in an ``images`` key. ``StudyCollator`` only
opens the image files of the batch and delegates, so the dataset holds paths (cheap, picklable) and
no image is decoded before its batch is built.

Shapes: B studies per batch, T tokens (prompt + completion, padded), and the processor's flat
``pixel_values`` for all images of the batch with ``image_grid_thw`` (num_images, 3).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from editgrpo.config import LoraConfig, SFTConfig, save_resolved_config
from editgrpo.data.manifest import read_manifest
from editgrpo.data.prompts import PromptOptions, build_prompt
from editgrpo.data.schema import Study
from editgrpo.errors import UserError

FINAL_CHECKPOINT = "final"
CLINICAL_EVAL_FILE = "clinical_eval.jsonl"

logger = logging.getLogger(__name__)


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
    # Parameters the optimizer updates vs all parameters of the policy (LoRA: adapters only).
    trainable_parameters: int = 0
    total_parameters: int = 0
    # One entry per clinical evaluation: {"epoch", "step", "n", "metrics": {name: value}}.
    clinical_evals: list[dict[str, Any]] = field(default_factory=list)


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
                "study_id": study.study_id,
            }
        )
    return SFTExamples(rows, skipped)


def read_examples(
    manifest: str | Path,
    config: SFTConfig,
    limit: int | None,
    split: str | None = None,
    *,
    refuse_test: bool = False,
) -> SFTExamples:
    """The examples of one manifest (only its ``split`` studies when given); image paths are
    relative to the manifest's folder. ``refuse_test``: a ``test`` study among them is a user error
    (training-time evaluation on test data; ``data.eval_on_test`` allows it)."""
    path = Path(manifest)
    if not path.is_file():
        raise UserError(f"manifest {path}: file not found")
    studies, _ = read_manifest(path)
    if split is not None:
        present = sorted({study.split for study in studies})
        studies = [study for study in studies if study.split == split]
        if not studies:
            raise UserError(
                f"manifest {path}: no study of split {split!r} (splits present: {', '.join(present) or 'none'}). "
                "Fix: set data.train_split / data.eval_split to one of them, or null to use every study"
            )
    if limit is not None:
        studies = studies[:limit]
    if refuse_test:
        tests = [study.study_id for study in studies if study.split == "test"]
        if tests:
            raise UserError(
                f"manifest {path}: {len(tests)} evaluation studies are of split 'test' (e.g. {tests[0]}): "
                "evaluating on them during training chooses checkpoints on test data. Fix: give a "
                "validation manifest or data.eval_split=validate, or set data.eval_on_test=true to do it "
                "on purpose"
            )
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
        # A new dict per row: the TRL collator rewrites "prompt"/"completion" in place.
        batch = [
            {"prompt": row["prompt"], "completion": row["completion"], "images": open_images(row["images"])}
            for row in rows
        ]
        return self.inner(batch)


# ---------------------------------------------------------------------------------------------
# LoRA
# ---------------------------------------------------------------------------------------------


def _module_prefix(model: Any, module: Any) -> str:
    """The dotted name of ``module`` inside ``model`` (e.g. ``model.language_model``)."""
    for name, candidate in model.named_modules():
        if candidate is module:
            return name
    raise ValueError("module is not part of the model")


def lora_target_names(model: Any, lora: LoraConfig) -> list[str]:
    """Full names of the modules that get adapters: ``lora.target_modules`` leaf names inside the
    language model, ``lora.vision_target_modules`` leaf names inside the vision tower.

    peft matches a target list by name suffix, so a bare ``gate_proj`` would also hit the vision
    blocks' MLP (Qwen2.5-VL names them alike); full names keep the vision tower adapter-free unless
    the user asks for it. A leaf name that matches nothing is a ``UserError`` listing the linear
    leaf names that exist there."""
    import torch

    from editgrpo.models.qwen_vl import vision_tower

    scopes = (
        ("lora.target_modules", model.model.language_model, lora.target_modules),
        ("lora.vision_target_modules", vision_tower(model), lora.vision_target_modules),
    )
    names: list[str] = []
    for key, scope, leaves in scopes:
        if not leaves:
            continue
        prefix = _module_prefix(model, scope)
        found = {leaf: [] for leaf in leaves}
        linear_leaves: set[str] = set()
        for name, module in scope.named_modules():
            leaf = name.rsplit(".", 1)[-1]
            if isinstance(module, torch.nn.Linear):
                linear_leaves.add(leaf)
            if leaf in found:
                found[leaf].append(f"{prefix}.{name}")
        missing = [leaf for leaf, hits in found.items() if not hits]
        if missing:
            raise UserError(
                f"{key}: no module named {missing} in {prefix}; linear modules there are named "
                f"{sorted(linear_leaves)}"
            )
        names += [name for hits in found.values() for name in hits]
    return names


def peft_lora_config(model: Any, lora: LoraConfig) -> Any:
    """The ``peft.LoraConfig`` of ``lora`` for ``model`` (targets from ``lora_target_names``)."""
    import peft

    return peft.LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora_target_names(model, lora),
        bias="none",
        task_type="CAUSAL_LM",
    )


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def save_merged(peft_model: Any, processor: Any, out: str | Path) -> Any:
    """Fold the adapters into the base weights (W + alpha/r * B A) and save a plain model +
    processor at ``out``; returns the merged model. ``peft_model`` is consumed (its LoRA layers are
    replaced by the merged linear layers)."""
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(str(out))
    processor.save_pretrained(str(out))
    return merged


def merge_lora_checkpoint(checkpoint: str | Path, out: str | Path, *, base: str | None = None) -> Path:
    """Turn a LoRA checkpoint of this recipe (``checkpoint-N/``: adapter + processor) into a full
    model at ``out`` that ``load_policy`` and RL read like any checkpoint. ``base``: the model the
    adapter was trained on (default: the ``base_model_name_or_path`` the adapter recorded)."""
    from peft import PeftConfig, PeftModel

    from editgrpo.models.qwen_vl import load_policy, load_processor

    checkpoint = Path(checkpoint)
    if not (checkpoint / "adapter_config.json").is_file():
        raise UserError(f"{checkpoint}: no adapter_config.json; it is not a LoRA checkpoint")
    base = base or PeftConfig.from_pretrained(str(checkpoint)).base_model_name_or_path
    model = PeftModel.from_pretrained(load_policy(base, dtype="auto"), str(checkpoint))
    save_merged(model, load_processor(str(checkpoint)), out)
    return Path(out)


# ---------------------------------------------------------------------------------------------
# Clinical evaluation
# ---------------------------------------------------------------------------------------------


def clinical_scores(predictions: Sequence[str], references: Sequence[str], reward: Any) -> dict[str, float]:
    """Corpus scores of N (prediction, reference) pairs from the per-pair results of ``reward`` (a
    ``rewards.composite.CompositeReward`` with the ``chexbert_micro14`` and ``radgraph_partial``
    components, built with ``empty_completion="score"`` so an empty report is scored as the metrics
    define it), named with their backends as offline approximations of the paper's columns:

    - ``{labeler}_micro_f1_14``: 2 sum TP / (2 sum TP + sum FP + sum FN) over all pairs and the 14
      labels; ``{labeler}_macro_f1_14``: the mean over the 14 labels of each label's corpus F1, 0 for
      a label with no positive on either side (uncertain as positive; the conventions of
      ``metrics.chexbert_f1.chexbert_scores``, which the tests check this against);
    - ``radgraph_{entities}_f1``: mean of the per-pair RadGraph F1 at the partial level (the
      paper's column, ``metrics.radgraph_f1.radgraph_f1_corpus``).

    The label counts come from each pair's ``label_outcomes`` (14 x tp/fp/fn/tn). A pair an
    annotator could not score is left out of that metric (never counted as 0); a metric no pair
    could feed is absent from the result. (The training layer reaches the metrics only through
    ``rewards``: tests/test_layers.py.)"""
    results = reward.score(list(predictions), list(references))
    label_name = str(getattr(reward.labeler, "name", reward.names["labeler"])).replace("-", "_")
    entity_name = str(getattr(reward.extractor, "name", reward.names["entities"])).replace("-", "_")
    scores: dict[str, float] = {}
    outcomes = [r.label_outcomes for r in results if r.label_outcomes is not None]
    if outcomes:
        labels = list(outcomes[0])
        # counts[label][kind]: corpus TP / FP / FN of one observation, summed over the pairs.
        counts = {label: {"tp": 0, "fp": 0, "fn": 0, "tn": 0} for label in labels}
        for pair in outcomes:
            for label, kind in pair.items():
                counts[label][kind] += 1
        tp, fp, fn = (sum(c[kind] for c in counts.values()) for kind in ("tp", "fp", "fn"))
        scores[f"{label_name}_micro_f1_14"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        per_label = [
            2 * c["tp"] / (2 * c["tp"] + c["fp"] + c["fn"]) if c["tp"] + c["fp"] + c["fn"] else 0.0
            for c in counts.values()
        ]
        scores[f"{label_name}_macro_f1_14"] = sum(per_label) / len(per_label)
    radgraph = [r.components["radgraph_partial"] for r in results]
    radgraph = [value for value in radgraph if value is not None]
    if radgraph:
        scores[f"radgraph_{entity_name}_f1"] = sum(radgraph) / len(radgraph)
    return scores


def open_images(paths: Sequence[str]) -> list[Any]:
    """RGB PIL images of ``paths`` (X-rays are often grayscale; the processor wants 3 channels)."""
    from PIL import Image

    images = []
    for image_path in paths:
        with Image.open(image_path) as image:
            images.append(image.convert("RGB"))
    return images


@dataclass(frozen=True)
class EvalStudy:
    """One study of the clinical evaluation: its image paths (prompt order), the instruction text
    of the user turn and the reference target section."""

    study_id: str
    image_paths: list[str]
    text: str
    reference: str


def eval_studies(rows: Sequence[dict[str, Any]], limit: int) -> list[EvalStudy]:
    """The first ``limit`` example rows (``build_examples``) as ``EvalStudy`` items."""
    studies = []
    for row in rows[:limit]:
        texts = [item["text"] for item in row["prompt"][0]["content"] if item["type"] == "text"]
        reference = row["completion"][0]["content"][0]["text"]
        studies.append(EvalStudy(row["study_id"], list(row["images"]), "\n".join(texts), reference))
    return studies


class ClinicalEvaluator:
    """Greedy reports for a fixed list of eval studies, scored with the offline metrics
    (``clinical_scores``, backends ``chexpert-rules`` and ``lexicon``) and appended as one JSON line
    per evaluation to ``out``: ``{"epoch", "step", "n", "metrics": {"eval_<name>": value}}``.

    Generation reuses ``models.generation.generate_reports`` (the prompt layout of ``editgrpo
    generate``: every image, then the instruction) with the model in eval mode (no dropout, KV
    cache on even under gradient checkpointing); train mode is restored afterwards."""

    def __init__(
        self,
        studies: Sequence[EvalStudy],
        processor: Any,
        out: str | Path,
        *,
        batch_size: int,
        max_new_tokens: int,
    ) -> None:
        from editgrpo.rewards.composite import CompositeReward

        self.studies = list(studies)
        self.processor = processor
        self.out = Path(out)
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        # The offline backends: chexpert-rules labels and lexicon RadGraph-type entities. Evaluation
        # scores an empty report as the metrics define it (the floor is a training-reward choice).
        self.reward = CompositeReward(
            {"chexbert_micro14": 1.0, "radgraph_partial": 1.0},
            labeler="rules",
            entities="lexicon",
            empty_completion="score",
        )

    def generate(self, model: Any) -> list[str]:
        """One greedy report per study, in order."""
        from editgrpo.models.generation import VisualPrompt, generate_reports

        tokenizer = self.processor.tokenizer
        # Batched generation appends after the prompt, so prompts are left-padded; put back
        # whatever side the training collator uses.
        padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
        was_training = model.training
        model.eval()
        try:
            texts: list[str] = []
            for start in range(0, len(self.studies), self.batch_size):
                batch = self.studies[start : start + self.batch_size]
                prompts = [VisualPrompt(open_images(s.image_paths), s.text) for s in batch]
                texts += generate_reports(model, self.processor, prompts, max_new_tokens=self.max_new_tokens)
        finally:
            tokenizer.padding_side = padding_side
            model.train(was_training)
        return [text.strip() for text in texts]

    def evaluate(self, model: Any, *, epoch: float | None, step: int, write: bool = True) -> dict[str, Any]:
        """Generate, score and (``write``) append the record; returns it."""
        predictions = self.generate(model)
        scores = clinical_scores(predictions, [s.reference for s in self.studies], self.reward)
        record = {
            "epoch": epoch,
            "step": step,
            "n": len(self.studies),
            "metrics": {f"eval_{name}": value for name, value in scores.items()},
        }
        if write:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            with self.out.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        return record


def clinical_eval_callback(evaluator: ClinicalEvaluator, trainer: Any) -> Any:
    """A ``TrainerCallback`` running ``evaluator`` at each epoch end and after each checkpoint
    save (once per optimizer step: with per-epoch saves both fire at the same step), logging the
    metrics into ``trainer.state.log_history`` and the report_to backends.

    Built in a function so that importing this module does not import transformers."""
    from transformers import Trainer, TrainerCallback

    class ClinicalEvalCallback(TrainerCallback):
        def __init__(self) -> None:
            self.records: list[dict[str, Any]] = []
            self._done_steps: set[int] = set()

        def _run(self, state: Any, model: Any) -> None:
            if state.global_step in self._done_steps or model is None:
                return
            self._done_steps.add(state.global_step)
            # Every rank generates (a ZeRO-3/FSDP-sharded model needs all ranks in each forward);
            # only the first process writes the file.
            record = evaluator.evaluate(
                model, epoch=state.epoch, step=state.global_step, write=state.is_world_process_zero
            )
            self.records.append(record)
            # Trainer.log, not SFTTrainer.log: TRL's override would fold (and clear) its pending
            # training metrics (entropy, token accuracy) into this entry (trl/trainer/sft_trainer.py).
            Trainer.log(trainer, dict(record["metrics"]))

        def on_epoch_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            self._run(state, model)

        def on_save(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            self._run(state, model)

    return ClinicalEvalCallback()


# ---------------------------------------------------------------------------------------------
# Recipe
# ---------------------------------------------------------------------------------------------


def _training_arguments(config: SFTConfig, has_eval: bool) -> Any:
    from trl import SFTConfig as TRLSFTConfig

    from editgrpo.training.trl_args import trl_arguments

    optim = config.optim
    strategy = "epoch" if config.save_each_epoch else "steps"
    managed = dict(
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
        report_to=list(config.report_to),
        dataloader_num_workers=0,
    )
    return trl_arguments(TRLSFTConfig, managed, config.trl)


def run_sft(config: SFTConfig, *, resume: bool = False) -> SFTResult:
    """Run the SFT recipe of ``config`` (see the module docstring for the phases); ``resume``
    continues from the newest complete checkpoint of ``output_dir`` (a fresh start when there is
    none), with its optimizer, scheduler, RNG states and data position."""
    from trl import SFTTrainer

    from editgrpo.models.qwen_vl import load_model_section
    from editgrpo.training.checkpoints import last_complete_checkpoint
    from editgrpo.training.precision import trainable_dtype
    from editgrpo.training.resume import SafeCheckpointsMixin

    class StudySFTTrainer(SafeCheckpointsMixin, SFTTrainer):
        """SFTTrainer with completion-marked checkpoints and a resume that loads the weights."""

    # Phase 1: config, resolved next to the outputs.
    if config.data.train is None:
        raise UserError("data.train is not set: give the training manifest (a JSONL file) in the recipe")
    for name, manifest in (("data.train", config.data.train), ("data.eval", config.data.eval)):
        if manifest is not None and not Path(manifest).is_file():
            raise UserError(f"{name} = {manifest!r}: file not found; give a JSONL study manifest")
    output_dir = Path(config.output_dir)
    save_resolved_config(config, output_dir)

    # Phase 2: processor and policy (tiny or real: the same loader).
    # Full fine-tuning keeps fp32 master weights unless DeepSpeed does (training/precision.py); LoRA
    # trains fp32 adapters on a frozen base in the recipe's dtype (peft autocast_adapter_dtype).
    model_section = config.model
    if not config.lora.enabled:
        model_section = dataclasses.replace(model_section, dtype=trainable_dtype(model_section.dtype))
    processor, model = load_model_section(model_section)

    # Phases 3-4: manifests -> prompt/completion examples.
    train = read_examples(config.data.train, config, config.data.max_train_samples, config.data.train_split)
    if not train.rows:
        raise UserError(
            f"{config.data.train}: no study has a {config.data.target_section!r} text to train on"
        )
    evaluation = (
        read_examples(
            config.data.eval,
            config,
            config.data.max_eval_samples,
            config.data.eval_split,
            refuse_test=not config.data.eval_on_test,
        )
        if config.data.eval
        else None
    )
    eval_rows = evaluation.rows if evaluation is not None and evaluation.rows else None

    # Phase 5: train (answer-only loss through StudyCollator). With LoRA, TRL wraps the policy
    # (``peft_config``: it also handles gradient checkpointing's input grads and ZeRO-3 dtypes).
    peft_config = peft_lora_config(model, config.lora) if config.lora.enabled else None
    trainer = StudySFTTrainer(
        model=model,
        args=_training_arguments(config, has_eval=eval_rows is not None),
        train_dataset=as_dataset(train.rows),
        eval_dataset=as_dataset(eval_rows) if eval_rows is not None else None,
        processing_class=processor,
        data_collator=StudyCollator(processor, max_length=config.max_length),
        peft_config=peft_config,
    )
    trainable, total = count_parameters(trainer.model)
    logger.info(
        "%s: %d of %d parameters trainable (%.4f%%)",
        "LoRA" if peft_config is not None else "full fine-tuning",
        trainable,
        total,
        100.0 * trainable / max(total, 1),
    )
    callback = None
    if eval_rows is not None and config.eval_clinical_samples > 0:
        evaluator = ClinicalEvaluator(
            eval_studies(eval_rows, config.eval_clinical_samples),
            processor,
            output_dir / CLINICAL_EVAL_FILE,
            batch_size=config.per_device_batch_size,
            max_new_tokens=config.eval_clinical_max_new_tokens,
        )
        callback = clinical_eval_callback(evaluator, trainer)
        trainer.add_callback(callback)
    checkpoint = last_complete_checkpoint(output_dir) if resume else None
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)

    # Phase 6: the final checkpoint, a full model + processor either way; per-epoch ones are the
    # Trainer's checkpoint-N (LoRA: adapter only, merge_lora_checkpoint makes a full model of one).
    final = output_dir / FINAL_CHECKPOINT
    if peft_config is not None:
        if trainer.args.should_save:
            save_merged(trainer.accelerator.unwrap_model(trainer.model), processor, final)
    else:
        trainer.save_model(str(final))
        processor.save_pretrained(str(final))
    if trainer.args.should_save:
        from editgrpo.training.model_card import write_model_card

        write_model_card(final, config, global_step=trainer.state.global_step)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return SFTResult(
        output_dir=str(output_dir),
        final_checkpoint=str(final),
        global_step=trainer.state.global_step,
        train_loss=float(losses[-1]) if losses else math.nan,
        train_examples=len(train.rows),
        eval_examples=len(eval_rows or []),
        skipped=train.skipped,
        checkpoints=sorted(
            (str(p) for p in output_dir.glob("checkpoint-*")), key=lambda p: int(p.rsplit("-", 1)[-1])
        ),
        trainable_parameters=trainable,
        total_parameters=total,
        clinical_evals=list(callback.records) if callback is not None else [],
    )
