"""Step overhead of EditGRPO over vanilla TRL GRPO, side by side on the same tiny model, data,
group size and seeds.

Setup: the ``xs`` tiny Qwen2.5-VL, SFT'd for ``--sft-steps`` on SynthCXR (64 px) so that its reports
end with ``<|im_end|>`` like a real SFT checkpoint's (random weights would always run to the length
limit, and every variant would sample the same number of tokens whatever it does); the offline
composite reward; Dr. GRPO loss, beta 0.01, G = ``--group``, k = G / 2.

Variants, one run each per round, the order rotated every round (so drift of the machine's speed
spreads over all three):

- ``vanilla``: ``trl.GRPOTrainer`` itself (loss_type dr_grpo, scale_rewards none), G samples;
- ``overwrite``: ``EditGRPOTrainer``, the authors' release: G samples, k overwritten by edits;
- ``fill``: ``EditGRPOTrainer``, G - k samples + k edits (+ a fresh sample for an edit that
  changed nothing).

Step time: TRL's ``step_time`` metric (wall time of ``training_step``: generation, edits, scoring,
log-probs, loss, backward) — the same clock for the three; the first step of each run (warm-up) is
dropped; medians over all measured steps of a variant. Generated tokens: tokens the policy
sampled, counted where TRL's generation returns them (a counting subclass for vanilla,
``EditGRPOTrainer.generated_tokens`` for ours), per step.

Last line: one JSON object with ``overwrite_step_ratio`` and ``fill_step_ratio`` (median step time
/ vanilla's), ``fill_generated_token_ratio`` (generated tokens per step, fill / vanilla) with its
acceptance bound ``(G - k) / G + 0.05``, the medians, the top-up share and the settings.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from editgrpo.config import load_config
from editgrpo.data.synth import SynthConfig, write_synthcxr
from editgrpo.models.tiny import save_tiny_model
from editgrpo.training.sft import run_sft
from editgrpo.training.trainer import build_trainer

CPU_MODEL = [
    "model.dtype=float32",
    "model.attn_implementation=eager",
    "model.min_pixels=3136",
    "model.max_pixels=3136",
]


def prepare(root: Path, sft_steps: int) -> tuple[Path, Path]:
    """A SynthCXR set and an SFT'd tiny model under ``root``."""
    synth = root / "synth"
    write_synthcxr(synth, SynthConfig(n=200, seed=11, image_size=64))
    base = root / "tiny"
    save_tiny_model(base, size="xs", seed=0)
    sft = load_config(
        None,
        [
            f"model.name_or_path={base}",
            *CPU_MODEL,
            f"data.train={synth / 'train.jsonl'}",
            f"output_dir={root / 'sft'}",
            "use_cpu=true",
            "per_device_batch_size=16",
            f"max_steps={sft_steps}",
            "save_each_epoch=false",
            f"save_steps={sft_steps}",
            "eval_clinical_samples=0",
            "logging_steps=50",
            "optim.learning_rate=2e-3",
        ],
        stage="sft",
    )
    return synth, Path(run_sft(sft).final_checkpoint)


def rl_config(model: Path, synth: Path, out: Path, variant: str, args: argparse.Namespace) -> Any:
    overrides = [
        f"model.name_or_path={model}",
        *CPU_MODEL,
        f"data.train={synth / 'train.jsonl'}",
        f"output_dir={out}",
        "use_cpu=true",
        f"prompts_per_step={args.prompts}",
        f"rollout.group_size={args.group}",
        f"rollout.max_completion_length={args.max_tokens}",
        f"max_steps={args.steps}",
        f"save_steps={10 * args.steps}",
        "optim.learning_rate=1e-4",
        "progress_bar=false",
        f"seed={args.seed}",
    ]
    if variant == "vanilla":
        overrides.append("edit.enabled=false")
    else:
        overrides += [f"edit.generation={variant}", f"edit.num_edits={args.group // 2}"]
    return load_config(None, overrides, stage="rl")


