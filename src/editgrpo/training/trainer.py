"""EditGRPO on TRL: ``EditGRPOTrainer``, a thin subclass of TRL's ``GRPOTrainer``, and the RL recipe
``run_train`` behind ``editgrpo train RECIPE``.

One RL step (EDITGRPO.md section 2), and where it happens:

1. sample    -- TRL's generation (``_generate_single_turn``: HF ``generate`` on CPU/GPU, or vLLM in
                server or colocate mode), called by ``_generate_single_turn`` below only for the rows
                that need a sample (``training.groups``: G - k per group in ``fill``, G in
                ``overwrite``);
2. edit      -- k sources per group edited towards the reference by ``edits.engine``
                (analyses of references cached; seeded choices); an edited copy becomes token ids
                (``<|im_end|>`` appended) with a per-token *inserted* mask
                (``training.rollout_edits``); in ``fill`` an edit that changed nothing is replaced by
                a fresh sample (a *top-up*);
3. score     -- TRL's reward call with our composite reward (``rewards``), in process or on a reward
                server; per-component means are logged for on-policy and edited rows apart;
4. advantage -- ``core.group_advantages`` (Dr. GRPO: R - group mean; ``group_std`` for GRPO),
                unscorable rollouts excluded and given A = 0; this replaces TRL's advantages;
5. update    -- ``core.policy_loss``: PPO-clip with the edited tokens' treatment (``on_policy``,
                ``off_policy`` LUFFY shaping, ``mask``), k3 KL to the reference (the initial policy,
                i.e. the SFT checkpoint), Dr. GRPO aggregation; one optimizer step per rollout batch.

With ``edit.enabled=false`` no row is edited and the same code is plain Dr. GRPO (or GRPO with
``loss.advantage_scale=group_std loss.aggregation=sequence_mean``). Validation never edits.

What the subclass overrides in TRL 1.16 (pinned by ``TRL_CONTRACT`` and checked at construction, so a
TRL upgrade that changes them fails with a message instead of training wrongly):
``_generate_single_turn`` (group composition + edits), ``_generate_and_score_completions``
(references in, inserted masks and our advantages out), ``_calculate_rewards`` (timing and the
on/off-policy breakdown), ``_compute_loss`` (our loss) and ``training_step`` (the step-time split);
``training.resume.SafeCheckpointsMixin`` adds ``_save_checkpoint`` (completion markers) and
``_load_from_checkpoint`` (transformers' own resume loads nothing for Qwen2.5-VL; see there).

Multi-process rules: every process holds whole groups (its share of a step is a multiple of G);
generation calls whose row count differs between processes (top-ups) are padded to the largest
count, because DeepSpeed ZeRO-3 generation and vLLM's server mode are collective.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from trl import GRPOTrainer

from editgrpo.config import RLConfig, save_resolved_config
from editgrpo.core.advantages import group_advantages
from editgrpo.core.losses import policy_loss
from editgrpo.core.masks import masked_mean
from editgrpo.edits.engine import RolloutEditor, build_local_analyser, server_analyser
from editgrpo.errors import UserError
from editgrpo.rewards.composite import completion_text
from editgrpo.text.observations import CHEXPERT_14
from editgrpo.training.checkpoints import checkpoint_step, last_complete_checkpoint, list_checkpoints
from editgrpo.training.groups import compose_groups
from editgrpo.training.model_card import write_model_card
from editgrpo.training.monitoring import (
    collapse_stats,
    completion_log_rows,
    completions_table,
    importance_sampling_stats,
    markdown_table,
)
from editgrpo.training.precision import trainable_dtype
from editgrpo.training.resume import SafeCheckpointsMixin
from editgrpo.training.rollout_edits import edited_completion
from editgrpo.training.trl_args import trl_arguments

FINAL_CHECKPOINT = "final"
LOG_HISTORY = "log_history.jsonl"
COMPLETIONS_LOG = "completions.jsonl"
# Files of a checkpoint that are training state, not the model: left out when final/ is made from
# the last checkpoint of a finished run (resume at max_steps).
TRAINING_STATE_FILES = (
    "optimizer.pt",
    "scheduler.pt",
    "trainer_state.json",
    "rng_state*.pth",
    "editgrpo_complete.json",
)

# TRL internals this subclass overrides or calls, with the parameters it relies on (TRL 1.16).
TRL_CONTRACT: dict[str, tuple[str, ...]] = {
    "_generate_single_turn": (
        "self",
        "prompt_ids",
        "images",
        "multimodal_fields",
        "num_generations",
        "has_tool_images",
    ),
    "_generate_and_score_completions": ("self", "inputs"),
    "_calculate_rewards": ("self", "inputs", "prompts", "completions", "completion_ids_list"),
    "_compute_loss": ("self", "model", "inputs"),
    "_get_per_token_logps_and_entropies": (
        "self",
        "model",
        "input_ids",
        "attention_mask",
        "logits_to_keep",
        "batch_size",
        "compute_entropy",
        "compute_aux_loss",
        "pixel_values",
        "image_grid_thw",
        "num_images",
        "pixel_attention_mask",
        "spatial_shapes",
        "num_tiles",
        "image_sizes",
        "token_type_ids",
        "mm_token_type_ids",
        "image_position_ids",
    ),
    "training_step": ("self", "model", "inputs", "num_items_in_batch"),
    "_save_checkpoint": ("self", "model", "trial"),
    "_load_from_checkpoint": ("self", "resume_from_checkpoint", "model"),
}
# Attributes GRPOTrainer sets in __init__ that the overrides read.
TRL_ATTRIBUTES: tuple[str, ...] = (
    "_metrics",
    "_tokenizer",
    "eos_token_ids",
    "num_generations",
    "max_completion_length",
    "beta",
    "epsilon_low",
    "epsilon_high",
    "use_vllm",
    "vllm_importance_sampling_correction",
    "reward_weights",
)


class TRLContractError(RuntimeError):
    """The installed TRL's GRPOTrainer differs from the one EditGRPOTrainer was written against."""


