"""Do the offline clinical metrics rank reports by clinical correctness? Measured on SynthCXR.

No real metric model can run here, so this measures what the offline metrics get right where the
truth is known. For each SynthCXR reference study (truth T, report R) a group of candidate reports
is written by the SynthCXR grammar from perturbed truths:

- paraphrase: T itself, other phrasing (clinically identical);
- flip: a present finding made absent (the grammar then states its negation);
- drop: the sentences that state a present finding removed from the paraphrase;
- add: an absent finding made present (a hallucination);
- laterality: the side of a lateralised finding swapped;
- severity: an effusion size or an edema grade changed.

Clinical correctness of a candidate = the fraction of the 14 CheXpert labels (present or not) it
gets right against T (laterality and severity keep every label: they tie with the paraphrase).

Per metric (`chexpert-rules` micro-F1-14, RadGraph partial F1 on the `lexicon` extractor,
RaTEScore 0.5 on `lexicon` entities + the chosen embedder, and their sum, the composite reward):
- Kendall tau-b between score and correctness inside each group, restricted to the paraphrase and
  the variants of one perturbation kind, averaged over groups; `min_kendall_tau` is the worst
  kind's average (kinds whose members all tie are skipped); `mean_group_tau` is tau-b over all the
  members of a group (laterality and severity variants included, which tie in correctness);
- `paraphrase_wins`: the share of groups whose paraphrase outscores every clinically wrong variant;
- `pairs_per_s`: (candidate, reference) pairs scored per second on one core, extraction included
  (the annotators' sentence caches start empty and fill during the run, as they do in training).

Last line: one JSON object with `min_kendall_tau`, `paraphrase_wins`, `pairs_per_s` (composite),
and `per_metric` (every metric's figures).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace

import numpy as np

from editgrpo.annotators.chexpert_rules import RuleLabeler
from editgrpo.annotators.embeddings import build_embedder
from editgrpo.annotators.entities import LexiconEntityExtractor
from editgrpo.data.synth import (
    EDEMA_GRADES,
    EFFUSION_SIZES,
    FINDING_LABELS,
    SynthConfig,
    generate_studies,
    truth_of,
    write_report,
)
from editgrpo.metrics.chexbert_f1 import pair_micro_f1
from editgrpo.metrics.radgraph_f1 import radgraph_f1_pair
from editgrpo.metrics.ratescore import ratescore_pair
from editgrpo.text.observations import CHEXPERT_14
from editgrpo.text.sentences import split_sentences

KINDS = ("flip", "drop", "add", "laterality", "severity")
# One template per finding to add as a hallucination (fields of SynthFindings).
ADDITIONS = {
    "cardiomegaly": {"cardiomegaly": True},
    "pleural_effusion": {"effusion_side": "right", "effusion_size": "small"},
    "pneumothorax": {"pneumothorax_side": "left"},
    "edema": {"edema": "mild"},
    "nodule": {"nodule_side": "right"},
    "fracture": {"fracture_side": "left"},
}
LATERAL_FIELDS = ("pneumothorax_side", "atelectasis_side", "nodule_side", "fracture_side", "effusion_side")


def _text(report) -> str:
    return "\n".join(p for p in (report.findings, report.impression) if p)


def _present(labels: dict[str, int]) -> np.ndarray:
    return np.array([labels.get(name) == 1 for name in CHEXPERT_14])


def kendall_tau_b(x: list[float], y: list[float]) -> float | None:
    """Kendall's tau-b (ties in either variable handled); None when either side is constant."""
    concordant = discordant = ties_x = ties_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif dx == dy:
                concordant += 1
            else:
                discordant += 1
    denominator = ((concordant + discordant + ties_x) * (concordant + discordant + ties_y)) ** 0.5
    return (concordant - discordant) / denominator if denominator else None