def run_variant(
    model: Path, synth: Path, out: Path, variant: str, args: argparse.Namespace
) -> dict[str, Any]:
    """One training run; per-step times (warm-up dropped) and generated tokens per step."""
    config = rl_config(model, synth, out, variant, args)
    if variant == "vanilla":
        return run_vanilla(config)
    trainer, _, _ = build_trainer(config)
    trainer.train()
    history = trainer.state.log_history
    times = [e["step_time"] for e in history if "step_time" in e][1:]
    topups = [e["edits/topup_rows_frac"] for e in history if "edits/topup_rows_frac" in e]
    return {
        "step_times": times,
        "tokens_per_step": trainer.generated_tokens / trainer.state.global_step,
        "topup_rows_frac": statistics.mean(topups) if topups else 0.0,
    }


def run_vanilla(config: Any) -> dict[str, Any]:
    """Plain ``trl.GRPOTrainer`` with the same arguments, model, data and reward."""
    from trl import GRPOTrainer

    from editgrpo.models.qwen_vl import load_policy, load_processor
    from editgrpo.rewards.composite import CompositeReward
    from editgrpo.training.trainer import grpo_arguments, read_rl_rows, rl_dataset

    class CountingGRPOTrainer(GRPOTrainer):
        """Counts the tokens TRL's generation returns (instrumentation only)."""

        generated_tokens = 0

        def _generate_single_turn(self, *args: Any, **kwargs: Any) -> Any:
            completion_ids, logprobs = super()._generate_single_turn(*args, **kwargs)
            self.generated_tokens += sum(len(ids) for ids in completion_ids)
            return completion_ids, logprobs

    rows, _ = read_rl_rows(config.data.train, config, None)
    model = load_policy(
        config.model.name_or_path,
        dtype="float32",
        attn_implementation="eager",
        freeze_vision=config.model.freeze_vision,
    )
    processor = load_processor(
        config.model.name_or_path, min_pixels=config.model.min_pixels, max_pixels=config.model.max_pixels
    )
    trainer = CountingGRPOTrainer(
        model=model,
        reward_funcs=[CompositeReward()],
        args=grpo_arguments(config, 1),
        train_dataset=rl_dataset(rows),
        processing_class=processor,
    )
    trainer.train()
    times = [e["step_time"] for e in trainer.state.log_history if "step_time" in e][1:]
    return {
        "step_times": times,
        "tokens_per_step": trainer.generated_tokens / trainer.state.global_step,
        "topup_rows_frac": 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs per variant (alternating)")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per run (the first is dropped)")
    parser.add_argument("--group", type=int, default=8, help="G (k = G / 2)")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step")
    parser.add_argument("--max-tokens", type=int, default=64, help="max completion length")
    parser.add_argument("--sft-steps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    variants = ["vanilla", "overwrite", "fill"]
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        synth, model = prepare(root, args.sft_steps)
        print(f"setup (SynthCXR + {args.sft_steps} SFT steps): {time.perf_counter() - started:.0f} s")
        for r in range(args.rounds):
            order = variants[r % 3 :] + variants[: r % 3]
            for variant in order:
                torch.manual_seed(args.seed)
                result = run_variant(model, synth, root / f"{variant}-{r}", variant, args)
                results[variant].append(result)
                print(
                    f"round {r} {variant:9s}: median step {statistics.median(result['step_times']):.3f} s, "
                    f"{result['tokens_per_step']:.0f} generated tokens/step, top-ups {result['topup_rows_frac']:.3f}"
                )

    def median_time(variant: str) -> float:
        return statistics.median(t for run in results[variant] for t in run["step_times"])

    def tokens(variant: str) -> float:
        return statistics.mean(run["tokens_per_step"] for run in results[variant])

    group, k = args.group, args.group // 2
    figures = {
        "overwrite_step_ratio": round(median_time("overwrite") / median_time("vanilla"), 3),
        "fill_step_ratio": round(median_time("fill") / median_time("vanilla"), 3),
        "fill_generated_token_ratio": round(tokens("fill") / tokens("vanilla"), 3),
        "fill_token_ratio_bound": round((group - k) / group + 0.05, 3),
        "median_step_s": {v: round(median_time(v), 4) for v in variants},
        "generated_tokens_per_step": {v: round(tokens(v), 1) for v in variants},
        "fill_topup_rows_frac": round(statistics.mean(run["topup_rows_frac"] for run in results["fill"]), 4),
        "group_size": group,
        "num_edits": k,
        "prompts_per_step": args.prompts,
        "steps_per_run": args.steps,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
