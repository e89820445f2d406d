"""``editgrpo <subcommand>``: parse arguments, load a config, call one library function.

Nothing heavy is imported at module level, so ``editgrpo --help`` answers at once; each
subcommand imports what it needs. User errors (``editgrpo.errors.UserError``: a bad recipe,
override, path) print their message on stderr and exit with code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from editgrpo.errors import UserError

OVERRIDES_HELP = "dotted overrides, e.g. rollout.group_size=8 edit.rule=release"


def _config_show(args: argparse.Namespace) -> int:
    from editgrpo.config import load_config, to_yaml

    print(to_yaml(load_config(args.recipe, args.overrides)), end="")
    return 0


def _config_validate(args: argparse.Namespace) -> int:
    from editgrpo.config import load_config

    config = load_config(args.recipe, args.overrides)
    print(f"ok: {args.recipe} is a valid {config.stage!r} config")
    return 0


def _tiny_model(args: argparse.Namespace) -> int:
    from pathlib import Path

    from editgrpo.models.tiny import TINY_SIZES, save_tiny_model

    if args.size not in TINY_SIZES:
        raise UserError(f"--size {args.size!r} is not a tiny size; valid: {', '.join(TINY_SIZES)}")
    corpus = None
    if args.corpus is not None:
        path = Path(args.corpus)
        if not path.is_file():
            raise UserError(f"--corpus {path}: file not found")
        corpus = path.read_text(encoding="utf-8", errors="replace")
        if not corpus.strip():
            raise UserError(
                f"--corpus {path}: the file is empty; the tokenizer needs some text to learn from"
            )
    summary = save_tiny_model(args.out_dir, size=args.size, corpus=corpus, seed=args.seed)
    print(json.dumps({"out_dir": str(args.out_dir), **summary}))
    return 0


def _demo(args: argparse.Namespace) -> int:
    import contextlib
    import re
    import sys
    import time
    from pathlib import Path

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from editgrpo.demo import TABLE_COLUMNS, DemoEvent, run_demo

    if args.seeds is not None and args.seeds < 1:
        raise UserError(f"--seeds {args.seeds}: give 1 or more (the full demo's default is 3)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    console = Console(file=sys.stdout, soft_wrap=True)  # the real stdout: the run's own is redirected
    live = console.is_interactive
    bar = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[figures]}", markup=False),
        console=console,
        disable=not live,
    )
    tasks: dict[str, int] = {}
    started: dict[str, float] = {}
    state: dict[str, object] = {"stage": None, "figures": "", "log_every": None, "logged": 0}

    def on_event(event: DemoEvent) -> None:
        figures = "  ".join(
            part
            for part in (f"reward {event.reward:.3f}" if event.reward is not None else "", event.note)
            if part
        )
        if event.stage not in tasks:
            previous = state["stage"]
            if isinstance(previous, str):
                if not live:
                    took = time.perf_counter() - started[previous]
                    console.print(f"  done {previous} in {took:.0f} s  {state['figures']}", markup=False)
                task = tasks[previous]
                bar.update(task, completed=bar.tasks[task].total or 1, total=bar.tasks[task].total or 1)
            tasks[event.stage] = bar.add_task(event.stage, total=event.total, figures="")
            started[event.stage] = time.perf_counter()
            state["stage"] = event.stage
            state["figures"] = ""
            state["log_every"], state["logged"] = event.log_every, 0
            if not live:
                console.print(f"[demo] {event.stage} {figures}", markup=False)
        if figures:
            state["figures"] = figures
        bar.update(tasks[event.stage], completed=event.done, total=event.total, figures=figures)

    class TqdmTap:
        """stdout and stderr during the run: kept in demo.log; the SFT trainer's output (its tqdm
        bar "12/300 [" or its printed log entries, one per ``log_every`` steps, with the loss)
        moves the SFT row of the display."""

        pattern = re.compile(r"(\d+)/(\d+) \[")
        loss = re.compile(r"'loss': '([0-9.]+)'")

        def __init__(self, handle) -> None:
            self.handle = handle

        def write(self, text: str) -> int:
            self.handle.write(text)
            found = self.pattern.findall(text)
            if found and state["stage"] == "SFT":
                done, total = found[-1]
                if int(total) == bar.tasks[tasks["SFT"]].total:  # not a weight-loading bar
                    bar.update(tasks["SFT"], completed=int(done))
            losses = self.loss.findall(text)
            if losses and state["stage"] == "SFT":
                # One printed entry per logging interval (transformers prints them when its bar is off).
                state["logged"] = int(state["logged"]) + len(losses)
                state["figures"] = f"loss {losses[-1]}"
                every = state["log_every"]
                done = {"completed": int(state["logged"]) * every} if isinstance(every, int) else {}
                bar.update(tasks["SFT"], figures=state["figures"], **done)
            return len(text)

        def flush(self) -> None:
            self.handle.flush()

        def isatty(self) -> bool:
            return False

    with (
        open(out / "demo.log", "w", encoding="utf-8", buffering=1) as log,
        bar,
        contextlib.redirect_stderr(TqdmTap(log)),
        contextlib.redirect_stdout(TqdmTap(log)),
    ):
        results = run_demo(out, quick=args.quick, seeds=args.seeds, progress=on_event)
    rows = results["table"]
    console.print()
    header = "| model | " + " | ".join(h for _, h in TABLE_COLUMNS[:6]) + " |"
    console.print(header, markup=False)
    console.print("|---" * (len(TABLE_COLUMNS[:6]) + 1) + "|", markup=False)
    for name, row in rows.items():
        cells = [f"{row[k]['value']:.3f}" if k in row else "-" for k, _ in TABLE_COLUMNS[:6]]
        console.print(f"| {name} | " + " | ".join(cells) + " |", markup=False)
    console.print(
        f"report: {out / 'report.md'} and {out / 'report.html'} (curves: {out / 'reward_curves.png'}); "
        f"total {results['timings_s']['total']:.0f} s",
        markup=False,
    )
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from editgrpo.data.prepare import prepare_dataset

    if args.dataset == "iu-xray":
        if args.reports is None:
            raise UserError("iu-xray needs --reports ARCHIVE (NLMCXR_reports.tgz or its extracted folder)")
        root, options = args.reports, {"images": args.images}
    else:
        if args.root is None:
            raise UserError(f"{args.dataset} needs --root DIR (the dataset's top folder)")
        if args.images is not None or args.reports is not None:
            raise UserError("--reports and --images are iu-xray options; use --root for this dataset")
        root, options = args.root, {}
    # On stderr and transient, so stdout keeps only the summary; disabled when stderr is not a
    # terminal (a log file, a pipe), where rich would leave a blank line. A total of None draws an
    # indeterminate (pulsing) bar until the adapter knows its record count.
    console = Console(stderr=True)
    bar = Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[phase]}", markup=False),  # paths may hold "[...]"
        console=console,
        transient=True,
        disable=not console.is_interactive,
    )
    with bar:
        task = bar.add_task(args.dataset, total=None, phase="starting")
        summary = prepare_dataset(
            args.dataset,
            root,
            args.out,
            on_error=args.on_error,
            status=lambda message: bar.update(task, phase=message),
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            check_images=args.check_images,
            max_images=args.max_images,
            **options,
        )
    splits = ", ".join(f"{name} {count}" for name, count in summary["per_split"].items())
    print(f"{summary['studies']} studies ({splits}) -> {args.out}")
    print(
        f"with prior: {summary['with_prior_pct']}%; images per study: {summary['images_per_study']} "
        f"(max {summary['max_images']}); with findings: {summary['with_findings']}; "
        f"with impression: {summary['with_impression']}"
    )
    if summary["rejected"] or summary["filtered"]:
        print(
            f"left out: {summary['rejected']} rejected, {summary['filtered']} filtered -> {summary['rejects_file']}"
        )
        for reason, count in summary["reject_reasons"].items():
            print(f"  {count:>6}  {reason}")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from editgrpo.data.synth import SynthConfig, write_synthcxr

    try:
        config = SynthConfig(
            n=args.n, seed=args.seed, image_size=args.image_size, with_priors=args.with_priors
        )
    except ValueError as err:
        raise UserError(str(err)) from None
    with Progress(transient=True) as progress:
        task = progress.add_task("rendering SynthCXR", total=args.n)
        summary = write_synthcxr(
            args.out, config, progress=lambda done: progress.update(task, completed=done)
        )
    print(json.dumps(summary))
    return 0


def _label(args: argparse.Namespace) -> int:
    from editgrpo.annotators.chexpert import LABELER_BACKENDS, as_ordered_list, build_labeler
    from editgrpo.text.observations import CHEXPERT_14

    if (args.file is None) == (args.text is None):
        raise UserError("give either FILE.jsonl or --text TEXT")
    if args.backend not in LABELER_BACKENDS:
        raise UserError(f"--backend {args.backend!r}; valid: {', '.join(LABELER_BACKENDS)}")
    items = [("text", args.text)] if args.text is not None else _label_inputs(args.file, args.field)
    options = {}
    if args.backend == "chexbert":
        if args.checkpoint is None:
            raise UserError(
                "--backend chexbert needs --checkpoint (chexbert.pth, a folder holding it, or a hub id)"
            )
        options = {"checkpoint": args.checkpoint, "tokenizer": args.tokenizer, "batch_size": args.batch_size}
    labeler = build_labeler(args.backend, **options)
    with _progress_mode(args.progress, slow=args.backend != "rules") as bar:
        for start in range(0, len(items), args.batch_size):
            bar(f"labelling ({labeler.name})", start, len(items))
            batch = items[start : start + args.batch_size]
            for (item_id, _), vector in zip(batch, labeler.label([text for _, text in batch]), strict=True):
                labels = dict(zip(CHEXPERT_14, as_ordered_list(vector), strict=True))
                print(json.dumps({"id": item_id, "labeler": labeler.name, "labels": labels}))
        bar(f"labelling ({labeler.name})", len(items), len(items))
    return 0


def _models_check(args: argparse.Namespace) -> int:
    """Each model backend a recipe (or, without one, evaluate's options) needs: where its weights are
    looked up, present or missing, and how to get them. Exit 1 when one is missing."""
    from editgrpo.annotators.weights import check_model, needed_models

    reward = None
    if args.recipe is not None:
        from editgrpo.config import load_config

        reward = getattr(load_config(args.recipe, []), "reward", None)
        if reward is None:
            raise UserError(f"{args.recipe}: no reward section, so no model backend to check")
    rows = [check_model(name, given) for name, given in needed_models(reward)]
    for row in rows:
        print(json.dumps(row))
    if not rows:
        print(json.dumps({"models": [], "note": "the recipe uses offline backends only"}))
    return 0 if all(row["present"] for row in rows) else 1


def _models_download(args: argparse.Namespace) -> int:
    from editgrpo.annotators.weights import download

    for name in args.names:
        for path in download(name):
            print(json.dumps({"model": name, "path": str(path)}))
    return 0


def _label_inputs(path: str, field: str | None) -> list[tuple[object, str]]:
    """(id, text) per JSONL line: ``field`` when given, else ``text`` / ``report``, else a study
    manifest row's findings and impression."""
    from pathlib import Path

    source = Path(path)
    if not source.is_file():
        raise UserError(f"{source}: file not found")
    items: list[tuple[object, str]] = []
    for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{source}:{number}: invalid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise UserError(f"{source}:{number}: expected a JSON object")
        keys = [field] if field else ["text", "report"]
        text = next((row[k] for k in keys if isinstance(row.get(k), str)), None)
        if text is None and not field and ("findings" in row or "impression" in row):
            text = "\n".join(p for p in (row.get("findings"), row.get("impression")) if isinstance(p, str))
        if text is None:
            wanted = repr(field) if field else "'text', 'report', or 'findings'/'impression'"
            raise UserError(f"{source}:{number}: no {wanted} string field")
        items.append((row.get("id", row.get("study_id", number)), text))
    return items


def _sft(args: argparse.Namespace) -> int:
    from editgrpo.config import load_config
    from editgrpo.training.sft import run_sft

    result = run_sft(load_config(args.recipe, args.overrides, stage="sft"), resume=args.resume)
    print(
        json.dumps(
            {
                "output_dir": result.output_dir,
                "final_checkpoint": result.final_checkpoint,
                "checkpoints": result.checkpoints,
                "global_step": result.global_step,
                "train_loss": result.train_loss,
                "train_examples": result.train_examples,
                "eval_examples": result.eval_examples,
                "skipped_without_target": len(result.skipped),
            }
        )
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    from editgrpo.config import load_config

    config = load_config(args.recipe, args.overrides, stage="rl")
    # A reward server that cannot be reached, or refuses the trainer, is found before the model
    # loads; one that fails during training (after the client's retries) ends the run with the
    # same kind of message, never a traceback from inside TRL's training loop.
    from editgrpo.rewards.client import RewardServerError

    started = False
    try:
        if config.reward.scoring == "server":
            _check_reward_server(config.reward)
        from editgrpo.training.trainer import run_train

        started = True
        result = run_train(config, resume=args.resume)
    except RewardServerError as err:
        raise UserError(_reward_server_failure(err, config, args.recipe, during_training=started)) from None
    summary = {
        "output_dir": result.output_dir,
        "final_checkpoint": result.final_checkpoint,
        "global_step": result.global_step,
        "resumed_from": result.resumed_from,
        "train_prompts": result.train_prompts,
        "skipped_without_target": len(result.skipped),
    }
    for key in ("rewards/on_policy/total", "rewards/edited/total", "edits/changed_rate", "kl"):
        summary[key] = result.last(key)
    print(json.dumps(summary))
    return 0


def _check_reward_server(reward: Any) -> None:
    """``reward.scoring=server``: the server answers, and accepts this trainer's token."""
    from editgrpo.rewards.client import RewardClient

    token = os.environ.get(reward.server_token_env) or None
    with RewardClient(
        reward.server_url, token=token, timeout_s=reward.timeout_s, retries=reward.retries
    ) as client:
        client.check()


def _reward_server_failure(err: Any, config: Any, recipe: str | None, *, during_training: bool) -> str:
    """The train command's message for a RewardServerError: what happened and what to change."""
    from urllib.parse import urlsplit

    reward = config.reward
    status = getattr(err, "status", None)
    recipe_arg = f" --config {recipe}" if recipe else ""
    try:
        port = urlsplit(reward.server_url).port
    except ValueError:
        port = None
    if port:
        recipe_arg += f" --port {port}"
    if status is None:
        fix = (
            f"start it with `editgrpo serve-rewards{recipe_arg}` (same reward: section) where "
            f"reward.server_url = {reward.server_url} points, or fix reward.server_url, or score in the "
            "trainer with reward.scoring=inprocess"
        )
    elif status in (401, 403):
        fix = (
            f"set the environment variable {reward.server_token_env} (reward.server_token_env) to the "
            "token the server was started with"
        )
    elif status in (413, 422):
        fix = "raise the server's limit named above (an option of editgrpo serve-rewards) and restart it"
    elif status == 404:
        fix = f"reward.server_url = {reward.server_url} is not an editgrpo reward server (or an older one)"
    else:
        fix = "see the reward server's log, restart it, and raise reward.retries if it restarts often"
    if during_training:
        fix += (
            f"; checkpoints already written to {config.output_dir} are kept: continue from the newest "
            "complete one with `editgrpo train ... --resume`"
        )
        return f"the reward server failed during training: {err}. Fix: {fix}"
    return f"the reward server cannot be used (checked before loading the model): {err}. Fix: {fix}"


def _serve_rewards(args: argparse.Namespace) -> int:
    from editgrpo.config import load_config
    from editgrpo.rewards.limits import LIMIT_OPTIONS, ServerLimits
    from editgrpo.rewards.server import serve

    # stage="rl": the reward section belongs to the rl stage; a recipe without `stage:` (just a
    # `reward:` section) loads as an rl config with the other sections at their defaults.
    config = load_config(args.config, args.overrides, stage="rl")
    try:
        limits = ServerLimits(**{field: getattr(args, field) for field in LIMIT_OPTIONS})
    except ValueError as err:
        raise UserError(str(err)) from None
    return serve(config.reward, host=args.host, port=args.port, token=args.token, limits=limits)


def _generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from editgrpo.config import GenerateConfig
    from editgrpo.data.prompts import PromptOptions
    from editgrpo.eval.generate import GenerateOptions, generate_predictions, resolve_device

    _generate_recipe(args)
    try:
        prompt = PromptOptions(max_images=args.max_images)
    except ValueError as err:
        raise UserError(f"--max-images: {err}") from None
    settings = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "seed": args.seed,
        "engine": args.engine,
    }
    options = GenerateOptions(
        model=args.model,
        split=args.split,
        batch_size=args.batch_size,
        seed=args.seed,
        target_section=args.section,
        prompt=prompt,
        settings=settings,
    )
    if args.max_new_tokens < 1 or args.temperature < 0:
        raise UserError("--max-new-tokens must be >= 1 and --temperature >= 0 (0 = greedy)")
    if args.model.startswith(("/", ".", "~")) and not Path(args.model).expanduser().exists():
        raise UserError(f"--model {args.model}: no such directory")
    # The engine's settings follow GenerateConfig's rules (field names in the message).
    GenerateConfig(
        engine=args.engine,
        max_new_tokens=args.max_new_tokens,
        vllm_gpu_memory_utilization=args.gpu_memory_utilization,
        vllm_tensor_parallel_size=args.tensor_parallel_size,
        vllm_max_model_len=args.max_model_len,
    )
    if args.engine == "vllm" and args.device not in ("auto", "cuda"):
        raise UserError(
            f"--device {args.device}: the vllm engine runs on all visible CUDA GPUs; pick them with "
            "CUDA_VISIBLE_DEVICES, or use --engine hf"
        )
    model_path = str(Path(args.model).expanduser()) if args.model.startswith("~") else args.model

    def make_vllm_generator():
        from editgrpo.models.generation_vllm import VLLMGenerator

        return VLLMGenerator.load(
            model_path,
            max_images=args.max_images,
            min_pixels=args.min_pixels,
            max_pixels=args.max_pixels,
            dtype=args.dtype,
            gpu_memory_utilization=args.gpu_memory_utilization,
            tensor_parallel_size=args.tensor_parallel_size,
            max_model_len=args.max_model_len,
            seed=args.seed,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
        )

    def make_generator():  # called only when some study still needs a prediction
        if args.engine == "vllm":
            return make_vllm_generator()
        from functools import partial

        from editgrpo.models.generation import VisualPrompt, generate_reports
        from editgrpo.models.qwen_vl import load_policy, load_processor

        try:
            processor = load_processor(model_path, min_pixels=args.min_pixels, max_pixels=args.max_pixels)
            model = load_policy(model_path, dtype=args.dtype, device=resolve_device(args.device))
        except (OSError, ValueError) as err:
            raise UserError(f"--model {args.model}: cannot load a Qwen2.5-VL checkpoint: {err}") from None
        model.eval()
        decode = partial(
            generate_reports,
            model,
            processor,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
        )
        return lambda prompts, seed: decode([VisualPrompt(p.images, p.text) for p in prompts], seed=seed)

    console = Console(stderr=True)
    bar = Progress(
        TextColumn("generating"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_interactive,
    )
    with bar:
        task = bar.add_task("generate", total=None)
        summary = generate_predictions(
            args.manifest,
            args.out,
            make_generator,
            options,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    print(json.dumps(summary))
    return 0


# generate's flags and where a `stage: generate` recipe (GenerateConfig) keeps each value.
_GENERATE_FIELDS = {
    "model": "model.name_or_path",
    "manifest": "data.eval",
    "split": "data.eval_split",
    "section": "data.target_section",
    "out": "output",
    "batch_size": "batch_size",
    "max_new_tokens": "max_new_tokens",
    "temperature": "temperature",
    "seed": "seed",
    "max_images": "model.max_images",
    "min_pixels": "model.min_pixels",
    "max_pixels": "model.max_pixels",
    "dtype": "model.dtype",
    "engine": "engine",
    "gpu_memory_utilization": "vllm_gpu_memory_utilization",
    "tensor_parallel_size": "vllm_tensor_parallel_size",
    "max_model_len": "vllm_max_model_len",
}


def _generate_recipe(args: argparse.Namespace) -> None:
    """Fill ``args`` from a `stage: generate` recipe (+ overrides) when --recipe is given; refuse
    flags beside it (one source of settings), and check the required flags without one."""
    from editgrpo.config import load_config

    if args.recipe is None:
        if args.overrides:
            raise UserError(f"{args.overrides[0]}: overrides need --recipe; without one, use the flags")
        missing = [f"--{n}" for n in ("model", "manifest", "out") if getattr(args, n) is None]
        if missing:
            raise UserError(
                f"{', '.join(missing)} required (or give --recipe RECIPE.yaml with stage: generate)"
            )
        return
    given = _flags_given(args, args.subparser, [*_GENERATE_FIELDS, "device"])
    given = [g for g in given if g != "--device"]
    if given:
        raise UserError(
            f"{', '.join(given)} with --recipe: give settings in the recipe or as overrides "
            "(e.g. max_new_tokens=64), not as flags"
        )
    config = load_config(args.recipe, args.overrides, stage="generate")
    if config.data.eval is None:
        raise UserError(f"{args.recipe}: data.eval is not set. Fix: name the manifest to generate for")
    if config.num_samples != 1:
        raise UserError(
            f"{args.recipe}: num_samples = {config.num_samples}: generate writes one report per study. "
            "Fix: set num_samples: 1"
        )
    for flag, dotted in _GENERATE_FIELDS.items():
        value = config
        for part in dotted.split("."):
            value = getattr(value, part)
        setattr(args, flag, value)
    if args.split is None:  # data.eval_split null: every study of the manifest
        args.split = "all"


def _label_stats(args: argparse.Namespace) -> int:
    from editgrpo.eval.label_stats import label_stats

    options = {"checkpoint": args.checkpoint} if args.checkpoint else None
    with _progress_mode(args.progress, slow=args.backend != "rules") as bar:
        summary = label_stats(
            args.manifest,
            args.out,
            labeler=args.backend,
            labeler_options=options,
            section=args.section,
            uncertain_as=args.uncertain_as,
            cache=args.cache,
            progress=lambda done, total: bar(f"labelling references ({args.backend})", done, total),
        )
    print(
        json.dumps({k: summary[k] for k in ("out", "n", "labels", "labelled", "cache_hits") if k in summary})
    )
    return 0


# Backends that are fast offline code; anything else is a model (or a judge) worth a progress bar.
_OFFLINE_BACKENDS = {
    "labeler": "rules",
    "entities": "lexicon",
    "graph_entities": "lexicon",
    "embedder": "lexical",
}


class _Bar:
    """A rich progress bar on stderr for slow work, one task per phase; a no-op when disabled.
    ``auto`` draws it only when stderr is a terminal (a log file gets no control characters),
    ``on`` always (the final state is printed when stderr is not a terminal)."""

    def __init__(self, enabled: bool, forced: bool = False) -> None:
        self.enabled = enabled
        self.tasks: dict[str, int] = {}
        self.bar = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(stderr=True)
        self.bar = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=console.is_interactive,
            disable=not (forced or console.is_interactive),
        )

    def __enter__(self) -> _Bar:
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        if self.bar is None:
            return
        if phase not in self.tasks:
            self.tasks[phase] = self.bar.add_task(phase, total=total)
        self.bar.update(self.tasks[phase], completed=done, total=total)


def _progress_mode(value: str, slow: bool) -> _Bar:
    if value not in ("auto", "on", "off"):
        raise UserError(f"--progress {value!r}: use auto, on or off")
    return _Bar(enabled=value == "on" or (value == "auto" and slow), forced=value == "on")


def _green_judge(config) -> object | None:
    """The GREEN judge named by ``config.green_judge``: an http(s) URL is an OpenAI-compatible server
    (its /v1 root), anything else a transformers model folder or hub id."""
    if config.green_judge is None:
        return None
    from editgrpo.annotators.green_judge import build_judge

    target = str(config.green_judge)
    if target.startswith(("http://", "https://")):
        env = config.green_judge_key_env
        if env and not os.environ.get(env):
            raise UserError(
                f"--green-judge-key-env {env}: the environment variable {env} is not set. Fix: export "
                f"{env}=<the API key>, or leave the option out for a server without a key"
            )
        return build_judge(
            "openai",
            base_url=target,
            model=config.green_judge_model,
            endpoint=config.green_judge_endpoint,
            api_key_env=env or "",
            max_new_tokens=config.green_judge_max_new_tokens,
        )
    return build_judge(
        "transformers",
        model=target,
        batch_size=config.green_judge_batch_size,
        max_new_tokens=config.green_judge_max_new_tokens,
    )


# evaluate's flags and the EvaluateConfig fields they set (a recipe gives the fields instead).
_EVALUATE_FLAGS = {
    "out": "output_dir",
    "metrics": "metrics",
    "clean": "clean",
    "labeler": "labeler",
    "entities": "entities",
    "graph_entities": "graph_entities",
    "embedder": "embedder",
    "ratescore_version": "ratescore_version",
    "green_judge": "green_judge",
    "green_judge_model": "green_judge_model",
    "green_judge_endpoint": "green_judge_endpoint",
    "green_judge_key_env": "green_judge_key_env",
    "green_max_new_tokens": "green_judge_max_new_tokens",
    "green_batch_size": "green_judge_batch_size",
    "bootstrap": "bootstrap_samples",
    "seed": "seed",
    "on_error": "on_error",
    "progress": "progress",
}


def _flags_given(args: argparse.Namespace, parser: argparse.ArgumentParser, names) -> list[str]:
    return [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) != parser.get_default(n)]


def _evaluate_config(args: argparse.Namespace):
    from editgrpo.config import EvaluateConfig, load_config

    parser = args.subparser
    if args.recipe is not None:
        given = _flags_given(args, parser, [*_EVALUATE_FLAGS, "no_meteor", "no_report"])
        if given:
            raise UserError(
                f"{', '.join(given)} with --recipe: give settings in the recipe or as overrides "
                "(e.g. bootstrap_samples=200), not as flags"
            )
        overrides = [a for a in args.predictions if "=" in a]
        files = [a for a in args.predictions if "=" not in a]
        if files:
            overrides.append("predictions=[" + ",".join(json.dumps(f) for f in files) + "]")
        return load_config(args.recipe, overrides, stage="evaluate")
    if not args.predictions:
        raise UserError("give one or more predictions files (.jsonl), or --recipe RECIPE.yaml")
    bad = [a for a in args.predictions if "=" in a and not os.path.exists(a)]
    if bad:
        raise UserError(f"{bad[0]}: overrides need --recipe; without one, give predictions files only")
    if args.out is None:
        raise UserError("--out DIR is required (or give a recipe with output_dir)")
    values = {field: getattr(args, flag) for flag, field in _EVALUATE_FLAGS.items()}
    values["metrics"] = list(args.metrics) if args.metrics is not None else None
    if (
        values["green_judge"] is not None
        and values["metrics"] is not None
        and "green" not in values["metrics"]
    ):
        raise UserError("--green-judge with --metrics that leaves out green: add green to --metrics")
    if values["green_judge"] is None and values["metrics"] is not None and "green" in values["metrics"]:
        raise UserError("--metrics green needs a judge: give --green-judge MODEL_OR_URL")
    return EvaluateConfig(
        predictions=list(args.predictions), meteor=not args.no_meteor, report=not args.no_report, **values
    )


def _evaluate(args: argparse.Namespace) -> int:
    from editgrpo.eval.evaluate import evaluate, evaluate_many, render_side_by_side, render_table

    config = _evaluate_config(args)
    judge = _green_judge(config)
    slow = judge is not None or any(
        getattr(config, name) not in (None, offline) for name, offline in _OFFLINE_BACKENDS.items()
    )
    options = {
        "metrics": config.metrics,
        "clean": config.clean,
        "labeler": config.labeler,
        "entities": config.entities,
        "graph_entities": config.graph_entities,
        "embedder": config.embedder,
        "ratescore_version": config.ratescore_version,
        "green_judge": judge,
        "bootstrap": config.bootstrap_samples,
        "confidence": config.confidence,
        "seed": config.seed,
        "with_meteor": config.meteor,
        "on_error": config.on_error,
    }
    out = config.output_dir
    try:
        with _progress_mode(config.progress, slow) as bar:
            if len(config.predictions) == 1:
                summary = evaluate(
                    config.predictions[0], out, progress=bar if bar.enabled else None, **options
                )
                table, names = render_table(summary), None
            else:
                systems = evaluate_many(
                    config.predictions, out, progress=bar if bar.enabled else None, **options
                )
                names = list(systems["systems"])
                table = render_side_by_side(systems["systems"])
    except ValueError as err:  # unknown metric group or cleaner, nothing left to score
        raise UserError(str(err)) from None
    print(table)
    if config.report:
        from editgrpo.eval.report import write_multi_report, write_report

        if names is None:
            write_report(out)
        else:
            write_multi_report(out, names)
    where = (
        "per_sample.jsonl, summary.json, table.md"
        if names is None
        else (f"{', '.join(names)}/ (one evaluation each), summary.json, table.md")
    )
    print(f"written: {out}/{where}" + ("" if not config.report else ", report.html"))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from editgrpo.eval.evaluate import compare, render_compare, write_compare

    if args.shuffles < 1 or args.bootstrap < 1:
        raise UserError("--shuffles and --bootstrap must be >= 1")
    try:
        result = compare(
            args.a,
            args.b,
            metrics=args.metrics,
            clean=args.clean,
            labeler=args.labeler,
            entities=args.entities,
            graph_entities=args.graph_entities,
            embedder=args.embedder,
            n_shuffles=args.shuffles,
            bootstrap=args.bootstrap,
            seed=args.seed,
            on_error=args.on_error,
        )
    except ValueError as err:
        raise UserError(str(err)) from None
    print(render_compare(result), end="")
    md, page = write_compare(result, args.out)
    from editgrpo.eval.evaluate import write_atomic

    write_atomic(md.with_name("compare.json"), json.dumps(result, indent=2) + "\n")
    print(f"written: {md}, {page}, {md.with_name('compare.json')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="editgrpo",
        description="EditGRPO: RL with post-rollout edits for clinically accurate chest X-ray reports.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    config = sub.add_parser("config", help="show or validate a recipe").add_subparsers(
        dest="config_command", metavar="ACTION", required=True
    )
    for name, func, text in (
        ("show", _config_show, "print the resolved config (defaults + recipe + overrides) as YAML"),
        ("validate", _config_validate, "check a recipe; exit 2 listing every problem"),
    ):
        p = config.add_parser(name, help=text, description=text)
        p.add_argument("recipe", help="YAML recipe (its `stage:` key picks the config type)")
        p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
        p.set_defaults(func=func)

    tiny = sub.add_parser("tiny-model", help="build a tiny random-weight Qwen2.5-VL offline")
    tiny.add_argument("out_dir", help="directory to write the model and processor to")
    tiny.add_argument("--size", default="xs", help="xs (~0.6M parameters), s (~5M), m (~24M)")
    tiny.add_argument(
        "--corpus", default=None, help="text file to train the tokenizer on (default: built-in)"
    )
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=_tiny_model)

    from editgrpo.data.adapters import ADAPTERS

    prep = sub.add_parser(
        "prepare",
        help="convert a public CXR dataset into a JSONL study manifest",
        description="Read a dataset in its published layout and write a manifest, a rejects file "
        "(records left out, with reasons) and a summary.",
    )
    prep.add_argument("dataset", choices=list(ADAPTERS), help="which dataset")
    prep.add_argument("--root", help="the dataset's top folder (all datasets but iu-xray)")
    prep.add_argument("--reports", help="iu-xray: NLMCXR_reports.tgz or its extracted folder")
    prep.add_argument("--images", help="iu-xray: folder of <image id>.png files (omit for text only)")
    prep.add_argument("--out", required=True, help="manifest to write (.jsonl)")
    prep.add_argument(
        "--on-error", choices=["fail", "skip"], default="fail", help="bad records: stop, or list and skip"
    )
    prep.add_argument("--check-images", choices=["none", "exists", "open"], default="exists")
    prep.add_argument("--max-images", type=int, default=None, help="leave out studies with more images")
    prep.set_defaults(func=_prepare)

    synth = sub.add_parser("synth", help="write the SynthCXR benchmark (images + manifests)")
    synth.add_argument("--n", type=int, required=True, help="number of studies")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--with-priors", action="store_true", help="give studies a prior with temporal change")
    synth.add_argument("--image-size", type=int, default=112, help="image side in pixels")
    synth.set_defaults(func=_synth)

    label = sub.add_parser(
        "label",
        help="CheXpert labels (14 observations) of reports",
        description="Print one JSON object per report: its id, the labeler, and the 14 CheXpert labels in "
        "CheXbert order (1 positive, 0 negative, -1 uncertain, null blank).",
    )
    label.add_argument("file", nargs="?", help="JSONL: 'text'/'report' per line, or a study manifest")
    label.add_argument("--text", help="one report given on the command line")
    label.add_argument("--field", help="the JSONL field holding the report text")
    label.add_argument("--backend", default="rules", help="rules (offline, chexpert-rules) or chexbert")
    label.add_argument("--checkpoint", help="chexbert: chexbert.pth, its folder, or a hub id")
    label.add_argument("--tokenizer", default="bert-base-uncased", help="chexbert: tokenizer path or hub id")
    label.add_argument("--batch-size", type=int, default=64)
    label.add_argument(
        "--progress", default="auto", help="auto (a bar on a terminal for the chexbert model), on, off"
    )
    label.set_defaults(func=_label)

    gen = sub.add_parser(
        "generate",
        help="write one generated report per study of a manifest split (JSONL, resumable)",
        description="Batched generation with a Qwen2.5-VL checkpoint on a manifest's studies (current + "
        "prior images and the paper's prompt); greedy unless --temperature > 0. Rows already in --out "
        "are kept and skipped, so rerunning continues an interrupted run. Row format: "
        "editgrpo.eval.generate.",
    )
    gen.add_argument(
        "overrides",
        nargs="*",
        help="with --recipe: dotted overrides, e.g. max_new_tokens=64 data.eval_split=test",
    )
    gen.add_argument(
        "--recipe", help="YAML recipe with `stage: generate` (GenerateConfig) instead of the flags"
    )
    gen.add_argument("--model", help="hub id or local checkpoint directory (required without --recipe)")
    gen.add_argument("--manifest", help="study manifest (.jsonl) (required without --recipe)")
    gen.add_argument(
        "--out", help="predictions file to write or continue (.jsonl) (required without --recipe)"
    )
    gen.add_argument("--split", default="test", help="train, validate, test or all (default test)")
    gen.add_argument(
        "--section", default="findings", help="reference section: findings, impression, findings_impression"
    )
    gen.add_argument("--batch-size", type=int, default=8)
    gen.add_argument("--max-new-tokens", type=int, default=256)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    gen.add_argument("--seed", type=int, default=0, help="sampling seed (batch seed = seed + study index)")
    gen.add_argument("--max-images", type=int, default=6, help="images per prompt (current first)")
    gen.add_argument("--min-pixels", type=int, default=None, help="image pixel floor (default: checkpoint's)")
    gen.add_argument("--max-pixels", type=int, default=None, help="image pixel cap (default: checkpoint's)")
    gen.add_argument(
        "--dtype",
        default="auto",
        choices=["float32", "bfloat16", "float16", "auto"],
        help="weights dtype (default auto: the checkpoint's)",
    )
    gen.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when available)")
    gen.add_argument(
        "--engine",
        default="hf",
        choices=["hf", "vllm"],
        help="hf: transformers generate (default); vllm: vLLM's offline engine (CUDA, editgrpo[gpu])",
    )
    gen.add_argument(
        "--gpu-memory-utilization", type=float, default=0.9, help="vllm: share of GPU memory (default 0.9)"
    )
    gen.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm: GPUs per model (default 1)")
    gen.add_argument(
        "--max-model-len", type=int, default=None, help="vllm: context length (default: checkpoint's)"
    )
    gen.set_defaults(func=_generate, subparser=gen)

    stats = sub.add_parser("label-stats", help="per-label positive frequencies of a manifest's references")
    stats.add_argument("manifest", help="training manifest (.jsonl)")
    stats.add_argument("--out", required=True, help="freqs.json to write")
    stats.add_argument("--backend", default="rules", help="labeler: rules or chexbert")
    stats.add_argument("--checkpoint", help="chexbert: chexbert.pth, its folder, or a hub id")
    stats.add_argument(
        "--section", default="findings_impression", help="findings, impression, findings_impression"
    )
    stats.add_argument("--uncertain-as", default="positive", help="positive or negative")
    stats.add_argument("--cache", help="JSONL label cache reused across runs")
    stats.add_argument(
        "--progress", default="auto", help="auto (a bar on a terminal for the chexbert model), on, off"
    )
    stats.set_defaults(func=_label_stats)

    evaluate = sub.add_parser(
        "evaluate",
        help="score predictions with every metric and 95%% bootstrap CIs (several files: side by side)",
        description="Score one predictions file into --out, or several into --out/<name>/ with one "
        "side-by-side table.md and report.html. With --recipe (stage: evaluate, editgrpo.config."
        "EvaluateConfig) the settings come from the recipe, and positional KEY=VALUE arguments override it.",
    )
    evaluate.add_argument(
        "predictions", nargs="*", help="predictions .jsonl files (as written by `editgrpo generate`)"
    )
    evaluate.add_argument("--recipe", help="YAML recipe with `stage: evaluate` instead of the flags")
    evaluate.add_argument("--out", help="output folder")
    evaluate.add_argument(
        "--metrics", nargs="*", default=None, help="chexbert radgraph ratescore green lexical"
    )
    evaluate.add_argument("--clean", default="none", help="text cleaner: none or editgrpo")
    evaluate.add_argument("--labeler", default="rules")
    evaluate.add_argument("--entities", default="lexicon", help="RaTE entities: lexicon or rate")
    evaluate.add_argument(
        "--graph-entities", default=None, help="RadGraph graphs: lexicon or radgraph (default: --entities)"
    )
    evaluate.add_argument("--embedder", default="lexical")
    evaluate.add_argument("--ratescore-version", default="0.5", help="0.5 (EditGRPO parity) or 0.6")
    evaluate.add_argument(
        "--green-judge",
        metavar="MODEL_OR_URL",
        help="GREEN judge: a model folder or hub id (transformers), or an OpenAI-compatible server's "
        "/v1 URL (e.g. http://127.0.0.1:8000/v1 from `vllm serve`); GREEN and Avg(7) then exist",
    )
    evaluate.add_argument(
        "--green-judge-model",
        default="StanfordAIMI/GREEN-RadLlama2-7b",
        help="URL judge: the served model name",
    )
    evaluate.add_argument(
        "--green-judge-endpoint",
        default="completions",
        help="URL judge: completions (GREEN's own chat text, default) or chat (the server's template)",
    )
    evaluate.add_argument(
        "--green-judge-key-env", metavar="VAR", help="URL judge: environment variable holding the API key"
    )
    evaluate.add_argument("--green-max-new-tokens", type=int, default=1024, help="judge output limit")
    evaluate.add_argument("--green-batch-size", type=int, default=8, help="transformers judge batch")
    evaluate.add_argument("--bootstrap", type=int, default=1000)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--no-meteor", action="store_true", help="skip METEOR (it needs Java)")
    evaluate.add_argument("--on-error", choices=["fail", "skip"], default="fail")
    evaluate.add_argument(
        "--no-report", action="store_true", help="skip report.html (charts need matplotlib)"
    )
    evaluate.add_argument(
        "--progress",
        default="auto",
        help="auto (a bar on a terminal when a model backend or a judge runs), on, off",
    )
    evaluate.set_defaults(func=_evaluate, subparser=evaluate)

    comp = sub.add_parser(
        "compare",
        help="paired test of two prediction files: Markdown table, compare.md, compare.html",
        description="Per metric over the shared studies: A, B, A - B with a paired bootstrap CI, and the "
        "p-value of a paired approximate randomisation test; printed and written to --out.",
    )
    comp.add_argument("a")
    comp.add_argument("b")
    comp.add_argument("--out", default="runs/compare", help="folder for compare.md/.html/.json")
    comp.add_argument("--metrics", nargs="*", default=None)
    comp.add_argument("--clean", default="none")
    comp.add_argument("--labeler", default="rules")
    comp.add_argument("--entities", default="lexicon")
    comp.add_argument("--graph-entities", default=None)
    comp.add_argument("--embedder", default="lexical")
    comp.add_argument("--shuffles", type=int, default=10_000)
    comp.add_argument("--bootstrap", type=int, default=1000, help="resamples of the difference's CI")
    comp.add_argument("--seed", type=int, default=0)
    comp.add_argument("--on-error", choices=["fail", "skip"], default="fail")
    comp.set_defaults(func=_compare)

    demo = sub.add_parser(
        "demo",
        help="SFT -> Dr. GRPO vs EditGRPO -> evaluation on SynthCXR, on a CPU (what `make demo` runs)",
    )
    demo.add_argument(
        "--out", default="runs/demo", help="output directory (report.md, report.html, results.json)"
    )
    demo.add_argument("--quick", action="store_true", help="the CI-sized run (1 seed, a few steps; minutes)")
    demo.add_argument("--seeds", type=int, default=None, help="RL seeds (default: 3 full, 1 quick)")
    demo.set_defaults(func=_demo)

    sft = sub.add_parser(
        "sft",
        help="supervised fine-tuning on the target section (answer-only loss)",
        description="Run an `sft` recipe: TRL SFTTrainer on a manifest's studies (images + prompt -> target "
        "section), a checkpoint per epoch and `final/`, the resolved config next to them.",
    )
    sft.add_argument("recipe", help="YAML recipe with `stage: sft`")
    sft.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. max_steps=2 data.max_train_samples=8"
    )
    sft.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest complete checkpoint of output_dir (same data order and RNG state)",
    )
    sft.set_defaults(func=_sft)

    train = sub.add_parser(
        "train",
        help="EditGRPO (or Dr. GRPO / GRPO with edits off) from an SFT checkpoint",
        description="Run an `rl` recipe: TRL GRPOTrainer with post-rollout edits, the composite clinical "
        "reward and the Dr. GRPO loss; checkpoints every save_steps, `final/` and log_history.jsonl at the end. "
        "Multi-GPU: accelerate launch --config_file recipes/accelerate/<cfg>.yaml -m editgrpo train RECIPE.",
    )
    train.add_argument("recipe", help="YAML recipe with `stage: rl`")
    train.add_argument(
        "overrides",
        nargs="*",
        help="dotted overrides, e.g. max_steps=3 edit.enabled=false rollout.group_size=4",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest complete checkpoint of output_dir (same data order and RNG state)",
    )
    train.set_defaults(func=_train)

    models = sub.add_parser(
        "models", help="check or download the weights of the model backends"
    ).add_subparsers(dest="models_command", required=True)
    models_check = models.add_parser("check", help="where each backend's weights are looked up; present?")
    models_check.add_argument("recipe", nargs="?", help="a recipe whose reward section names the backends")
    models_check.set_defaults(func=_models_check)
    models_download = models.add_parser("download", help="fetch weights into the Hugging Face cache")
    models_download.add_argument(
        "names", nargs="+", help="chexbert bert-base-uncased rate-ner biolord radgraph-xl green"
    )
    models_download.set_defaults(func=_models_download)
    rewards = sub.add_parser(
        "serve-rewards",
        help="serve the composite reward over HTTP (batched; loopback unless given a token)",
        description="Build the reward of a recipe's `reward:` section once and serve POST /v1/score, "
        "POST /v1/analyze, GET /healthz, GET /metrics (Prometheus text) and GET /metrics.json "
        "(editgrpo.rewards.server). Binds 127.0.0.1 unless --host says otherwise; a non-loopback host "
        "needs a bearer token of at least 16 characters (--token, or better the environment variable "
        "named by reward.server_token_env, default EDITGRPO_REWARD_TOKEN). Requests over a limit get "
        "413/422 naming the option that raises it.",
    )
    rewards.add_argument(
        "--config",
        help="recipe: an rl recipe, or a YAML file with just a `reward:` section (default: offline backends)",
    )
    rewards.add_argument("overrides", nargs="*", help="dotted overrides, e.g. reward.embedder=lexical")
    rewards.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    rewards.add_argument(
        "--port",
        type=int,
        default=None,
        help="port (default: reward.server_url's port, else 8765; 0 = any free)",
    )
    rewards.add_argument(
        "--token", default=None, help="bearer token (visible in `ps`: prefer the env variable)"
    )
    from editgrpo.rewards.limits import LIMIT_OPTIONS, ServerLimits

    defaults = ServerLimits()
    limit_help = {
        "max_body_bytes": ("bytes", "largest request body (413 beyond)"),
        "max_items": ("N", "most pairs (or texts) in one request (422 beyond)"),
        "max_text_chars": ("N", "most characters in one text (422 beyond)"),
        "max_request_chars": (
            "N",
            "work bound: most characters of all a request's texts together (413 beyond)",
        ),
        "max_batch_pairs": ("N", "most pairs merged into one model call"),
        "max_batch_chars": (
            "N",
            "most characters in one model call; larger requests are scored in slices "
            "that take turns with other clients' requests",
        ),
        "max_queue_pairs": ("N", "most pairs waiting; beyond, requests get 503 and the client retries"),
        "header_timeout_s": ("S", "seconds a connection may take to send a request's headers (408, closed)"),
        "body_timeout_s": (
            "S",
            "seconds a connection may take to send a request's body after its headers (408, closed)",
        ),
    }
    for field, option in LIMIT_OPTIONS.items():
        metavar, text = limit_help[field]
        default = getattr(defaults, field)
        rewards.add_argument(
            option,
            dest=field,
            type=float if field.endswith("_s") else int,
            default=default,
            metavar=metavar,
            help=f"{text} (default {default:g})"
            if isinstance(default, float)
            else f"{text} (default {default:,})",
        )
    rewards.set_defaults(func=_serve_rewards)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UserError as err:
        print(f"editgrpo {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:
        # The reader closed the pipe (`editgrpo label FILE | head`): stop quietly, as Unix tools
        # do, and keep Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