def check_trl_contract(trainer_class: type = GRPOTrainer) -> None:
    """Raise ``TRLContractError`` naming every pinned method whose parameters changed."""
    import trl

    problems = []
    for name, expected in TRL_CONTRACT.items():
        method = getattr(trainer_class, name, None)
        if method is None:
            problems.append(f"GRPOTrainer.{name} no longer exists")
            continue
        found = tuple(inspect.signature(method).parameters)
        if found != expected:
            problems.append(f"GRPOTrainer.{name}{found} != the pinned {expected}")
    if problems:
        raise TRLContractError(
            f"TRL {trl.__version__}: EditGRPOTrainer overrides GRPOTrainer internals written for TRL 1.16, "
            "and these changed: " + "; ".join(problems) + ". Fix: install trl>=1.16,<1.17 (pyproject.toml), "
            "or port editgrpo/training/trainer.py to the new internals and update TRL_CONTRACT."
        )


# ---------------------------------------------------------------------------------------------
# Rows of one rollout batch
# ---------------------------------------------------------------------------------------------


@dataclass
class RolloutRecord:
    """What one row of a rollout batch is: ``sample`` (on-policy), ``edit`` (an edited copy of row
    ``source``), ``topup`` (a fresh sample in an edit slot whose edit changed nothing).
    ``inserted`` is one bool per completion token and ``spans`` the edited text's character spans
    (edits only)."""

    kind: str = "sample"
    source: int | None = None
    inserted: list[bool] = field(default_factory=list)
    ops: tuple[str, ...] = ()
    spans: tuple[tuple[int, int, str], ...] = ()


@dataclass
class EditAttempt:
    """One planned edit: the op kinds it applied, whether it made an edited copy (``changed``),
    whether the copy was cut by the completion limit, whether the analysis failed, and whether a
    changed text was dropped (``dropped``: empty, every inserted token cut, or the source's own
    tokens again; ``rollout_edits.edited_completion``)."""

    ops: tuple[str, ...]
    changed: bool
    truncated: bool = False
    failed: bool = False
    dropped: bool = False


def select_rows(
    fields: dict[str, Any], images: Sequence[Any] | None, rows: Sequence[int], num_rows: int
) -> dict[str, Any]:
    """The multimodal fields of ``rows`` (indices into a batch of ``num_rows``) as TRL's tokenizer
    returns them: image-level fields (``image_grid_thw`` (num_images, 3) and the flat patch rows of
    ``pixel_values`` (sum of t*h*w over images, D)) are cut by each row's images; row-level fields
    (first dimension ``num_rows``, tensors or lists) are indexed."""
    counts = [len(images[i]) if images is not None and images[i] else 0 for i in range(num_rows)]
    image_start = np.concatenate([[0], np.cumsum(counts)]).astype(int)  # (num_rows + 1,)
    picked_images = [j for r in rows for j in range(image_start[r], image_start[r + 1])]
    out: dict[str, Any] = {}
    grid = fields.get("image_grid_thw")
    if grid is not None:
        grid_tensor = torch.as_tensor(np.asarray(grid)) if not isinstance(grid, torch.Tensor) else grid
        out["image_grid_thw"] = grid_tensor[picked_images]
        if "pixel_values" in fields:
            pixels = fields["pixel_values"]
            pixels = torch.as_tensor(np.asarray(pixels)) if not isinstance(pixels, torch.Tensor) else pixels
            patches = grid_tensor.prod(dim=-1).tolist()  # (num_images,) patch rows per image
            patch_start = np.concatenate([[0], np.cumsum(patches)]).astype(int)
            pieces = [pixels[patch_start[j] : patch_start[j + 1]] for j in picked_images]
            out["pixel_values"] = torch.cat(pieces) if pieces else pixels[:0]
    for key, value in fields.items():
        if key in out or key in ("image_grid_thw", "pixel_values"):
            continue
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == num_rows:
            out[key] = value[list(rows)]
        elif isinstance(value, list | tuple) and len(value) == num_rows:
            out[key] = [value[r] for r in rows]
        elif isinstance(value, np.ndarray) and value.shape[:1] == (num_rows,):
            out[key] = value[list(rows)]
        else:
            raise ValueError(f"cannot select rows of the multimodal field {key!r} ({type(value).__name__})")
    return out


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------


