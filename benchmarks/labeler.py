"""The `chexpert-rules` labeler against known truth: SynthCXR reports and IU X-Ray MeSH terms.

- SynthCXR: every report's CheXpert labels are known (the grammar states exactly the ground
  truth), so per-label precision / recall / F1 and Cohen's kappa are exact.
- IU X-Ray (../shared/data/iu_xray, read in place): the MeSH major terms give a partial ground
  truth for the mappable observations (``MESH_TO_LABEL``). Development uses reports with an odd
  IUXRId only; the even half is held out for acceptance and is scored only with ``--heldout``.
- Speed: IU reports labelled per second on one core (the process pins itself to one CPU).

Binarisation: a label counts as predicted positive only when the labeler says positive (1):
these are "positive-label" figures. Uncertain (-1) is counted apart (``*_uncertain_rate``), since
MeSH terms and the SynthCXR grammar never state uncertainty.

Last line: one JSON object with `reports_per_s` (IU reports, one core, a fresh labeler with its
sentence cache; `reports_per_s_no_cache` without it), `synth_macro_f1`, `synth_per_label`,
`iu_dev_positive_f1` (per mappable label), and, with --heldout, `iu_heldout_positive_f1`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from editgrpo.annotators.chexpert_rules import RuleLabeler
from editgrpo.data.adapters.iu_xray import parse_openi
from editgrpo.data.synth import SynthConfig, generate_studies
from editgrpo.text.observations import CHEXPERT_14

IU_ARCHIVE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "iu_xray" / "NLMCXR_reports.tgz"

# IU MeSH major term (its first component) -> the observations it asserts. Consolidation and
# pneumonia are one group, as are nodule and mass (Lung Lesion), following the list; a
# hydropneumothorax is both a pneumothorax and pleural fluid.
MESH_TO_LABEL: dict[str, str | tuple[str, ...]] = {
    "Cardiomegaly": "Cardiomegaly",
    "Pleural Effusion": "Pleural Effusion",
    "Pneumothorax": "Pneumothorax",
    "Hydropneumothorax": ("Pneumothorax", "Pleural Effusion"),
    "Pulmonary Atelectasis": "Atelectasis",
    "Consolidation": "Consolidation/Pneumonia",
    "Pneumonia": "Consolidation/Pneumonia",
    "Pulmonary Edema": "Edema",
    "Pulmonary Congestion": "Edema",
    "Opacity": "Lung Opacity",
    "Airspace Disease": "Lung Opacity",
    "Infiltrate": "Lung Opacity",
    "Fractures, Bone": "Fracture",
    "Nodule": "Lung Lesion",
    "Mass": "Lung Lesion",
    "normal": "No Finding",
}


def _mesh_labels(term: str) -> tuple[str, ...]:
    found = MESH_TO_LABEL.get(term.split("/")[0].strip(), ())
    return (found,) if isinstance(found, str) else found


IU_LABELS = sorted({label for term in MESH_TO_LABEL for label in _mesh_labels(term)})


def _f1(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return precision, recall, f1


def _kappa(pred: list[int], true: list[int]) -> float:
    """Cohen's kappa of two binary raters."""
    n = len(pred)
    observed = sum(p == t for p, t in zip(pred, true, strict=True)) / n
    p_pred, p_true = sum(pred) / n, sum(true) / n
    expected = p_pred * p_true + (1 - p_pred) * (1 - p_true)
    return (observed - expected) / (1 - expected) if expected < 1 else 1.0


def _scores(pred: list[int], true: list[int]) -> dict[str, float]:
    tp = sum(p and t for p, t in zip(pred, true, strict=True))
    fp = sum(p and not t for p, t in zip(pred, true, strict=True))
    fn = sum(t and not p for p, t in zip(pred, true, strict=True))
    precision, recall, f1 = _f1(tp, fp, fn)
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "kappa": round(_kappa(pred, true), 4),
        "support": sum(true),
    }


def _positive(value: int | None) -> int:
    return int(value == 1)


def synth_benchmark(labeler: RuleLabeler, n: int) -> tuple[float, dict[str, dict[str, float]]]:
    studies = [s.study for s in generate_studies(SynthConfig(n=n, seed=123, with_priors=True), render=False)]
    texts = ["\n".join(p for p in (s.findings, s.impression) if p) for s in studies]
    predicted = labeler.label(texts)
    per_label = {}
    for name in CHEXPERT_14:
        truth = [int((s.labels or {}).get(name) == 1) for s in studies]
        if not any(truth):
            continue  # never stated by the grammar (Pneumonia, Pleural Other)
        per_label[name] = _scores([_positive(p[name]) for p in predicted], truth)
    macro = sum(v["f1"] for v in per_label.values()) / len(per_label)
    return round(macro, 4), per_label


def iu_benchmark(labeler: RuleLabeler, reports, parity: int) -> dict[str, dict[str, float]]:
    chosen = [r for r in reports if r.iuxr_id is not None and r.iuxr_id % 2 == parity]
    texts = ["\n".join(p for p in (r.sections.findings, r.sections.impression) if p) for r in chosen]
    predicted = labeler.label(texts)
    out = {}
    for group in IU_LABELS:
        truth = [int(any(group in _mesh_labels(m) for m in r.mesh_major)) for r in chosen]
        if group == "Consolidation/Pneumonia":
            pred = [_positive(p["Consolidation"]) or _positive(p["Pneumonia"]) for p in predicted]
        else:
            pred = [_positive(p[group]) for p in predicted]
        out[group] = _scores(pred, truth)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--synth-n", type=int, default=3000)
    parser.add_argument("--heldout", action="store_true", help="also score the held-out (even IUXRId) half")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    labeler = RuleLabeler()
    figures: dict[str, object] = {}
    figures["synth_macro_f1"], figures["synth_per_label"] = synth_benchmark(labeler, args.synth_n)
    if IU_ARCHIVE.is_file():
        reports = parse_openi(IU_ARCHIVE)
        texts = ["\n".join(p for p in (r.sections.findings, r.sections.impression) if p) for r in reports]
        # Fresh labelers, so the sentence cache starts empty: with it (the default) and without.
        for key, cache_size in (("reports_per_s", 100_000), ("reports_per_s_no_cache", 0)):
            timed = RuleLabeler(cache_size=cache_size)
            start = time.perf_counter()
            timed.label(texts)
            figures[key] = round(len(texts) / (time.perf_counter() - start), 1)
        dev = iu_benchmark(labeler, reports, parity=1)
        for name, scores in dev.items():
            print(
                f"iu dev {name:<24} P {scores['precision']:.3f} R {scores['recall']:.3f} "
                f"F1 {scores['f1']:.3f} kappa {scores['kappa']:.3f} n={scores['support']}"
            )
        figures["iu_dev_positive_f1"] = {name: s["f1"] for name, s in dev.items()}
        if args.heldout:
            figures["iu_heldout_positive_f1"] = {
                name: s["f1"] for name, s in iu_benchmark(labeler, reports, parity=0).items()
            }
    else:
        print(f"IU X-Ray reports not found at {IU_ARCHIVE}: IU figures skipped")
    for name, scores in figures["synth_per_label"].items():
        print(f"synth {name:<28} P {scores['precision']:.3f} R {scores['recall']:.3f} F1 {scores['f1']:.3f}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
