"""``editgrpo <subcommand>``: parse arguments, load a config, call one library function.

Nothing heavy is imported at module level, so ``editgrpo --help`` answers at once; each
subcommand imports what it needs. User errors (``editgrpo.errors.UserError``: a bad recipe,
override, path) print their message on stderr and exit with code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

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
    from editgrpo.demo import run_demo

    result = run_demo(args.out, size=args.size, seed=args.seed)
    print(f"tiny Qwen2.5-VL ({result['model']['parameters']:,} parameters) saved under {args.out}/tiny-model")
    print(f"study views: {', '.join(result['views'])}")
    print(f"generated report (random weights, so noise): {result['report']!r}")
    print(f"outputs: {args.out}/reports.json, {args.out}/resolved_config.yaml")
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

    demo = sub.add_parser("demo", help="the end-to-end CPU demo (what `make demo` runs)")
    demo.add_argument("--out", default="runs/demo", help="output directory")
    demo.add_argument("--size", default="s", help="tiny model size")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
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


if __name__ == "__main__":
    sys.exit(main())