class EditGRPOTrainer(SafeCheckpointsMixin, GRPOTrainer):
    """GRPOTrainer with post-rollout edits, our advantages and our loss (module docstring).

    Args beyond GRPOTrainer's: ``scorer`` (``CompositeReward`` or ``RewardClient``: ``score(hyps,
    refs) -> list[RewardResult]``), ``editor`` (a ``RolloutEditor``, None when edits are off), the
    recipe's ``edit`` and ``loss`` sections, ``keep_checkpoints`` (complete checkpoints kept) and
    ``reward_components`` (names for the logs; default: the scorer's)."""

    def __init__(
        self,
        *,
        model: Any,
        args: Any,
        train_dataset: Any,
        processing_class: Any,
        scorer: Any,
        editor: RolloutEditor | None,
        edit: Any,
        loss: Any,
        callbacks: list[Any] | None = None,
        keep_checkpoints: int | None = None,
        reward_components: Sequence[str] | None = None,
        label_freqs: dict[str, float] | None = None,
    ) -> None:
        check_trl_contract()
        self.scorer = scorer
        # Component names for the logs, the same on every process (a reward server's client does
        # not know them; the recipe does).
        self.reward_components = sorted(
            reward_components if reward_components is not None else getattr(scorer, "components", {})
        )
        # Training positive frequency per observation when chexpert_balanced is in the reward: the
        # per-label log then also shows each label's share of that component.
        self.label_freqs = label_freqs
        self.editor = editor
        self.edit_config = edit
        self.loss_config = loss
        self.keep_checkpoints = keep_checkpoints
        self.num_edits = (
            (edit.num_edits if edit.num_edits is not None else args.num_generations // 2)
            if edit.enabled
            else 0
        )
        if self.num_edits and editor is None:
            raise ValueError("edits are enabled but no RolloutEditor was given")
        self._last_results: list[Any] | None = None
        self._last_texts: list[Any] = []  # the completions the reward function scored last
        self._records: list[RolloutRecord] | None = None
        self._attempts: list[EditAttempt] = []
        self._references: list[str] = []
        self._phase_seconds: dict[str, float] = defaultdict(float)
        self._window_started: float | None = None
        self._sampled_rows = 0  # rows sampled for the current rollout batch
        self.generated_tokens = 0  # tokens sampled by the policy since construction (all rows)
        super().__init__(
            model=model,
            reward_funcs=[self._reward_function()],
            args=args,
            train_dataset=train_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
        )
        missing = [name for name in TRL_ATTRIBUTES if not hasattr(self, name)]
        if missing:
            raise TRLContractError(f"GRPOTrainer no longer sets {missing}; see check_trl_contract")
        vocab = self._tokenizer.get_vocab()
        self.end_of_turn_id = vocab.get("<|im_end|>", self.eos_token_ids[0])

    # -----------------------------------------------------------------------------------------
    # Reward
    # -----------------------------------------------------------------------------------------

    def _reward_function(self) -> Any:
        trainer = self

        def clinical_reward(
            prompts: Any = None, completions: Any = None, reference: Any = None, **kwargs: Any
        ) -> list[float | None]:
            """TRL reward function: the composite reward's totals; the full results are kept for
            the per-component and per-label logs."""
            if completions is None or reference is None:
                raise ValueError("the reward needs `completions` and the dataset's `reference` column")
            texts = [completion_text(c) for c in completions]
            results = trainer.scorer.score(texts, list(reference))
            trainer._last_texts, trainer._last_results = texts, results
            return [r.total for r in results]

        return clinical_reward

    # -----------------------------------------------------------------------------------------
    # Generation with edits
    # -----------------------------------------------------------------------------------------

    def _step_rng(self) -> np.random.Generator:
        """A generator fixed by (seed, optimizer step, process): a resumed run draws the same
        sources and edit choices as an uninterrupted one. One rollout batch per optimizer step
        (``grpo_arguments``), so the step identifies the batch."""
        return np.random.default_rng([self.args.seed, self.state.global_step, self.accelerator.process_index])

    def _generate_rows(
        self,
        prompt_ids: list[list[int]],
        images: Any,
        fields: dict[str, Any],
        rows: Sequence[int],
        num_generations: int,
    ) -> tuple[list[list[int]], list[list[float]] | None]:
        """Sample completions for ``rows`` (one per row) through TRL's generation; with several
        processes the row count is padded to the largest one (collective generation)."""
        count = len(rows)
        target = count
        if self.accelerator.num_processes > 1:
            counts = self.accelerator.gather(torch.tensor([count], device=self.accelerator.device))
            target = int(counts.max().item())
        if target == 0:
            return [], None
        padded = list(rows) + [rows[0] if rows else 0] * (target - count)
        n = len(prompt_ids)
        if padded == list(range(n)):  # every row (no edits): no copy of the pixel values
            sub_prompts, sub_images, sub_fields = prompt_ids, images, fields
        else:
            sub_prompts = [prompt_ids[r] for r in padded]
            sub_images = [images[r] for r in padded] if images is not None else None
            sub_fields = select_rows(fields, images, padded, n)
        started = time.perf_counter()
        completion_ids, logprobs = super()._generate_single_turn(
            sub_prompts, sub_images, sub_fields, num_generations
        )
        self._phase_seconds["generate"] += time.perf_counter() - started
        completion_ids = [list(ids) for ids in completion_ids[:count]]
        self.generated_tokens += sum(len(ids) for ids in completion_ids)
        self._sampled_rows += count
        return completion_ids, (list(logprobs[:count]) if logprobs is not None else None)

    def _generate_single_turn(
        self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False
    ):
        n = len(prompt_ids)
        self._sampled_rows = 0
        if not (self.model.training and self.num_edits > 0):
            self._records = [RolloutRecord() for _ in range(n)]
            self._attempts = []
            ids, logprobs = self._generate_rows(
                prompt_ids, images, multimodal_fields, list(range(n)), num_generations
            )
            return ids, logprobs
        group = num_generations
        if n % group:
            raise RuntimeError(
                f"a process holds {n} rollout rows, not whole groups of {group}: make "
                "prompts_per_step divisible by the number of processes"
            )
        rng = self._step_rng()
        layout = compose_groups(n // group, group, self.num_edits, self.edit_config.generation, rng)
        completions: list[list[int] | None] = [None] * n
        logprobs: list[list[float] | None] | None = None
        records = [RolloutRecord() for _ in range(n)]

        # 1. Sample the rows that need a sample (group-contiguous, as vLLM's server mode needs).
        ids, sampled_logprobs = self._generate_rows(
            prompt_ids, images, multimodal_fields, layout.sampled, layout.samples_per_group
        )
        if sampled_logprobs is not None:
            logprobs = [None] * n
        for k, row in enumerate(layout.sampled):
            completions[row] = ids[k]
            if logprobs is not None:
                logprobs[row] = sampled_logprobs[k]

        # 2. Edit the sources towards their references.
        started = time.perf_counter()
        sources = [source for source, _ in layout.edits]
        texts = self._tokenizer.batch_decode([completions[s] for s in sources], skip_special_tokens=True)
        failures_before = self.editor.failures
        edited = self.editor.edit(texts, [self._references[s] for s in sources], rng)
        failed_edits = self.editor.failures - failures_before
        attempts: list[EditAttempt] = []
        topups: list[int] = []
        for (source, slot), result in zip(layout.edits, edited, strict=True):
            kinds = tuple(sorted({op.kind for op in result.ops}))
            # An edit that empties the report, loses every inserted token to the completion limit,
            # or gives the source's own tokens back counts as unchanged (training-signal issue).
            completion = (
                edited_completion(
                    self._tokenizer,
                    result.text,
                    result.spans,
                    end_id=self.end_of_turn_id,
                    max_length=self.max_completion_length,
                    source_ids=completions[source],
                )
                if result.changed
                else None
            )
            if completion is not None:
                completions[slot] = completion.ids
                if logprobs is not None:
                    # No sampler probability exists for an edited copy: NaN makes TRL's importance
                    # weight exactly 1 for its tokens (grpo_trainer: NaN differences are zeroed).
                    logprobs[slot] = [math.nan] * len(completion.ids)
                records[slot] = RolloutRecord("edit", source, completion.inserted, kinds, tuple(result.spans))
                attempts.append(EditAttempt(kinds, True, completion.truncated))
            else:
                attempts.append(EditAttempt(kinds, False, dropped=result.changed))
                if self.edit_config.generation == "fill":
                    topups.append(slot)
                    records[slot] = RolloutRecord("topup", source)
        if failed_edits:  # the editor left these unedited; say so in the log
            for attempt in attempts[-failed_edits:]:
                attempt.failed = True
        self._phase_seconds["edit"] += time.perf_counter() - started

        # 3. Top up the slots whose edit changed nothing with fresh samples (fill).
        ids, topup_logprobs = self._generate_rows(prompt_ids, images, multimodal_fields, topups, 1)
        for k, row in enumerate(topups):
            completions[row] = ids[k]
            if logprobs is not None:
                logprobs[row] = topup_logprobs[k] if topup_logprobs is not None else [math.nan] * len(ids[k])
        self._records, self._attempts = records, attempts
        return completions, logprobs

    # -----------------------------------------------------------------------------------------
    # Scoring, advantages
    # -----------------------------------------------------------------------------------------

    def _generate_and_score_completions(self, inputs):
        references = [row.get("reference") for row in inputs]
        bad = [k for k, text in enumerate(references) if not isinstance(text, str)]
        if bad:
            raise ValueError(
                f"rollout rows {bad[:5]} have no 'reference' text; the RL dataset needs one per row"
            )
        self._references = references
        self._records, self._attempts, self._last_results, self._last_texts = None, [], None, []
        output = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        completion_ids = output["completion_ids"]  # (B, T)
        batch, width = completion_ids.shape
        records = self._records or [RolloutRecord() for _ in range(batch)]
        inserted = torch.zeros((batch, width), dtype=torch.bool, device=completion_ids.device)  # (B, T)
        for row, record in enumerate(records):
            if record.inserted:
                mask = record.inserted[:width]
                inserted[row, : len(mask)] = torch.tensor(mask, dtype=torch.bool)
        output["inserted_mask"] = inserted
        output["is_edited"] = torch.tensor([r.kind == "edit" for r in records], device=completion_ids.device)

        # Advantages: ours replace TRL's (unscorable rows excluded from the baseline, A = 0 for them
        # and for groups without spread; EDITGRPO.md section 2, step 5).
        totals = self._gathered_totals  # (N,), every process's rows, NaN = unscorable
        group = self.num_generations if mode == "train" else self.num_generations_eval
        advantages, stats = group_advantages(totals, group, scale=self.loss_config.advantage_scale)
        index = self.accelerator.process_index
        output["advantages"] = advantages[index * batch : (index + 1) * batch].to(completion_ids.device)
        for name, value in stats.items():
            self._metrics[mode][f"advantages/{name}"].append(float(value))
        self._log_rollout_stats(mode, records, output["completion_mask"], inserted)
        self._log_completions(mode, inputs, records, output)
        return output

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        started = time.perf_counter()
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._phase_seconds["score"] += time.perf_counter() - started
        # One reward function (the composite); an unscorable row is NaN, which group_advantages skips.
        weights = self.reward_weights.to(rewards_per_func.device)
        totals = (rewards_per_func * weights[None, :]).nansum(dim=1)  # (N,)
        totals[torch.isnan(rewards_per_func).all(dim=1)] = math.nan
        self._gathered_totals = totals
        mode = "train" if self.model.training else "eval"
        self._log_reward_breakdown(mode, len(prompts))
        return rewards_per_func

    # -----------------------------------------------------------------------------------------
    # Logging helpers
    # -----------------------------------------------------------------------------------------

    def _log_means(self, mode: str, values: dict[str, list[float]]) -> None:
        """Log the mean of each list over all processes (one gather for all names; a name with no
        value anywhere is not logged). Every process must pass the same names."""
        names = sorted(values)
        local = torch.tensor(
            [[sum(values[n]), float(len(values[n]))] for n in names],
            dtype=torch.float64,
            device=self.accelerator.device,
        ).reshape(-1, 2)  # (names, 2)
        totals = self.accelerator.gather(local[None]).reshape(-1, len(names), 2).sum(dim=0)  # (names, 2)
        for name, (total, count) in zip(names, totals.tolist(), strict=True):
            if count > 0:
                self._metrics[mode][name].append(total / count)

    def _log_reward_breakdown(self, mode: str, num_rows: int) -> None:
        """Reward total and components for on-policy and edited rows apart, and each CheXpert
        observation's recall and false-positive rate over on-policy rows (which labels the policy
        gets right, so a user sees whether rare findings are being learned)."""
        results = self._last_results or []
        records = self._records or [RolloutRecord() for _ in range(num_rows)]
        components = self.reward_components
        values: dict[str, list[float]] = {}
        for kind in ("on_policy", "edited"):
            for key in ("total", *components):
                values[f"rewards/{kind}/{key}"] = []
        for label in CHEXPERT_14:
            values[f"labels/{label}/recall"] = []
            values[f"labels/{label}/false_positive_rate"] = []
            if self.label_freqs is not None:
                values[f"labels/{label}/balanced_reward"] = []
        for result, record in zip(results, records, strict=False):
            kind = "edited" if record.kind == "edit" else "on_policy"
            if result.total is not None:
                values[f"rewards/{kind}/total"].append(result.total)
            for name in components:
                value = result.components.get(name)
                if value is not None:
                    values[f"rewards/{kind}/{name}"].append(value)
            if kind == "on_policy" and result.label_outcomes:
                for label, outcome in result.label_outcomes.items():
                    if outcome in ("tp", "fn"):
                        values[f"labels/{label}/recall"].append(1.0 if outcome == "tp" else 0.0)
                    else:
                        values[f"labels/{label}/false_positive_rate"].append(1.0 if outcome == "fp" else 0.0)
                    if self.label_freqs is not None and label in self.label_freqs:
                        # acc_c of chexpert_balanced (metrics/chexpert_balanced): a found positive
                        # earns (1 - f_c) / 2, a kept negative f_c / 2.
                        f = float(self.label_freqs[label])
                        earned = (1.0 - f) / 2.0 if outcome == "tp" else f / 2.0 if outcome == "tn" else 0.0
                        values[f"labels/{label}/balanced_reward"].append(earned)
        self._log_means(mode, values)

    def _log_rollout_stats(
        self, mode: str, records: list[RolloutRecord], completion_mask: torch.Tensor, inserted: torch.Tensor
    ) -> None:
        """Edit rate by operation, edited-token fraction, truncated and failed edits, top-ups."""
        attempts = self._attempts
        completion = completion_mask.bool()
        values: dict[str, list[float]] = {
            "edits/changed_rate": [float(a.changed) for a in attempts],
            "edits/op_rate/replace": [float("replace" in a.ops and a.changed) for a in attempts],
            "edits/op_rate/delete": [float("delete" in a.ops and a.changed) for a in attempts],
            "edits/op_rate/add": [float("append" in a.ops and a.changed) for a in attempts],
            "edits/op_rate/none": [float(not a.changed) for a in attempts],
            "edits/truncated_rate": [float(a.truncated) for a in attempts if a.changed],
            # Changed texts dropped as unchanged: empty, every inserted token cut, or the source again.
            "edits/dropped_rate": [float(a.dropped) for a in attempts],
            "edits/failed_rate": [float(a.failed) for a in attempts],
            "edits/edited_rows_frac": [float(r.kind == "edit") for r in records],
            "edits/topup_rows_frac": [float(r.kind == "topup") for r in records],
            # Policy samples drawn per completion of the batch: (G - k) / G + top-ups under fill,
            # 1 under overwrite (whose overwritten samples are discarded) and without edits.
            "generation/sampled_per_completion": [self._sampled_rows / max(len(records), 1)],
            # Inserted tokens over all completion tokens of the batch (one pooled ratio per process).
            "edits/inserted_token_frac": [
                float((inserted & completion).sum()) / max(float(completion.sum()), 1.0)
            ],
        }
        self._log_means(mode, values)

    def _log_completions(
        self, mode: str, inputs: list[dict[str, Any]], records: list[RolloutRecord], output: dict[str, Any]
    ) -> None:
        """Collapse figures every step; vLLM importance-sampling masks when TRL corrects; every
        ``logging_steps`` (train), the batch's completions next to their edits in
        ``OUTPUT_DIR/completions.jsonl`` (gathered to the main process) and as a table to
        ``report_to`` (TensorBoard text, W&B table)."""
        mask = output["completion_mask"].bool()  # (B, T)
        lengths = mask.sum(dim=1).tolist()  # (B,)
        # The texts TRL decoded for the reward function (this process's rows), not decoded again.
        texts = [t if isinstance(t, str) else "" for t in self._last_texts]
        edited = [r.kind == "edit" for r in records]
        group = self.num_generations if mode == "train" else self.num_generations_eval
        values = collapse_stats(texts, lengths, edited, group, getattr(self.scorer, "is_empty", None))
        if self.use_vllm and self.vllm_importance_sampling_correction:
            weights = output.get("importance_sampling_ratio")
            if weights is not None:
                sampled = torch.tensor([not e for e in edited], device=mask.device)
                values.update(importance_sampling_stats(weights, mask, sampled))
        self._log_means(mode, values)

        step = self.state.global_step + 1  # the optimizer step this rollout batch trains
        if mode != "train" or step % self.args.logging_steps:
            return
        rows = completion_log_rows(
            step=step,
            process=self.accelerator.process_index,
            study_ids=[row.get("study_id") for row in inputs],
            references=self._references,
            texts=texts,
            lengths=lengths,
            records=records,
            results=self._last_results,
            group_size=group,
        )
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            rows = gather_object(rows)
        if not self.accelerator.is_main_process:
            return
        path = Path(self.args.output_dir) / COMPLETIONS_LOG
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(row) + "\n" for row in rows))
        self._report_completions(step, rows)

    def _report_completions(self, step: int, rows: list[dict[str, Any]]) -> None:
        """The logged completions as a table for the ``report_to`` backends that show tables."""
        columns, table = completions_table(rows)
        report_to = set(self.args.report_to or [])
        if "tensorboard" in report_to:
            from transformers.integrations import TensorBoardCallback

            for callback in self.callback_handler.callbacks:
                writer = getattr(callback, "tb_writer", None)
                if isinstance(callback, TensorBoardCallback) and writer is not None:
                    writer.add_text("completions", markdown_table(columns, table), global_step=step)
                    writer.flush()
        if "wandb" in report_to:
            import wandb

            if wandb.run is not None:
                wandb.log({"completions": wandb.Table(columns=columns, data=table)}, commit=False)

    # -----------------------------------------------------------------------------------------
    # Loss
    # -----------------------------------------------------------------------------------------

    def _compute_loss(self, model, inputs):
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)  # (B, P + T)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        logp, entropies, _ = self._get_per_token_logps_and_entropies(
            model,
            input_ids,
            attention_mask,
            completion_ids.size(1),
            compute_entropy=True,
            pixel_values=inputs.get("pixel_values"),
            image_grid_thw=inputs.get("image_grid_thw"),
            num_images=inputs.get("num_images"),
            pixel_attention_mask=inputs.get("pixel_attention_mask"),
            spatial_shapes=inputs.get("spatial_shapes"),
            num_tiles=inputs.get("num_tiles"),
            image_sizes=inputs.get("image_sizes"),
            token_type_ids=inputs.get("token_type_ids"),
            mm_token_type_ids=inputs.get("mm_token_type_ids"),
            image_position_ids=inputs.get("image_position_ids"),
        )  # (B, T) each
        mask = completion_mask.bool()
        old = inputs.get("old_per_token_logps")
        # One optimizer step per rollout batch: the behaviour policy is the current one (TRL skips
        # computing old log-probs then), so on-policy ratios start at 1.
        old = logp.detach() if old is None else old
        weights = (
            inputs.get("importance_sampling_ratio")
            if self.use_vllm and self.vllm_importance_sampling_correction
            else None
        )
        loss, metrics = policy_loss(
            logp,
            old,
            inputs["advantages"],
            mask,
            inputs["inserted_mask"],
            treatment=self.edit_config.token_treatment,
            clip_eps_low=self.epsilon_low,
            clip_eps_high=self.epsilon_high,
            gamma=self.edit_config.off_policy_gamma,
            ref_logp=inputs.get("ref_per_token_logps"),
            kl_beta=self.beta,
            kl_estimator=self.loss_config.kl_estimator,
            kl_clamp=self.loss_config.kl_clamp,
            aggregation=self.loss_config.aggregation,
            max_completion_length=self.max_completion_length,
            token_weights=weights,
        )
        mode = "train" if self.model.training else "eval"
        if mode == "train":
            loss = loss / self.current_gradient_accumulation_steps
        gathered = {
            "kl": metrics["kl_mean"],
            "entropy": masked_mean(entropies.detach(), mask),
            "clip_ratio/region_mean": metrics["clip_frac"],
            "clip_ratio/low_mean": metrics["clip_frac_low"],
            "clip_ratio/high_mean": metrics["clip_frac_high"],
            "policy_loss": metrics["pg_loss"],
            "loss/inserted_token_frac": metrics["inserted_frac"],
        }
        if self.edit_config.token_treatment == "off_policy":
            gathered["loss/off_policy_prob_mean"] = metrics["off_policy_prob_mean"]
        stacked = torch.stack([v.detach().float().reshape(()) for v in gathered.values()])  # (M,)
        means = self.accelerator.gather(stacked[None]).mean(dim=0).tolist()
        for name, value in zip(gathered, means, strict=True):
            self._metrics[mode][name].append(value)
        return loss

    # -----------------------------------------------------------------------------------------
    # Step timing, checkpoints
    # -----------------------------------------------------------------------------------------

    def training_step(self, model, inputs, num_items_in_batch):
        if self._window_started is None:
            self._window_started = time.perf_counter()
        output = super().training_step(model, inputs, num_items_in_batch)
        # GRPOTrainer counts micro-steps in _step; a window of gradient_accumulation_steps of them
        # is one optimizer step (its own "step_time" metric uses the same boundary).
        if self._step % self.current_gradient_accumulation_steps == 0:
            total = time.perf_counter() - self._window_started
            phases = {name: self._phase_seconds.get(name, 0.0) for name in ("generate", "edit", "score")}
            for name, seconds in phases.items():
                self._metrics["train"][f"time/{name}"].append(seconds)
            # The rest: old/reference log-probs, forward, backward (the optimizer step itself runs
            # after training_step, in transformers' loop).
            self._metrics["train"]["time/update"].append(max(total - sum(phases.values()), 0.0))
            self._phase_seconds.clear()
            self._window_started = None
        return output


