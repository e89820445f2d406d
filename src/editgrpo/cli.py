"""``editgrpo <subcommand>``: parse arguments, load a config, call one library function.

Nothing heavy is imported at module level, so ``editgrpo --help`` answers at once; each
subcommand imports what it needs. User errors (``editgrpo.errors.UserError``: a bad recipe,
override, path) print their message on stderr and exit with code 2, without a traceback.
"""

from __future__ import annotations

import argparse
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
    import json
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
