"""Do post-rollout edits make rollouts better? Measured on SynthCXR, where the truth is known.

For each SynthCXR reference study (truth T, reference report R written by the grammar), simulated
rollouts are reports written from perturbed truths (the perturbations of
``benchmarks/reward_agreement.py``'s ``build_group``, reused from there): drop (sentences stating a
present finding removed), flip (a present finding stated absent), add (a hallucinated finding),
laterality (a side swapped) and severity (an effusion size or edema grade changed). Each rollout is
edited against R with every edit rule (``edits.plan.EDIT_RULES``; ``max_ops`` ops, ``tau``), on the
offline analyses (``lexicon`` entities, ``lexical`` embedder), each rule in its analysis
convention (``edits.plan.analysis_convention``).

Per rule, over the *applied* edits (those whose edited text differs from the rollout):
- ``reward_up``: share that raise the composite reward (``CompositeReward`` offline defaults:
  RadGraph partial + chexpert-rules micro-F1-14 + RaTEScore 0.5);
- ``truth_up`` / ``truth_down``: share that raise / lower clinical correctness, the fraction of the
  14 CheXpert labels (positive or not) that agree with R's labels as the SynthCXR grammar states
  them; labels of a rollout or edited text come from the ``chexpert-rules`` labeler (edited texts
  mix sentences, so their grammar labels are not known otherwise; the labeler reads the grammar's
  labels back on SynthCXR reports);
- ``reward_gain``: mean change of the reward; ``edit_size``: mean (removed rollout characters +
  inserted reference characters) / rollout length; ``applied``: share of rollouts edited at all;
- ``edits_per_s``: rollouts analysed + planned + applied per second on one core, reference analyses
  cached (computed before the clock starts), annotator caches warm as in training.

Rows: every registered rule with its defaults, and ``paper_no_anatomy_fp`` (the paper rule with
``anatomy_false_positives=False``: an unmatched ANATOMY entity, which states no finding, does not
make its sentence a false positive; with the surface-level ``lexical`` embedder the literal rule
deletes correctly paraphrased sentences over words like "stomach" or "size").

What training keeps of an edit (``empty_edit_rate``, ``truncated_edit_rate``): the suite plus
one-sentence rollouts (a single hallucinated-finding sentence of the ``add`` rollout, the case where
deleting a false positive empties the report), edited with every rule; each applied edit becomes
completion tokens as the trainer makes them (``training.rollout_edits.edited_completion``, a
byte-level BPE tokenizer trained on SynthCXR reports) with the completion limit set to the
source's own length, so the source fills it (the case where appended text is cut away).
``empty_edit_rate``: edits training keeps whose text is empty; ``truncated_edit_rate``: kept edits
that inserted reference text of which no token survived the limit. Both must be 0.0; ``dropped``
counts the changed texts the trainer turns into "unchanged" (top-ups) for those reasons.

Last line: one JSON object with ``paper_reward_up``, ``paper_truth_down``, ``release_reward_up``,
``paper_applied`` / ``release_applied`` (share of rollouts whose text the rule changed),
``edits_per_s`` (the ``paper`` rule), ``paper_no_anatomy_fp_reward_up`` / ``_truth_down``,
``empty_edit_rate``, ``truncated_edit_rate``, ``training_view`` (per rule) and every row's figures
under ``per_rule``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from editgrpo.annotators.analysis import analyse, with_convention
from editgrpo.annotators.chexpert_rules import RuleLabeler
from editgrpo.annotators.embeddings import build_embedder
from editgrpo.annotators.entities import LexiconEntityExtractor
from editgrpo.data.synth import SynthConfig, generate_studies, truth_of, write_report
from editgrpo.edits.apply import apply_edits
from editgrpo.edits.plan import EDIT_RULES, analysis_convention, plan_edits
from editgrpo.rewards.composite import CompositeReward
from editgrpo.text.observations import CHEXPERT_14
from editgrpo.text.sentences import split_sentences

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reward_agreement import build_group

# Rows of the table: name -> (edit rule, anatomy_false_positives). Every registered rule as it is
# by default, plus the paper rule with ANATOMY entities kept out of its false-positive test.
VARIANTS: dict[str, tuple[str, bool]] = {
    **{rule: (rule, True) for rule in EDIT_RULES},
    "paper_no_anatomy_fp": ("paper", False),
}


def _text(report) -> str:
    return "\n".join(p for p in (report.findings, report.impression) if p)


def _present(labels) -> np.ndarray:
    return np.array([labels.get(name) == 1 for name in CHEXPERT_14])


def single_sentence_rollouts(cases, labeler) -> list[tuple[str, dict, str, str]]:
    """One-sentence rollouts: the first sentence of each ``add`` rollout that states a finding its
    reference does not (labelled positive there, not in the reference)."""
    out = []
    for reference, labels, kind, text in cases:
        if kind != "add":
            continue
        for sentence in split_sentences(text):
            found = labeler.label_one(sentence.text)
            if any(found.get(name) == 1 and labels.get(name) != 1 for name in CHEXPERT_14):
                out.append((reference, labels, "single", sentence.text))
                break
    return out


def training_view(cases, reference_analysis, extractor, embedder, args) -> dict[str, dict]:
    """Per rule: what the trainer keeps of each applied edit at a completion limit equal to the
    source's length (module docstring)."""
    from editgrpo.models.tiny import train_tokenizer
    from editgrpo.training.rollout_edits import edited_completion

    corpus = sorted({reference for reference, *_ in cases})
    tokenizer = train_tokenizer("\n".join(corpus), vocab_size=2000)
    end_id = tokenizer.get_vocab()["<|im_end|>"]
    rollouts = analyse([text for *_, text in cases], extractor, embedder)
    out = {}
    for rule in EDIT_RULES:
        applied = kept = empty = cut = dropped = 0
        convention = analysis_convention(rule)
        for k, ((reference, _, _, text), rollout) in enumerate(zip(cases, rollouts, strict=True)):
            # Each rule reads its own analysis convention, as the edit engine gives it.
            ref = with_convention(reference_analysis[reference], convention)
            rollout = with_convention(rollout, convention)
            plan = plan_edits(
                rollout, ref, rule=rule, tau=args.tau, max_ops=args.max_ops, rng=np.random.default_rng(k)
            )
            result = apply_edits(rollout.sentences, ref.sentences, plan)
            if not result.changed:
                continue
            applied += 1
            source_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            completion = edited_completion(
                tokenizer,
                result.text,
                result.spans,
                end_id=end_id,
                max_length=max(len(source_ids), 1),
                source_ids=source_ids,
            )
            if completion is None:
                dropped += 1
                continue
            kept += 1
            empty += not result.text.strip()
            inserted_text = any(source == "reference" for _, _, source in result.spans)
            cut += inserted_text and not any(completion.inserted)
        out[rule] = {
            "applied": applied,
            "kept": kept,
            "dropped": dropped,
            "empty_edit_rate": round(empty / max(kept, 1), 4),
            "truncated_edit_rate": round(cut / max(kept, 1), 4),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=400, help="reference studies")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--tau", type=float, default=0.6)
    parser.add_argument("--max-ops", type=int, default=1)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    labeler, extractor, embedder = RuleLabeler(), LexiconEntityExtractor(), build_embedder("lexical")
    rng = np.random.default_rng(args.seed)

    # (reference text, reference labels, rollout kind, rollout text)
    cases: list[tuple[str, dict, str, str]] = []
    for generated in generate_studies(SynthConfig(n=args.n, seed=args.seed), render=False):
        truth = truth_of(generated.study)
        reference = write_report(truth, np.random.default_rng(rng.integers(2**32)))
        for kind, text, _ in build_group(truth, rng, labeler):
            if kind != "paraphrase":
                cases.append((_text(reference), reference.labels, kind, text))
    references = sorted({reference for reference, _, _, _ in cases})
    reference_analysis = dict(zip(references, analyse(references, extractor, embedder), strict=True))
    # Each rule reads its own analysis convention (the release: regex sentences, first-substring
    # entity assignment), as the edit engine gives it; references converted once.
    conventions = {rule: analysis_convention(VARIANTS[rule][0]) for rule in VARIANTS}
    reference_in = {
        convention: {text: with_convention(a, convention) for text, a in reference_analysis.items()}
        for convention in set(conventions.values())
    }

    # Warm the annotators' caches on a few rollouts (training runs warm), then time the edits.
    analyse([text for _, _, _, text in cases[:50]], extractor, embedder)
    rules = list(VARIANTS)
    edited: dict[str, list] = {rule: [] for rule in rules}
    seconds = dict.fromkeys(rules, 0.0)
    analysis_seconds = 0.0
    for k, (reference, _, _, text) in enumerate(cases):
        started = time.perf_counter()
        [rollout] = analyse([text], extractor, embedder)
        analysis_seconds += time.perf_counter() - started
        for rule in rules:
            started = time.perf_counter()
            ref = reference_in[conventions[rule]][reference]
            x = with_convention(rollout, conventions[rule])
            plan = plan_edits(
                x,
                ref,
                rule=VARIANTS[rule][0],
                tau=args.tau,
                max_ops=args.max_ops,
                rng=np.random.default_rng(k),
                anatomy_false_positives=VARIANTS[rule][1],
            )
            result = apply_edits(x.sentences, ref.sentences, plan)
            seconds[rule] += time.perf_counter() - started
            kept = sum(end - start for start, end, source in result.spans if source == "policy")
            removed = max(len(" ".join(s.text for s in x.sentences)) - kept, 0)
            size = (removed + result.inserted_chars) / max(len(text), 1)
            edited[rule].append((result.text, result.changed, size))

    # Scoring (not timed): rewards and label correctness before and after each edit.
    reward = CompositeReward()
    before = [r.total for r in reward.score([t for *_, t in cases], [r for r, *_ in cases])]
    correct_before = [
        float((_present(labeler.label_one(text)) == _present(labels)).mean()) for _, labels, _, text in cases
    ]
    per_rule: dict[str, dict] = {}
    for rule in rules:
        applied = [k for k, (_, changed, _) in enumerate(edited[rule]) if changed]
        after = reward.score([edited[rule][k][0] for k in applied], [cases[k][0] for k in applied])
        gains, ups, truth_up, truth_down, sizes = [], 0, 0, 0, []
        by_kind: dict[str, list[int]] = {}
        for k, result in zip(applied, after, strict=True):
            gain = result.total - before[k]
            gains.append(gain)
            ups += gain > 1e-9
            correct = float((_present(labeler.label_one(edited[rule][k][0])) == _present(cases[k][1])).mean())
            truth_up += correct > correct_before[k] + 1e-9
            truth_down += correct < correct_before[k] - 1e-9
            sizes.append(edited[rule][k][2])
            by_kind.setdefault(cases[k][2], []).append(gain > 1e-9)
        n = max(len(applied), 1)
        per_rule[rule] = {
            "applied": round(len(applied) / len(cases), 4),
            "reward_up": round(ups / n, 4),
            "truth_up": round(truth_up / n, 4),
            "truth_down": round(truth_down / n, 4),
            "reward_gain": round(float(np.mean(gains)) if gains else 0.0, 4),
            "edit_size": round(float(np.mean(sizes)) if sizes else 0.0, 4),
            "edits_per_s": round(len(cases) / (analysis_seconds + seconds[rule]), 1),
            "reward_up_by_kind": {kind: round(float(np.mean(v)), 4) for kind, v in sorted(by_kind.items())},
        }
        print(f"{rule:<20} {per_rule[rule]}")
    singles = single_sentence_rollouts(cases, labeler)
    view = training_view(cases + singles, reference_analysis, extractor, embedder, args)
    for rule, figures in view.items():
        print(f"training view {rule:<8} {figures}")
    print(
        json.dumps(
            {
                "paper_reward_up": per_rule["paper"]["reward_up"],
                "paper_truth_down": per_rule["paper"]["truth_down"],
                "release_reward_up": per_rule["release"]["reward_up"],
                "paper_applied": per_rule["paper"]["applied"],
                "release_applied": per_rule["release"]["applied"],
                "edits_per_s": per_rule["paper"]["edits_per_s"],
                "paper_no_anatomy_fp_reward_up": per_rule["paper_no_anatomy_fp"]["reward_up"],
                "paper_no_anatomy_fp_truth_down": per_rule["paper_no_anatomy_fp"]["truth_down"],
                "empty_edit_rate": max(v["empty_edit_rate"] for v in view.values()),
                "truncated_edit_rate": max(v["truncated_edit_rate"] for v in view.values()),
                "single_sentence_rollouts": len(singles),
                "training_view": view,
                "rollouts": len(cases),
                "references": len(references),
                "max_ops": args.max_ops,
                "tau": args.tau,
                "per_rule": per_rule,
            }
        )
    )


if __name__ == "__main__":
    main()