def build_group(truth, rng: np.random.Generator, labeler: RuleLabeler) -> list[tuple[str, str, object]]:
    """(kind, text, truth labels) of the candidates of one reference."""
    members = []
    paraphrase = write_report(truth, np.random.default_rng(rng.integers(2**32)))
    members.append(("paraphrase", _text(paraphrase), paraphrase.labels))
    present = [f for f in truth.present if f != "support_devices"]
    if present:
        finding = present[int(rng.integers(len(present)))]
        flipped = write_report(truth.without(finding), np.random.default_rng(rng.integers(2**32)))
        members.append(("flip", _text(flipped), flipped.labels))
        # drop: remove the paraphrase's sentences that state the finding (found by the labeler).
        label = FINDING_LABELS[finding]
        kept = [s.text for s in split_sentences(_text(paraphrase)) if labeler.label_one(s.text)[label] != 1]
        dropped_labels = {k: v for k, v in paraphrase.labels.items() if k != label}
        members.append(("drop", " ".join(kept), dropped_labels))
    absent = [f for f in ADDITIONS if not truth.has(f)]
    if absent:
        finding = absent[int(rng.integers(len(absent)))]
        try:
            added_truth = replace(truth, **ADDITIONS[finding])
        except ValueError:
            added_truth = None
        if added_truth is not None:
            added = write_report(added_truth, np.random.default_rng(rng.integers(2**32)))
            members.append(("add", _text(added), added.labels))
    sided = [f for f in LATERAL_FIELDS if getattr(truth, f) in ("left", "right")]
    if sided:
        field = sided[int(rng.integers(len(sided)))]
        swapped = replace(truth, **{field: "right" if getattr(truth, field) == "left" else "left"})
        try:
            report = write_report(swapped, np.random.default_rng(rng.integers(2**32)))
            members.append(("laterality", _text(report), report.labels))
        except ValueError:
            pass
    if truth.effusion_size is not None or truth.edema is not None:
        if truth.effusion_size is not None:
            sizes = [s for s in EFFUSION_SIZES if s != truth.effusion_size]
            changed = replace(truth, effusion_size=sizes[int(rng.integers(len(sizes)))])
        else:
            grades = [g for g in EDEMA_GRADES if g != truth.edema]
            changed = replace(truth, edema=grades[int(rng.integers(len(grades)))])
        report = write_report(changed, np.random.default_rng(rng.integers(2**32)))
        members.append(("severity", _text(report), report.labels))
    return members


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=400, help="reference studies")
    parser.add_argument("--embedder", default="lexical", help="embedding backend for RaTEScore")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    labeler, extractor = RuleLabeler(), LexiconEntityExtractor()
    embedder = build_embedder(args.embedder)
    rng = np.random.default_rng(args.seed)

    studies = [s.study for s in generate_studies(SynthConfig(n=args.n, seed=args.seed), render=False)]
    groups = []
    for study in studies:
        truth = truth_of(study)
        members = build_group(truth, rng, labeler)
        reference = write_report(truth, np.random.default_rng(rng.integers(2**32)))
        ref_present = _present(reference.labels)
        correctness = [float((_present(labels) == ref_present).mean()) for _, _, labels in members]
        groups.append((_text(reference), members, correctness))

    def rate_entities(annotation):
        vectors = embedder.embed([e.text for e in annotation.rate]) if annotation.rate else []
        return [(e.rate_type, v) for e, v in zip(annotation.rate, vectors, strict=True)]

    start = time.perf_counter()
    pairs = 0
    scores: dict[str, list[list[float]]] = {
        "chexbert_f1": [],
        "radgraph_partial": [],
        "ratescore": [],
        "composite": [],
    }
    for reference, members, _ in groups:
        ref_labels = labeler.label_one(reference)
        ref_entities = extractor.extract_one(reference)
        ref_graph, ref_rate = ref_entities.to_radgraph(), rate_entities(ref_entities)
        per_metric = {name: [] for name in scores}
        for _, text, _ in members:
            entities = extractor.extract_one(text)
            chexbert = pair_micro_f1(labeler.label_one(text), ref_labels)
            radgraph = radgraph_f1_pair(entities.to_radgraph(), ref_graph, level="partial")
            ratescore = ratescore_pair(rate_entities(entities), ref_rate, version="0.5")
            for name, value in (
                ("chexbert_f1", chexbert),
                ("radgraph_partial", radgraph),
                ("ratescore", ratescore),
            ):
                per_metric[name].append(value)
            per_metric["composite"].append(chexbert + radgraph + ratescore)
            pairs += 1
        for name in scores:
            scores[name].append(per_metric[name])
    pairs_per_s = pairs / (time.perf_counter() - start)

    figures: dict[str, dict[str, object]] = {}
    for name, group_scores in scores.items():
        taus: dict[str, list[float]] = {kind: [] for kind in KINDS}
        wins = eligible = 0
        for (_, members, correctness), values in zip(groups, group_scores, strict=True):
            kinds = [kind for kind, _, _ in members]
            for kind in KINDS:
                idx = [i for i, k in enumerate(kinds) if k in ("paraphrase", kind)]
                if len(idx) < 2:
                    continue
                tau = kendall_tau_b([values[i] for i in idx], [correctness[i] for i in idx])
                if tau is not None:
                    taus[kind].append(tau)
            wrong = [values[i] for i, c in enumerate(correctness) if c < 1.0]
            if wrong:
                eligible += 1
                wins += values[0] > max(wrong)
        group_taus = [
            tau
            for (_, _, correctness), values in zip(groups, group_scores, strict=True)
            if (tau := kendall_tau_b(values, correctness)) is not None
        ]
        mean_tau = {kind: round(float(np.mean(v)), 4) for kind, v in taus.items() if v}
        figures[name] = {
            "kendall_tau_by_kind": mean_tau,
            "mean_group_tau": round(float(np.mean(group_taus)), 4),
            "min_kendall_tau": min(mean_tau.values()),
            "paraphrase_wins": round(wins / eligible, 4) if eligible else None,
        }
        print(
            f"{name:<18} min tau {figures[name]['min_kendall_tau']:.3f}  paraphrase wins "
            f"{figures[name]['paraphrase_wins']}  by kind {mean_tau}"
        )
    composite = figures["composite"]
    print(
        json.dumps(
            {
                "min_kendall_tau": composite["min_kendall_tau"],
                "paraphrase_wins": composite["paraphrase_wins"],
                "pairs_per_s": round(pairs_per_s, 1),
                "embedder": args.embedder,
                "references": len(groups),
                "per_metric": figures,
            }
        )
    )


if __name__ == "__main__":
    main()
