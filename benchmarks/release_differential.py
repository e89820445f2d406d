"""Does ``edit.rule=release`` make the authors' edits? Their released functions against ours, on SynthCXR.

Kept apart from the test suite: it needs the authors' code, which the project does not ship. At run
time their two files are read from a local mirror of taokz/EditGRPO (``git show`` at 5decc57 into a
temporary directory) and imported: the server's ``flask_server/RaTEscore_extractor.py``
(``analyze_text_pair``: entities, false positives, false negatives, reference sentences) and the
client's ``verl/utils/RaTEscore_extractor.py`` (``process_text_with_server_analysis``: the edit
loop). Nothing of theirs is copied into the repository.

Only what cannot run here is stubbed: ``flask``, ``flask_responses`` and ``requests`` (the HTTP
parts), ``transformers`` (the server builds its RaTE-NER / BioLORD models at import; the stand-ins
are never called). Their NER and embedding calls get our offline analysis in the shapes they
expect: ``run_ner_for_text([text])`` returns the ``lexicon`` extractor's RaTE entities as
``{"text", "label"}`` dicts, ``get_embeddings_for_entities(names)`` the ``lexical`` embedder's
vectors as a tensor. Their server threshold stays 0.6; the client runs one operation at tau 0.6,
as the paper's runs (``extractor_num_ops_per_para=1``, ``extractor_similarity_threshold=0.6``). The
analysis goes through JSON on its way to the client, as it does over HTTP.

Their "add" step draws with Python's ``random.choice``. To compare edits rather than random
streams, their module's ``random`` is given a stand-in whose ``choice`` draws from the same seeded
numpy generator our planner gets for that pair (``default_rng(k)``, one uniform integer per choice
among more than one), the same distribution as ``random.choice``.

Rollouts: the perturbation suite of ``benchmarks/edit_effect.py`` (``build_group`` of
``benchmarks/reward_agreement.py``: drop, flip, add, laterality, severity). A rollout's output is
the edited text when the edit changed it, else the rollout (the authors' trainer keeps a rollout
whose ``change_flag`` is False).

Last line: one JSON object with ``pairs``, ``agree_rate`` (identical output), ``release_applied`` /
``authors_applied`` (share of rollouts whose text the edit changed), and ``disagreements`` (counts
per class, with up to three examples each when ``--examples``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import ClassVar

import numpy as np

from editgrpo.annotators.analysis import analyse
from editgrpo.annotators.chexpert_rules import RuleLabeler
from editgrpo.annotators.embeddings import build_embedder
from editgrpo.annotators.entities import LexiconEntityExtractor
from editgrpo.data.synth import SynthConfig, generate_studies, truth_of, write_report
from editgrpo.edits.apply import apply_edits
from editgrpo.edits.plan import plan_edits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reward_agreement import build_group

COMMIT = "5decc57"
SERVER_FILE = "flask_server/RaTEscore_extractor.py"
CLIENT_FILE = "verl/utils/RaTEscore_extractor.py"


def _text(report) -> str:
    return "\n".join(p for p in (report.findings, report.impression) if p)


class _Inert:
    """Stands in for a model, tokenizer, config or web object: every call and attribute gives
    another stand-in (the server builds its models at import and never uses them here)."""

    id2label: ClassVar[dict] = {}

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __call__(self, *args, **kwargs):
        return args[0] if len(args) == 1 and callable(args[0]) else _Inert()

    def __getattr__(self, name: str):
        return _Inert()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        return cls()


def _stub_modules() -> None:
    """HTTP and model packages their files import, as inert modules (transformers too, though
    installed: the server would build its models from the hub at import)."""
    for name, attributes in {
        "flask": ("Flask", "request", "current_app", "jsonify"),
        "flask_responses": ("json_response",),
        "requests": ("post",),
        "transformers": ("AutoConfig", "AutoModel", "AutoTokenizer", "AutoModelForTokenClassification"),
    }.items():
        module = types.ModuleType(name)
        for attribute in attributes:
            setattr(module, attribute, _Inert)
        sys.modules[name] = module


def load_release(mirror: Path, workdir: Path):
    """The authors' server and client modules, imported from ``git show`` copies in ``workdir``."""
    _stub_modules()
    modules = []
    for alias, path in (("release_server", SERVER_FILE), ("release_client", CLIENT_FILE)):
        source = subprocess.run(
            ["git", "--git-dir", str(mirror), "show", f"{COMMIT}:{path}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        target = workdir / f"{alias}.py"
        target.write_text(source)
        spec = importlib.util.spec_from_file_location(alias, target)
        module = importlib.util.module_from_spec(spec)
        # The server configures a debug log file in the working directory at import: keep it in
        # the temporary directory, and quiet its "models loaded" print.
        cwd = os.getcwd()
        os.chdir(workdir)
        try:
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
                spec.loader.exec_module(module)
        finally:
            os.chdir(cwd)
        modules.append(module)
    return modules


class OfflineModels:
    """What ``analyze_text_pair`` asks of its ``RateScoreModels``, answered by our offline
    annotators: NER as ``[{"text", "label"}]`` per text, embeddings as an (N, D) tensor."""

    device = "cpu"

    def __init__(self, extractor, embedder) -> None:
        self.extractor, self.embedder = extractor, embedder

    def run_ner_for_text(self, texts: list[str]) -> list[list[dict]]:
        return [
            [{"text": e.text, "label": e.rate_type} for e in r.rate] for r in self.extractor.extract(texts)
        ]

    def get_embeddings_for_entities(self, names: list[str]):
        import torch

        return torch.tensor(np.asarray(self.embedder.embed(names), dtype=np.float32))


class SeededChoice:
    """``random`` for their client: ``choice`` draws like our planner's ``_pick`` from one seeded
    numpy generator (uniform; no draw for a single candidate)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def choice(self, seq):
        return seq[int(self.rng.integers(len(seq)))] if len(seq) > 1 else seq[0]


def classify(
    ours_plan, analysis: dict, theirs_log: list[dict], our_out: str, their_out: str, text: str
) -> str:
    """A disagreement's class, by what each side did."""
    ours = "+".join(op.kind for op in ours_plan.ops) or "none"
    theirs = (
        "+".join(op["operation"] for op in theirs_log if not op["operation"].endswith("_failed")) or "none"
    )
    if their_out.strip() == "" and our_out == text:
        return "authors_emptied_text"  # the deliberate difference: ours leaves it unchanged
    return f"ours:{ours} / authors:{theirs}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=400, help="reference studies")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--tau", type=float, default=0.6)
    parser.add_argument(
        "--max-ops", type=int, default=1, help="operations per rollout (theirs: num_operations)"
    )
    parser.add_argument("--mirror", type=Path, default=Path("/work/.mirror/taokz+EditGRPO/repo"))
    parser.add_argument("--examples", action="store_true", help="print up to three examples per class")
    args = parser.parse_args()
    if not args.mirror.exists():
        raise SystemExit(f"no mirror of taokz/EditGRPO at {args.mirror} (a bare git dir); pass --mirror")
    labeler, extractor, embedder = RuleLabeler(), LexiconEntityExtractor(), build_embedder("lexical")
    rng = np.random.default_rng(args.seed)
    cases: list[tuple[str, str, str]] = []  # (reference, kind, rollout)
    for generated in generate_studies(SynthConfig(n=args.n, seed=args.seed), render=False):
        truth = truth_of(generated.study)
        reference = write_report(truth, np.random.default_rng(rng.integers(2**32)))
        for kind, text, _ in build_group(truth, rng, labeler):
            if kind != "paraphrase":
                cases.append((_text(reference), kind, text))

    with tempfile.TemporaryDirectory() as workdir:
        server, client = load_release(args.mirror, Path(workdir))
    models = OfflineModels(extractor, embedder)
    references = sorted({reference for reference, _, _ in cases})
    reference_analysis = dict(
        zip(references, analyse(references, extractor, embedder, convention="release"), strict=True)
    )
    agree, ours_applied, theirs_applied = 0, 0, 0
    op_kinds: dict[str, int] = {}  # our plans' op sequences, to show what the agreement covers
    classes: dict[str, list] = {}
    for k, (reference, kind, text) in enumerate(cases):
        [rollout] = analyse([text], extractor, embedder, convention="release")
        ref = reference_analysis[reference]
        plan = plan_edits(
            rollout, ref, rule="release", tau=args.tau, max_ops=args.max_ops, rng=np.random.default_rng(k)
        )
        edited = apply_edits(rollout.sentences, ref.sentences, plan)
        our_out = edited.text if edited.changed else text
        sequence = "+".join(op.kind + "/" + op.rule for op in plan.ops) or "none"
        op_kinds[sequence] = op_kinds.get(sequence, 0) + 1

        result = server.analyze_text_pair(text, reference, models)
        result = json.loads(json.dumps(server.convert_tensors_to_serializable(result)))  # over HTTP
        client.random = SeededChoice(np.random.default_rng(k))
        their_text, changed, log = client.process_text_with_server_analysis(
            text, result, num_operations=args.max_ops, similarity_threshold=args.tau
        )
        their_out = their_text if changed else text

        ours_applied += our_out != text
        theirs_applied += their_out != text
        if our_out == their_out:
            agree += 1
        else:
            label = classify(plan, log, our_out, their_out, text)
            classes.setdefault(label, []).append(
                {"kind": kind, "rollout": text, "reference": reference, "ours": our_out, "authors": their_out}
            )
    pairs = len(cases)
    for label, items in sorted(classes.items(), key=lambda kv: -len(kv[1])):
        print(f"{len(items):>5}  {label}")
        if args.examples:
            for item in items[:3]:
                print("       ", json.dumps(item))
    print(
        json.dumps(
            {
                "pairs": pairs,
                "agree_rate": round(agree / max(pairs, 1), 4),
                "release_applied": round(ours_applied / max(pairs, 1), 4),
                "authors_applied": round(theirs_applied / max(pairs, 1), 4),
                "disagreements": {label: len(items) for label, items in classes.items()},
                "max_ops": args.max_ops,
                "ops": dict(sorted(op_kinds.items())),
                "tau": args.tau,
                "commit": COMMIT,
            }
        )
    )


if __name__ == "__main__":
    main()