# ---------------------------------------------------------------------------------------------
# The recipe
# ---------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What a run did."""

    output_dir: str
    final_checkpoint: str
    global_step: int
    resumed_from: str | None
    train_prompts: int
    skipped: list[str]
    log_history: list[dict[str, Any]]

    def last(self, key: str) -> float | None:
        """The last logged value of ``key`` (None if never logged)."""
        values = [entry[key] for entry in self.log_history if key in entry]
        return float(values[-1]) if values else None


def read_rl_rows(
    manifest: str | Path, config: RLConfig, limit: int | None
) -> tuple[list[dict[str, Any]], list[str]]:
    """RL rows of a manifest: ``prompt`` (the user turn with image placeholders), ``images`` (paths,
    opened per batch), ``reference`` (the target section) and ``study_id``; studies without a
    reference are skipped."""
    from editgrpo.training.sft import read_examples

    examples = read_examples(manifest, config, limit, config.data.train_split)  # duck-typed sections
    rows = []
    for row in examples.rows:
        (assistant,) = row["completion"]
        content = assistant["content"]
        reference = content if isinstance(content, str) else "".join(p.get("text") or "" for p in content)
        rows.append(
            {
                "prompt": row["prompt"],
                "images": row["images"],
                "reference": reference,
                "study_id": row["study_id"],
            }
        )
    return rows, list(examples.skipped)


