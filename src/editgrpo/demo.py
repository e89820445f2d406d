"""``make demo``: SFT -> Dr. GRPO vs EditGRPO -> evaluation on SynthCXR, on a CPU, offline.

The recipe, top to bottom (``run_demo``), every phase a real package call:

1. data      -- SynthCXR train/test with priors (``data.synth.write_synthcxr``), sized by ``DemoPlan``;
                the test split is cut into one shard per seed (see "evaluation" below);
2. model     -- a tiny random-weight Qwen2.5-VL whose tokenizer is trained on the train split's
                prompts and reports (``models.tiny.save_tiny_model``), so a report is ~50 tokens;
3. SFT       -- ``training.sft.run_sft`` with a step-based schedule (SynthCXR findings are learned in
                jumps whose time varies, SYNTHCXR_NOTES); a checkpoint is kept at ``rl_start_step``,
                before SFT ends, and RL starts there, as the paper starts RL from the epoch before
                SFT converges (EDITGRPO.md section 1). SFT's ``final/`` is the SFT baseline;
4. RL        -- for each seed, Dr. GRPO (``edit.enabled=false``) and EditGRPO from that same
                checkpoint with the same steps, seed, data order and reward (``training.trainer.run_train``);
5. generate  -- greedy reports on the held-out test studies (``eval.generate.generate_predictions``);
6. evaluate  -- ``eval.evaluate.evaluate`` (bootstrap CIs) per model and ``eval.evaluate.compare``
                (paired randomisation) EditGRPO vs Dr. GRPO and EditGRPO vs SFT; per-finding recall
                and F1 from the per-study labels;
7. report    -- ``report.md`` + ``report.html``: the table with CIs, the paired tests, the per-finding
                table, the on-policy reward curves (``eval.curves``), the edit statistics and example
                reports next to their references; ``results.json`` holds every figure.

Evaluation with several seeds: the test split is cut into one shard per seed and the RL models of
seed ``s`` write the reports of shard ``s``; the shards are pooled, so each RL row is scored on the
whole test set and its CI covers both test sampling and seed-to-seed variation, at the cost of one
pass over the test set per method (SFT checkpoints, which have no seed, write all of it). The
paired tests pair each study's EditGRPO and Dr. GRPO reports (same shard, same seed).

The metrics are the package's offline backends (chexpert-rules labels for CheXbert, lexicon entities
for RadGraph and RaTEScore): approximations of the real metrics, named with their backend in every
column, good enough for SynthCXR whose reports come from a fixed phrase book that the rules read back.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------------------------
# Plan: everything that sizes the demo, in one place
# ---------------------------------------------------------------------------------------------

# A small world with one finding of each role (SYNTHCXR_NOTES): two large easy findings learned
# early in SFT (cardiomegaly, effusion), a support device, a small visible finding that SFT learns
# late and under-reports (nodule: the learnable target of RL), and a low-contrast finding as a
# control (pneumothorax). The other findings are switched off so a 20-minute CPU budget goes to
# these; the reports still state their absence ("No focal consolidation.") as real reports do.
DEMO_PREVALENCE: dict[str, float] = {
    "cardiomegaly": 0.25,
    "pleural_effusion": 0.25,
    "pneumothorax": 0.10,
    "consolidation": 0.0,
    "lung_opacity": 0.0,
    "atelectasis": 0.0,
    "edema": 0.0,
    "nodule": 0.25,
    "support_devices": 0.20,
    "fracture": 0.0,
}
EVAL_METRICS = ("chexbert", "radgraph", "ratescore", "lexical")
COMPARE_METRICS = ("chexbert", "radgraph", "ratescore")


@dataclass(frozen=True)
class DemoPlan:
    """The sizes of one demo run (``QUICK`` for CI, ``FULL`` for ``make demo``)."""

    name: str
    n_studies: int
    test_fraction: float
    seeds: int
    image_size: int = 112
    prior_probability: float = 0.5
    prevalence: Mapping[str, float] = field(default_factory=lambda: dict(DEMO_PREVALENCE))
    model_size: str = "xs"
    # SFT: steps, batch, peak learning rate (cosine decay to 0 at sft_steps); RL starts from the
    # checkpoint saved at rl_start_step.
    sft_steps: int = 1500
    sft_batch: int = 16
    sft_lr: float = 2e-3
    rl_start_step: int = 1000
    # RL: the same for both methods.
    rl_steps: int = 80
    rl_prompts: int = 4
    group_size: int = 8
    num_edits: int = 4  # k = G / 2 (EDITGRPO.md section 2)
    rl_lr: float = 1e-4
    kl_beta: float = 0.01
    max_completion_length: int = 96
    reward: Mapping[str, float] = field(
        default_factory=lambda: {"radgraph_partial": 1.0, "chexbert_micro14": 1.0, "ratescore": 1.0}
    )
    # Evaluation.
    eval_batch: int = 32
    eval_max_new_tokens: int = 96
    bootstrap: int = 1000
    shuffles: int = 2000
    n_examples: int = 4

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
        if not 0 < self.rl_start_step <= self.sft_steps:
            raise ValueError(f"rl_start_step {self.rl_start_step} must be in [1, sft_steps={self.sft_steps}]")
        if not 0 <= self.num_edits < self.group_size:
            raise ValueError(f"num_edits {self.num_edits} must be in [0, group_size={self.group_size})")


QUICK = DemoPlan(
    name="quick",
    n_studies=300,
    test_fraction=0.2,
    seeds=1,
    sft_steps=40,
    sft_batch=8,
    rl_start_step=20,
    rl_steps=3,
    rl_prompts=2,
    group_size=4,
    num_edits=2,
    max_completion_length=64,
    eval_max_new_tokens=64,
    bootstrap=200,
    shuffles=500,
    n_examples=2,
)
FULL = DemoPlan(name="full", n_studies=4000, test_fraction=0.15, seeds=3)
PLANS = {"quick": QUICK, "full": FULL}


# ---------------------------------------------------------------------------------------------
# Progress events (the CLI draws them; the demo itself prints nothing)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoEvent:
    """One progress update: ``stage`` (a short name shown to the user), ``done`` of ``total`` units
    (``total`` None while unknown), and the latest figures (``reward``: on-policy RL reward)."""

    stage: str
    done: int = 0
    total: int | None = None
    reward: float | None = None
    note: str = ""
    # SFT: steps between two logged training entries (the trainer prints one per logging_steps;
    # a display may count them, as transformers' own bar is off when its logging is quiet).
    log_every: int | None = None


Progress = Callable[[DemoEvent], None]


def _silent(event: DemoEvent) -> None:
    return None


def _rl_callback(progress: Progress, stage: str, total: int) -> Any:
    from transformers import TrainerCallback

    class DemoProgressCallback(TrainerCallback):
        """Forwards each RL step's on-policy reward and edit rate to ``progress``."""

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if logs and "rewards/on_policy/total" in logs:
                note = ""
                if "edits/changed_rate" in logs:
                    note = f"edit rate {logs['edits/changed_rate']:.2f}"
                progress(
                    DemoEvent(stage, state.global_step, total, float(logs["rewards/on_policy/total"]), note)
                )

    return DemoProgressCallback()


# ---------------------------------------------------------------------------------------------
# Placeholder image (kept for tests that need a drawing shaped like a chest film)
# ---------------------------------------------------------------------------------------------


def placeholder_radiograph(view: str, size: int = 112, seed: int = 0) -> Any:
    """A grayscale drawing shaped like a chest film (dark lungs, bright mediastinum); a cheap
    stand-in image for tests that need one and no SynthCXR truth."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    image = Image.new("L", (size, size), 170)
    draw = ImageDraw.Draw(image)
    s = size
    if view == "lateral":
        draw.ellipse([0.2 * s, 0.15 * s, 0.8 * s, 0.85 * s], fill=60)
        draw.ellipse([0.45 * s, 0.45 * s, 0.75 * s, 0.8 * s], fill=150)
    else:
        draw.ellipse([0.12 * s, 0.15 * s, 0.47 * s, 0.85 * s], fill=55)
        draw.ellipse([0.53 * s, 0.15 * s, 0.88 * s, 0.85 * s], fill=55)
        draw.ellipse([0.40 * s, 0.45 * s, 0.70 * s, 0.80 * s], fill=185)
    noise = rng.normal(0.0, 8.0, (size, size))
    pixels = np.clip(np.asarray(image.filter(ImageFilter.GaussianBlur(2)), dtype=float) + noise, 0, 255)
    return Image.fromarray(pixels.astype("uint8"), mode="L")


# ---------------------------------------------------------------------------------------------
# Phases
# ---------------------------------------------------------------------------------------------

METHODS = ("Dr. GRPO", "EditGRPO")
_SLUG = {"Dr. GRPO": "drgrpo", "EditGRPO": "editgrpo"}


def _pixels(plan: DemoPlan) -> list[str]:
    side = plan.image_size * plan.image_size
    return [
        "model.dtype=float32",  # TRL trains in fp32 on a CPU
        "model.attn_implementation=eager",
        f"model.min_pixels={side}",  # SynthCXR films at their drawn size: 112 px -> 16 visual tokens
        f"model.max_pixels={side}",
    ]


def make_data(plan: DemoPlan, out: Path) -> dict[str, Any]:
    """SynthCXR train/test with priors, and one test shard per seed (``test_shard{s}.jsonl``)."""
    from editgrpo.data.synth import SynthConfig, write_synthcxr

    summary = write_synthcxr(
        out,
        SynthConfig(
            n=plan.n_studies,
            seed=0,
            image_size=plan.image_size,
            with_priors=True,
            prior_probability=plan.prior_probability,
            lateral=False,  # frontal current + frontal prior: half the visual tokens of four views
            prevalence=dict(plan.prevalence),
            split_fractions=(1.0 - plan.test_fraction, 0.0, plan.test_fraction),
        ),
    )
    lines = (out / "test.jsonl").read_text(encoding="utf-8").splitlines()
    for seed in range(plan.seeds):
        shard = lines[seed :: plan.seeds]
        (out / f"test_shard{seed}.jsonl").write_text("".join(line + "\n" for line in shard), encoding="utf-8")
    return summary


def tokenizer_corpus(manifest: Path) -> str:
    """The prompts and target reports of a manifest, one per line: what the tiny tokenizer learns."""
    from editgrpo.data.manifest import read_manifest
    from editgrpo.data.prompts import build_prompt

    studies, _ = read_manifest(manifest)
    lines = []
    for study in studies:
        prompt = build_prompt(study, target_section="findings")
        lines.append(prompt.text)
        if prompt.target:
            lines.append(prompt.target)
    return "\n".join(lines)


def _sft_logging_steps(plan: DemoPlan) -> int:
    return max(1, plan.sft_steps // 20)


def run_sft_stage(plan: DemoPlan, model_dir: Path, data: Path, out: Path, seed: int) -> Any:
    from editgrpo.config import load_config
    from editgrpo.training.sft import run_sft

    config = load_config(
        None,
        [
            f"model.name_or_path={model_dir}",
            *_pixels(plan),
            f"data.train={data / 'train.jsonl'}",
            f"output_dir={out}",
            f"seed={seed}",
            "use_cpu=true",
            f"per_device_batch_size={plan.sft_batch}",
            f"max_steps={plan.sft_steps}",
            "save_each_epoch=false",
            f"save_steps={plan.rl_start_step}",
            "eval_clinical_samples=0",
            f"optim.learning_rate={plan.sft_lr}",
            "optim.lr_scheduler=cosine",
            "optim.warmup_ratio=0.03",
            "gradient_checkpointing=false",  # a 0.6M-parameter model: memory is not the limit
            f"logging_steps={_sft_logging_steps(plan)}",
        ],
        stage="sft",
    )
    return run_sft(config)


def run_rl_stage(
    plan: DemoPlan, method: str, start: Path, data: Path, out: Path, seed: int, progress: Progress, stage: str
) -> Any:
    from editgrpo.config import load_config
    from editgrpo.training.trainer import run_train

    config = load_config(
        None,
        [
            f"model.name_or_path={start}",
            *_pixels(plan),
            f"data.train={data / 'train.jsonl'}",
            f"output_dir={out}",
            f"seed={seed}",
            "use_cpu=true",
            "progress_bar=false",
            f"prompts_per_step={plan.rl_prompts}",
            f"rollout.group_size={plan.group_size}",
            "rollout.temperature=1.0",
            f"rollout.max_completion_length={plan.max_completion_length}",
            f"optim.learning_rate={plan.rl_lr}",
            "optim.lr_scheduler=constant",
            f"loss.kl_beta={plan.kl_beta}",
            f"edit.enabled={'true' if method == 'EditGRPO' else 'false'}",
            f"edit.num_edits={plan.num_edits}",
            f"max_steps={plan.rl_steps}",
            f"save_steps={plan.rl_steps * 10}",  # no intermediate checkpoints: final/ is saved anyway
            "logging_steps=1",
        ],
        stage="rl",
    )
    # The reward of the plan, exactly (overrides would merge into the default mapping).
    config = replace(config, reward=replace(config.reward, components=dict(plan.reward)))
    return run_train(config, callbacks=[_rl_callback(progress, stage, plan.rl_steps)])


def generate_stage(
    model: Path, manifest: Path, out: Path, plan: DemoPlan, progress: Progress, stage: str
) -> dict[str, Any]:
    from functools import partial

    from editgrpo.data.prompts import PromptOptions
    from editgrpo.eval.generate import GenerateOptions, generate_predictions
    from editgrpo.models.generation import VisualPrompt, generate_reports
    from editgrpo.models.qwen_vl import load_policy, load_processor

    side = plan.image_size * plan.image_size

    def make_generator() -> Any:
        processor = load_processor(str(model), min_pixels=side, max_pixels=side)
        policy = load_policy(str(model), dtype="float32", attn_implementation="eager")
        policy.eval()
        decode = partial(
            generate_reports, policy, processor, max_new_tokens=plan.eval_max_new_tokens, temperature=0.0
        )
        return lambda prompts, seed: decode([VisualPrompt(p.images, p.text) for p in prompts], seed=seed)

    options = GenerateOptions(
        model=str(model),
        split="test",
        batch_size=plan.eval_batch,
        seed=0,
        prompt=PromptOptions(),
        settings={"max_new_tokens": plan.eval_max_new_tokens, "temperature": 0.0},
    )
    return generate_predictions(
        manifest,
        out,
        make_generator,
        options,
        progress=lambda done, total: progress(DemoEvent(stage, done, total)),
    )


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def edit_statistics(logs: Sequence[Sequence[Mapping[str, Any]]]) -> dict[str, float]:
    """Means over all EditGRPO steps of all seeds of the edit figures the trainer logs."""
    keys = (
        "edits/changed_rate",
        "edits/op_rate/replace",
        "edits/op_rate/delete",
        "edits/op_rate/add",
        "edits/op_rate/none",
        "edits/inserted_token_frac",
        "edits/edited_rows_frac",
        "rewards/edited/total",
        "rewards/on_policy/total",
    )
    out: dict[str, float] = {}
    for key in keys:
        values = [float(e[key]) for log in logs for e in log if isinstance(e.get(key), int | float)]
        if values:
            out[key] = sum(values) / len(values)
    return out


def _grouped_zero_std(logs: Sequence[Mapping[str, Any]]) -> float | None:
    values = [
        float(e["frac_reward_zero_std"])
        for e in logs
        if isinstance(e.get("frac_reward_zero_std"), int | float)
    ]
    return sum(values) / len(values) if values else None


# ---------------------------------------------------------------------------------------------
# The recipe
# ---------------------------------------------------------------------------------------------


def run_demo(
    out: str | Path,
    *,
    quick: bool = False,
    seeds: int | None = None,
    progress: Progress | None = None,
    plan: DemoPlan | None = None,
) -> dict[str, Any]:
    """Run the demo into ``out`` (module docstring); returns ``results.json``'s content.

    Runs torch on one intra-op thread (restored afterwards). Why: on a 2-core machine shared with
    any other busy process, torch's spinning OpenMP workers made every step 20-40x slower (measured
    on the demo's RL step: 30 s with 2 threads vs 0.8 s with 1 while another process trained);
    alone, one thread loses little on a model this small (it is dominated by per-op overhead)."""
    import torch
    from transformers.utils import logging as hf_logging

    threads, verbosity = torch.get_num_threads(), hf_logging.get_verbosity()
    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()  # load-time notices would scroll the CLI's display away
    try:
        return _run_demo(out, quick=quick, seeds=seeds, progress=progress, plan=plan)
    finally:
        torch.set_num_threads(threads)
        hf_logging.set_verbosity(verbosity)


def _run_demo(
    out: str | Path,
    *,
    quick: bool,
    seeds: int | None,
    progress: Progress | None,
    plan: DemoPlan | None,
) -> dict[str, Any]:
    from editgrpo.eval.curves import per_finding, plot_reward_curves, reward_series
    from editgrpo.eval.evaluate import compare, evaluate
    from editgrpo.models.tiny import save_tiny_model

    plan = plan or (QUICK if quick else FULL)
    if seeds is not None:
        plan = replace(plan, seeds=seeds)
    progress = progress or _silent
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    def timed(name: str, begin: float) -> None:
        timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - begin, 1)

    # Phase 1: data.
    t = time.perf_counter()
    progress(DemoEvent("data", 0, plan.n_studies, note="drawing SynthCXR"))
    data = out / "data"
    synth = make_data(plan, data)
    progress(DemoEvent("data", plan.n_studies, plan.n_studies, note=f"{synth['splits']}"))
    timed("data", t)

    # Phase 2: tiny model with a tokenizer of this data.
    t = time.perf_counter()
    progress(DemoEvent("model", note=f"tiny Qwen2.5-VL {plan.model_size}"))
    model_dir = out / "tiny-model"
    model_summary = save_tiny_model(
        model_dir, size=plan.model_size, corpus=tokenizer_corpus(data / "train.jsonl")
    )
    timed("model", t)

    # Phase 3: SFT, keeping the checkpoint RL starts from.
    t = time.perf_counter()
    progress(DemoEvent("SFT", 0, plan.sft_steps, log_every=_sft_logging_steps(plan)))
    sft = run_sft_stage(plan, model_dir, data, out / "sft", seed=0)
    rl_start = out / "sft" / f"checkpoint-{plan.rl_start_step}"
    if not rl_start.is_dir():
        raise RuntimeError(f"SFT did not save {rl_start}; checkpoints: {sft.checkpoints}")
    progress(DemoEvent("SFT", plan.sft_steps, plan.sft_steps, note=f"loss {sft.train_loss:.3f}"))
    timed("sft", t)

    # Phase 4: RL, both methods per seed from the same checkpoint.
    logs: dict[str, list[list[dict[str, Any]]]] = {m: [] for m in METHODS}
    finals: dict[tuple[str, int], Path] = {}
    for seed in range(plan.seeds):
        for method in METHODS:
            t = time.perf_counter()
            stage = f"{method} seed {seed}"
            progress(DemoEvent(stage, 0, plan.rl_steps))
            result = run_rl_stage(
                plan,
                method,
                rl_start,
                data,
                out / "rl" / f"{_SLUG[method]}-seed{seed}",
                seed,
                progress,
                stage,
            )
            logs[method].append(list(result.log_history))
            finals[(method, seed)] = Path(result.final_checkpoint)
            timed(f"rl/{_SLUG[method]}", t)

    # Phase 5: greedy reports on the test studies.
    predictions = out / "predictions"
    predictions.mkdir(exist_ok=True)
    sft_name = f"SFT (final, step {plan.sft_steps})"
    start_name = f"SFT (RL start, step {plan.rl_start_step})"
    models: dict[str, Path] = {}
    t = time.perf_counter()
    for name, checkpoint in ((sft_name, Path(sft.final_checkpoint)), (start_name, rl_start)):
        path = predictions / f"{'sft' if name == sft_name else 'sft-start'}.jsonl"
        generate_stage(checkpoint, data / "test.jsonl", path, plan, progress, f"reports: {name}")
        models[name] = path
    for method in METHODS:
        pooled: list[dict[str, Any]] = []
        for seed in range(plan.seeds):
            path = predictions / f"{_SLUG[method]}-seed{seed}.jsonl"
            manifest = data / f"test_shard{seed}.jsonl"
            generate_stage(
                finals[(method, seed)], manifest, path, plan, progress, f"reports: {method} seed {seed}"
            )
            pooled.extend(_read_jsonl(path))
        pooled_path = predictions / f"{_SLUG[method]}.jsonl"
        _write_jsonl(pooled_path, pooled)
        models[method] = pooled_path
    timed("generate", t)

    # Phase 6: scores with CIs, paired tests, per-finding figures.
    t = time.perf_counter()
    summaries: dict[str, Any] = {}
    findings: dict[str, Any] = {}
    for i, (name, path) in enumerate(models.items()):
        progress(DemoEvent("evaluate", i, len(models), note=name))
        eval_dir = out / "eval" / path.stem
        summaries[name] = evaluate(
            path, eval_dir, metrics=list(EVAL_METRICS), bootstrap=plan.bootstrap, with_meteor=False, seed=0
        )
        findings[name] = per_finding(_read_jsonl(eval_dir / "per_sample.jsonl"))
    comparisons = {}
    for other in ("Dr. GRPO", sft_name, start_name):
        progress(DemoEvent("paired tests", note=f"EditGRPO vs {other}"))
        comparisons[f"EditGRPO vs {other}"] = compare(
            models["EditGRPO"], models[other], metrics=list(COMPARE_METRICS), n_shuffles=plan.shuffles, seed=0
        )
    comparisons["Dr. GRPO vs " + sft_name] = compare(
        models["Dr. GRPO"], models[sft_name], metrics=list(COMPARE_METRICS), n_shuffles=plan.shuffles, seed=0
    )
    timed("evaluate", t)

    # Phase 7: curves, edit statistics, examples, report.
    t = time.perf_counter()
    progress(DemoEvent("report"))
    curves = {m: [reward_series(log) for log in logs[m]] for m in METHODS}
    plot_reward_curves(curves, out / "reward_curves.png", window=max(1, min(5, plan.rl_steps // 3)))
    examples = pick_examples(models, plan.n_examples)
    timings["total"] = round(time.perf_counter() - started, 1)

    def relative(path: str | Path) -> str:
        # Paths inside `out`, relative to it, so a results.json copied elsewhere (docs/demo/) names
        # no machine's directories.
        path = Path(path)
        try:
            return str(path.resolve().relative_to(out.resolve()))
        except ValueError:
            return str(path)

    results: dict[str, Any] = {
        "plan": {k: v for k, v in asdict(plan).items()},
        "synth": {k: synth[k] for k in ("studies", "splits", "prevalence", "with_prior_fraction")},
        "model": model_summary,
        "sft": {
            "steps": sft.global_step,
            "train_loss": sft.train_loss,
            "rl_start_checkpoint": relative(rl_start),
            "final_checkpoint": relative(sft.final_checkpoint),
        },
        "models": {name: relative(path) for name, path in models.items()},
        "table": {name: _table_row(summary) for name, summary in summaries.items()},
        "per_finding": findings,
        "comparisons": {name: _comparison_row(c) for name, c in comparisons.items()},
        "curves": {m: [[list(p) for p in s] for s in series] for m, series in curves.items()},
        "rl_final_reward": {
            m: [_tail_mean([v for _, v in s], 5) for s in series] for m, series in curves.items()
        },
        "zero_std_groups": {m: [_grouped_zero_std(log) for log in logs[m]] for m in METHODS},
        "edit_stats": edit_statistics(logs["EditGRPO"]),
        "examples": examples,
        "timings_s": timings,
    }
    (out / "results.json").write_text(
        json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    write_demo_report(out, results)
    timed("report", t)
    progress(DemoEvent("done", 1, 1, note=f"{timings['total']:.0f} s"))
    return results


def _tail_mean(values: Sequence[float], n: int) -> float | None:
    tail = list(values)[-n:]
    return sum(tail) / len(tail) if tail else None


def _table_row(summary: Mapping[str, Any]) -> dict[str, Any]:
    row = {}
    for key, entry in summary["columns"].items():
        if entry.get("value") is None:
            continue
        row[key] = {
            "column": entry["column"],
            "value": entry["value"],
            "low": entry["low"],
            "high": entry["high"],
            "n": entry["n"],
        }
    return row


def _comparison_row(result: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "n_shared": result["n_shared"],
        "n_shuffles": result["n_shuffles"],
        "metrics": {k: v for k, v in result["metrics"].items() if "missing" not in v},
    }


def pick_examples(models: Mapping[str, Path], n: int) -> list[dict[str, Any]]:
    """``n`` test studies with a positive finding (the target finding first), each with its reference
    and every model's report."""
    rows = {name: {r["study_id"]: r for r in _read_jsonl(path)} for name, path in models.items()}
    names = list(rows)
    shared = sorted(set.intersection(*(set(r) for r in rows.values())))
    first = rows[names[0]]
    target_word = "nodule"
    with_target = [s for s in shared if target_word in first[s]["reference"].lower()]
    abnormal = [s for s in shared if s not in with_target and "normal" not in first[s]["reference"].lower()]
    chosen = (with_target[: max(1, n // 2)] + abnormal)[:n]
    return [
        {
            "study_id": s,
            "views": first[s].get("views"),
            "reference": first[s]["reference"],
            "reports": {name: rows[name][s]["prediction"] for name in names},
        }
        for s in chosen
    ]


# ---------------------------------------------------------------------------------------------
# The report: report.md and report.html rendered from one list of blocks (heading, paragraph,
# table, image), so both always say the same thing; the HTML links the curve PNG next to it.
# ---------------------------------------------------------------------------------------------

# (key in evaluate's columns, short header) of the table's columns, in order.
TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("chexbert_micro_f1_14", "micro-F1-14"),
    ("chexbert_macro_f1_14", "macro-F1-14"),
    ("chexbert_micro_f1_5", "micro-F1-5"),
    ("chexbert_macro_f1_5", "macro-F1-5"),
    ("radgraph_partial", "RadGraph-partial"),
    ("ratescore", "RaTEScore"),
    ("bleu_4", "BLEU-4"),
    ("rouge_l", "ROUGE-L"),
)
COMPARED = TABLE_COLUMNS[:6]  # the label and clinical columns (not BLEU / ROUGE-L)
EDIT_STATS = (
    ("edits/changed_rate", "edited copies that differ from their source"),
    ("edits/op_rate/replace", "operation: replace a sentence"),
    ("edits/op_rate/delete", "operation: delete a sentence"),
    ("edits/op_rate/add", "operation: add a reference sentence"),
    ("edits/op_rate/none", "no rule applied"),
    ("edits/inserted_token_frac", "share of edited-copy tokens inserted from the reference"),
    ("edits/edited_rows_frac", "share of group members that are edited copies"),
    ("rewards/edited/total", "mean reward of the edited copies"),
    ("rewards/on_policy/total", "mean reward of the on-policy rollouts"),
)

Block = tuple[str, Any]


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _cell(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return "-"
    return f"{entry['value']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"


def _p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else "<0.001"


def build_blocks(results: Mapping[str, Any]) -> list[Block]:
    plan = results["plan"]
    synth = results["synth"]
    names = list(results["table"])
    blocks: list[Block] = [("h1", "EditGRPO demo on SynthCXR: SFT -> Dr. GRPO vs EditGRPO")]
    blocks.append(
        (
            "p",
            f"Plan `{plan['name']}`: {synth['studies']} SynthCXR studies ({synth['splits']['train']} train, "
            f"{synth['splits']['test']} test; {synth['with_prior_fraction']:.0%} with a prior film), "
            f"{plan['image_size']} px; tiny Qwen2.5-VL `{plan['model_size']}` "
            f"({results['model']['parameters']:,} parameters). SFT {plan['sft_steps']} steps x batch "
            f"{plan['sft_batch']} (lr {plan['sft_lr']}, cosine); RL starts from the SFT checkpoint of step "
            f"{plan['rl_start_step']} and runs {plan['rl_steps']} steps x {plan['rl_prompts']} prompts x G = "
            f"{plan['group_size']} (EditGRPO: k = {plan['num_edits']} edited copies), lr {plan['rl_lr']}, KL beta "
            f"{plan['kl_beta']}, reward {dict(plan['reward'])}, for {plan['seeds']} seed(s); both RL methods "
            "share checkpoint, steps, seeds, data order and reward.",
        )
    )
    blocks.append(
        (
            "p",
            "Metrics are the package's offline backends (chexpert-rules labels in place of CheXbert, lexicon "
            "entities in place of RadGraph and RaTE-NER, lexical embeddings in RaTEScore): approximations of "
            "the published metrics, exact enough for SynthCXR whose reports come from a phrase book the rules "
            "read back. 95% CIs: percentile bootstrap over test studies. RL rows pool one test shard per seed "
            "(each seed's model reports its own shard), so their CIs include seed-to-seed variation.",
        )
    )
    header = ["model", *[h for _, h in TABLE_COLUMNS]]
    rows = [[name, *[_cell(results["table"][name].get(key)) for key, _ in TABLE_COLUMNS]] for name in names]
    blocks += [("h2", "Test-set metrics (value [95% CI])"), ("table", (header, rows))]

    finding_names = sorted({f for per in results["per_finding"].values() for f in per})
    header = ["finding (positives)", *[f"{n}: recall / F1" for n in names]]
    rows = []
    for finding in finding_names:
        positives = next(
            (per[finding]["positives"] for per in results["per_finding"].values() if finding in per), 0
        )
        cells = []
        for name in names:
            entry = results["per_finding"][name].get(finding)
            cells.append(f"{_f(entry['recall'], 2)} / {_f(entry['f1'], 2)}" if entry else "-")
        rows.append([f"{finding} ({positives})", *cells])
    blocks += [
        ("h2", "Per finding (chexpert-rules labels of the reports)"),
        (
            "p",
            "Lung Lesion is the SynthCXR nodule (a small round spot, learned last if at all); Pneumothorax "
            "is drawn with low contrast (a control). A finding SFT sees but under-reports at the RL start "
            "is where RL can help; one it never reports is out of reach of sampling alone.",
        ),
        ("table", (header, rows)),
    ]

    header = ["comparison (A vs B)", *[h for _, h in COMPARED]]
    rows = []
    for label, comparison in results["comparisons"].items():
        cells = []
        for key, _ in COMPARED:
            m = comparison["metrics"].get(key)
            cells.append(f"{m['difference']:+.3f} (p {_p(m['p_value'])})" if m else "-")
        rows.append([f"{label} (n={comparison['n_shared']})", *cells])
    blocks += [
        ("h2", "Paired randomisation tests (A - B, two-sided p)"),
        (
            "p",
            f"Approximate randomisation over the studies both systems reported, "
            f"{next(iter(results['comparisons'].values()))['n_shuffles']} shuffles; a p-value below 0.05 is "
            "a difference unlikely under the null of exchangeable systems.",
        ),
        ("table", (header, rows)),
    ]

    final = results["rl_final_reward"]
    lines = [
        f"{m}: last-5-step mean on-policy reward per seed "
        + ", ".join(_f(v) for v in final[m])
        + "; groups with zero reward spread per step (mean per seed): "
        + ", ".join(_f(v, 2) for v in results["zero_std_groups"][m])
        for m in final
    ]
    blocks += [
        ("h2", "On-policy training reward"),
        (
            "p",
            "The reward of the rollouts the policy wrote itself (edited copies excluded), per step; thin "
            "lines are seeds, bold lines the moving average of their mean.",
        ),
        ("img", "reward_curves.png"),
        ("list", lines),
    ]

    stats = results["edit_stats"]
    rows = [[label, _f(stats.get(key))] for key, label in EDIT_STATS if key in stats]
    blocks += [
        ("h2", "Edit statistics (EditGRPO, mean over steps and seeds)"),
        ("table", (["figure", "value"], rows)),
    ]

    blocks.append(("h2", "Example reports (greedy) next to their references"))
    for example in results["examples"]:
        rows = [["reference", example["reference"]]]
        rows += [[name, text] for name, text in example["reports"].items()]
        blocks += [
            ("h3", f"{example['study_id']} ({', '.join(example.get('views') or [])})"),
            ("table", (["", "text"], rows)),
        ]

    timings = results["timings_s"]
    blocks += [
        ("h2", "Timings (seconds)"),
        ("p", ", ".join(f"{k} {v:.0f}" for k, v in timings.items())),
    ]
    return blocks


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for kind, body in blocks:
        if kind in ("h1", "h2", "h3"):
            out += [f"{'#' * int(kind[1])} {body}", ""]
        elif kind == "p":
            out += [body, ""]
        elif kind == "list":
            out += [f"- {line}" for line in body] + [""]
        elif kind == "img":
            out += [f"![{body}]({body})", ""]
        elif kind == "table":
            header, rows = body
            out.append("| " + " | ".join(_md_escape(h) for h in header) + " |")
            out.append("|" + "---|" * len(header))
            out += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
            out.append("")
    return "\n".join(out)


def render_html(blocks: Sequence[Block]) -> str:
    e = html.escape
    out = [
        "<!doctype html><html><head><meta charset='utf-8'><title>EditGRPO demo</title><style>"
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
        "vertical-align:top;font-size:0.9em}th{background:#f3f3f3}</style></head><body>"
    ]
    for kind, body in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{e(body)}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{e(body)}</p>")
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{e(line)}</li>" for line in body) + "</ul>")
        elif kind == "img":
            out.append(f"<img src='{e(body)}' alt='{e(body)}'>")
        elif kind == "table":
            header, rows = body
            out.append("<table><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in header) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in rows]
            out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_demo_report(out_dir: str | Path, results: Mapping[str, Any]) -> tuple[Path, Path]:
    out = Path(out_dir)
    blocks = build_blocks(results)
    md, page = out / "report.md", out / "report.html"
    md.write_text(render_markdown(blocks), encoding="utf-8")
    page.write_text(render_html(blocks), encoding="utf-8")
    return md, page