def _open_images(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """``datasets`` transform: image paths -> RGB PIL images, on access (the dataset holds paths)."""
    from PIL import Image

    opened = []
    for paths in batch["images"]:
        row = []
        for path in paths:
            with Image.open(path) as image:
                row.append(image.convert("RGB"))
        opened.append(row)
    return {**batch, "images": opened}


def rl_dataset(rows: list[dict[str, Any]]) -> Any:
    """Rows as a ``datasets.Dataset`` whose images open lazily."""
    from datasets import Dataset

    return Dataset.from_list(rows).with_transform(_open_images)


def grpo_arguments(config: RLConfig, num_processes: int) -> Any:
    """TRL ``GRPOConfig`` of a recipe. TRL counts completions: a step is prompts_per_step * G of
    them, split over processes and micro-batches; generation happens once per optimizer step."""
    from trl import GRPOConfig

    group = config.rollout.group_size
    completions = config.prompts_per_step * group
    if config.prompts_per_step % num_processes:
        raise UserError(
            f"prompts_per_step = {config.prompts_per_step} is not divisible by the {num_processes} processes: "
            "each process must hold whole groups; use a multiple of the process count"
        )
    per_process = completions // num_processes
    micro = config.per_device_batch_size or per_process
    if per_process % micro:
        raise UserError(
            f"per_device_batch_size = {micro} does not divide a process's {per_process} completions per step "
            f"(prompts_per_step * rollout.group_size / processes); use a divisor of {per_process}"
        )
    engine = config.rollout.engine
    managed = dict(
        output_dir=config.output_dir,
        seed=config.seed,
        data_seed=config.seed,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=per_process // micro,
        num_generations=group,
        max_completion_length=config.rollout.max_completion_length,
        temperature=config.rollout.temperature,
        top_p=config.rollout.top_p,
        learning_rate=config.optim.learning_rate,
        weight_decay=config.optim.weight_decay,
        lr_scheduler_type=config.optim.lr_scheduler,
        warmup_steps=config.optim.warmup_ratio,  # transformers 5: a value below 1 is a ratio
        max_grad_norm=config.optim.max_grad_norm,
        max_steps=config.max_steps,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=None,  # rotation after completion markers (training.checkpoints)
        beta=config.loss.kl_beta,
        epsilon=config.loss.clip_eps_low,
        epsilon_high=config.loss.clip_eps_high,
        num_iterations=1,
        # Only read by TRL's own advantage/loss code, which the subclass replaces; set to match.
        loss_type="dr_grpo",
        scale_rewards="group" if config.loss.advantage_scale == "group_std" else "none",
        use_vllm=engine != "hf",
        vllm_mode="server" if engine == "vllm_server" else "colocate",
        vllm_server_base_url=config.rollout.vllm_server_url if engine == "vllm_server" else None,
        vllm_gpu_memory_utilization=config.rollout.vllm_gpu_memory_utilization,
        vllm_importance_sampling_correction=config.rollout.vllm_importance_sampling,
        gradient_checkpointing=config.gradient_checkpointing,
        use_cpu=config.use_cpu,
        bf16=config.model.dtype == "bfloat16" and not config.use_cpu,
        fp16=config.model.dtype == "float16" and not config.use_cpu,
        report_to=list(config.report_to),
        disable_tqdm=config.progress_bar,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_dropout=True,
    )
    return trl_arguments(GRPOConfig, managed, config.trl)


def training_processes(config: RLConfig) -> int:
    """The process count of the distributed state the Trainer will use. transformers builds it as
    ``PartialState(cpu=True)`` under ``use_cpu`` (``TrainingArguments._setup_devices``) and the state
    is shared by the process, so it is asked the same way here, first: a bare ``PartialState()``
    under ``torchrun`` on CPU reports one process, which multiplied the batch by the world size and
    skipped the divisibility check."""
    from accelerate import PartialState

    return PartialState(cpu=config.use_cpu).num_processes


def build_rl_evaluator(config: RLConfig, processor: Any) -> Any:
    """SFT's clinical evaluator on ``data.eval`` (None when there is no eval manifest or
    ``eval_clinical_samples`` is 0); test studies refused unless ``data.eval_on_test``."""
    from editgrpo.training.sft import CLINICAL_EVAL_FILE, ClinicalEvaluator, eval_studies, read_examples

    if not config.data.eval or config.eval_clinical_samples == 0:
        return None
    if not Path(config.data.eval).is_file():
        raise UserError(f"data.eval = {config.data.eval!r}: file not found; give a JSONL study manifest")
    examples = read_examples(
        config.data.eval,
        config,  # duck-typed sections (model, data)
        config.data.max_eval_samples,
        config.data.eval_split,
        refuse_test=not config.data.eval_on_test,
    )
    if not examples.rows:
        raise UserError(
            f"data.eval = {config.data.eval!r}: no study has a {config.data.target_section!r} text"
        )
    return ClinicalEvaluator(
        eval_studies(examples.rows, config.eval_clinical_samples),
        processor,
        Path(config.output_dir) / CLINICAL_EVAL_FILE,
        batch_size=max(config.rollout.group_size, 1),
        max_new_tokens=config.eval_clinical_max_new_tokens or config.rollout.max_completion_length,
    )


def rl_clinical_eval_callback(evaluator: Any, trainer: Any, config: RLConfig) -> Any:
    """Run ``evaluator`` every ``eval_steps`` (default ``save_steps``) optimizer steps and at the
    last one, before that step's checkpoint is saved (so a resumed run's log keeps the record); the
    metrics go to the log history and ``report_to`` through ``Trainer.log`` (GRPOTrainer's own
    ``log`` would fold its pending training metrics into the entry)."""
    from transformers import Trainer, TrainerCallback

    every = config.eval_steps or config.save_steps

    class RLClinicalEvalCallback(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            step = state.global_step
            if model is None or not (step % every == 0 or step >= state.max_steps):
                return
            # Every rank generates (a sharded model needs all ranks in each forward); rank 0 writes.
            record = evaluator.evaluate(
                model, epoch=state.epoch, step=step, write=state.is_world_process_zero
            )
            Trainer.log(trainer, dict(record["metrics"]))

    return RLClinicalEvalCallback()


def build_editor(config: RLConfig, scorer: Any) -> RolloutEditor | None:
    """The edit engine, sharing the reward's annotators when they run in this process."""
    if not config.edit.enabled:
        return None
    reward = config.reward
    if reward.scoring == "server":
        if config.edit.rule == "radgraph":
            raise UserError(
                "edit.rule=radgraph needs RadGraph graphs, which the reward server's /v1/analyze does not "
                "return; use reward.scoring=inprocess or edit.rule=paper|release"
            )
        return RolloutEditor.from_config(config.edit, server_analyser(scorer))
    analyser = build_local_analyser(
        reward.entities,
        reward.entity_model,
        reward.embedder,
        reward.embedder_model,
        extractor=getattr(scorer, "extractor", None),
        embedding=getattr(scorer, "embedder", None),
    )
    return RolloutEditor.from_config(config.edit, analyser)


def build_trainer(config: RLConfig, callbacks: Sequence[Any] = ()) -> tuple[EditGRPOTrainer, int, list[str]]:
    """The trainer of a recipe, with its data; returns ``(trainer, train_prompts, skipped)``."""
    from editgrpo.models.qwen_vl import load_model_section
    from editgrpo.rewards.client import build_reward_scorer
    from editgrpo.training.progress import RichProgressCallback

    if config.data.train is None:
        raise UserError("data.train is not set: give the training manifest (a JSONL file) in the recipe")
    if not Path(config.data.train).is_file():
        raise UserError(f"data.train = {config.data.train!r}: file not found; give a JSONL study manifest")
    rows, skipped = read_rl_rows(config.data.train, config, config.data.max_train_samples)
    if not rows:
        raise UserError(
            f"{config.data.train}: no study has a {config.data.target_section!r} text to train on"
        )

    processes = training_processes(config)
    args = grpo_arguments(config, processes)
    processor, model = load_model_section(
        dataclasses.replace(config.model, dtype=trainable_dtype(config.model.dtype))
    )
    scorer = build_reward_scorer(config.reward)
    editor = build_editor(config, scorer)
    label_freqs = None
    if "chexpert_balanced" in config.reward.components and config.reward.label_freqs:
        from editgrpo.rewards.label_freqs import load_label_freqs

        label_freqs = load_label_freqs(config.reward.label_freqs, labeler=config.reward.labeler)["labels"]
    all_callbacks = list(callbacks)
    evaluator = build_rl_evaluator(config, processor)
    if config.progress_bar:
        all_callbacks.append(RichProgressCallback("EditGRPO" if config.edit.enabled else "GRPO"))
    # TRL builds the KL reference from the policy's `_name_or_path` (GRPOTrainer.__init__); pointing
    # it at `reference_model` for the duration of the constructor gives a different reference.
    original_name = model.config._name_or_path
    if config.reference_model:
        model.config._name_or_path = config.reference_model
    try:
        trainer = EditGRPOTrainer(
            model=model,
            args=args,
            train_dataset=rl_dataset(rows),
            processing_class=processor,
            scorer=scorer,
            editor=editor,
            edit=config.edit,
            loss=config.loss,
            callbacks=all_callbacks,
            keep_checkpoints=config.save_total_limit,
            reward_components=list(config.reward.components),
            label_freqs=label_freqs,
        )
    finally:
        model.config._name_or_path = original_name
    if evaluator is not None:
        trainer.add_callback(rl_clinical_eval_callback(evaluator, trainer, config))
    if trainer.accelerator.num_processes != processes:
        raise RuntimeError(
            f"the Trainer runs {trainer.accelerator.num_processes} processes but the batch was split for "
            f"{processes}: training_processes() must ask the distributed state the way TrainingArguments does"
        )
    if config.progress_bar:
        from transformers.trainer_callback import PrinterCallback

        # With tqdm off, transformers prints every log dict; the rich bar shows the figures instead
        # (and log_history.jsonl / report_to keep them all).
        trainer.remove_callback(PrinterCallback)
    return trainer, len(rows), skipped


def run_train(config: RLConfig, *, resume: bool = False, callbacks: Sequence[Any] = ()) -> TrainResult:
    """Run the RL recipe of ``config`` (module docstring); ``resume`` continues from the newest
    complete checkpoint of ``output_dir`` (a fresh start when there is none). A run whose newest
    complete checkpoint is already at ``max_steps`` trains nothing: ``final/`` is made from that
    checkpoint when it is missing (a kill while it was written, or after the last save)."""
    output_dir = Path(config.output_dir)
    checkpoint = last_complete_checkpoint(output_dir) if resume else None
    if not resume and any(done for _, _, done in list_checkpoints(output_dir)):
        raise UserError(
            f"{output_dir} already holds checkpoints of a run: pass --resume to continue it, or choose "
            "another output_dir"
        )
    if checkpoint is not None:
        step = checkpoint_step(checkpoint) or 0
        if step > config.max_steps:
            raise UserError(
                f"{checkpoint} is at step {step}, past max_steps = {config.max_steps}: raise max_steps to "
                "continue the run, or start a new output_dir"
            )
        if step == config.max_steps:
            return _finish_from_checkpoint(config, checkpoint)
        from editgrpo.training.sft import CLINICAL_EVAL_FILE

        for log in (COMPLETIONS_LOG, CLINICAL_EVAL_FILE):
            _truncate_jsonl(output_dir / log, step)
    save_resolved_config(config, output_dir)
    trainer, prompts, skipped = build_trainer(config, callbacks)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
    final = output_dir / FINAL_CHECKPOINT
    # Written under a temporary name and renamed, so a kill leaves the previous final/ or none.
    partial = output_dir / f"{FINAL_CHECKPOINT}.partial"
    trainer.save_model(str(partial))  # collective under ZeRO-3: every process takes part
    trainer.accelerator.wait_for_everyone()
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(str(partial))
        write_model_card(partial, config, global_step=trainer.state.global_step)
        _replace_dir(partial, final)
        _write_log_history(output_dir, trainer.state.log_history)
    trainer.accelerator.wait_for_everyone()
    return TrainResult(
        output_dir=str(output_dir),
        final_checkpoint=str(final),
        global_step=trainer.state.global_step,
        resumed_from=str(checkpoint) if checkpoint is not None else None,
        train_prompts=prompts,
        skipped=skipped,
        log_history=list(trainer.state.log_history),
    )


def _replace_dir(source: Path, target: Path) -> None:
    """Put the complete folder ``source`` at ``target`` (an older ``target`` is moved aside first and
    deleted after the rename)."""
    import shutil

    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    source.rename(target)
    if old.exists():
        shutil.rmtree(old)


def _write_log_history(output_dir: Path, history: list[dict[str, Any]]) -> None:
    temporary = output_dir / (LOG_HISTORY + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(entry) + "\n" for entry in history))
    temporary.replace(output_dir / LOG_HISTORY)


def _truncate_jsonl(path: Path, step: int) -> None:
    """Drop the lines (completions, clinical evaluations) a killed run logged after the checkpoint
    it resumes from: the resumed run redoes those steps and logs them again."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    if len(kept) != len(lines):
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text("".join(kept), encoding="utf-8")
        temporary.replace(path)


def _finish_from_checkpoint(config: RLConfig, checkpoint: Path) -> TrainResult:
    """A run already at ``max_steps``: ``final/`` from the checkpoint's model and processor files
    when it is missing; nothing is trained."""
    import fnmatch
    import shutil

    from accelerate import PartialState

    output_dir = Path(config.output_dir)
    final = output_dir / FINAL_CHECKPOINT
    state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    history = list(state.get("log_history", []))
    distributed = PartialState(cpu=config.use_cpu)
    if distributed.is_main_process and not final.is_dir():
        partial = output_dir / f"{FINAL_CHECKPOINT}.partial"
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir()
        for item in sorted(checkpoint.iterdir()):
            if item.is_file() and not any(fnmatch.fnmatch(item.name, p) for p in TRAINING_STATE_FILES):
                shutil.copy2(item, partial / item.name)
        write_model_card(partial, config, global_step=checkpoint_step(checkpoint) or 0)
        _replace_dir(partial, final)
        if not (output_dir / LOG_HISTORY).is_file():
            _write_log_history(output_dir, history)
    distributed.wait_for_everyone()
    return TrainResult(
        output_dir=str(output_dir),
        final_checkpoint=str(final),
        global_step=int(state.get("global_step", checkpoint_step(checkpoint) or 0)),
        resumed_from=str(checkpoint),
        train_prompts=0,
        skipped=[],
        log_history=history,
    )
