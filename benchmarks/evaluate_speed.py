"""Evaluation speed: ``eval.evaluate.evaluate`` on 10,000 SynthCXR (prediction, reference) pairs.

References are the findings of ``generate_studies(render=False)``; predictions are paraphrases of
the same ground truth (``write_report`` with another random stream), so the scores are high but
not 1. Every offline metric is computed (CheXbert F1 with chexpert-rules, RadGraph with the
lexicon, RaTEScore with lexicon + lexical embedder, BLEU / ROUGE-L / CIDEr-D); no GREEN (needs a
judge model); METEOR only with ``--meteor`` (a Java process). The bootstrap uses the evaluation
default of 1,000 resamples per metric (``--bootstrap`` to change it; 200 vs 1,000 changed the time
by under 3% on 10,000 pairs). Generating the pairs is not timed.

Last line: one JSON object with ``pairs_per_s``, ``seconds`` (the ``evaluate`` call, writing its
three files included) and the settings.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from editgrpo.data.synth import SynthConfig, generate_studies, truth_of, write_report
from editgrpo.eval.evaluate import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples per metric")
    parser.add_argument("--meteor", action="store_true", help="also METEOR (needs Java and pycocoevalcap)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "predictions.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for generated in generate_studies(SynthConfig(n=args.pairs, seed=args.seed), render=False):
                study = generated.study
                paraphrase = write_report(truth_of(study), np.random.default_rng(rng.integers(2**32)))
                row = {
                    "study_id": study.study_id,
                    "prediction": paraphrase.findings,
                    "reference": study.findings,
                }
                handle.write(json.dumps(row) + "\n")
        start = time.perf_counter()
        summary = evaluate(path, Path(tmp) / "out", bootstrap=args.bootstrap, with_meteor=args.meteor)
        seconds = time.perf_counter() - start
    values = {k: round(v["value"], 4) for k, v in summary["columns"].items() if v["value"] is not None}
    print(json.dumps(values))
    print(
        json.dumps(
            {
                "pairs": summary["n"],
                "seconds": round(seconds, 2),
                "pairs_per_s": round(summary["n"] / seconds, 1),
                "bootstrap": args.bootstrap,
                "meteor": args.meteor,
            }
        )
    )


if __name__ == "__main__":
    main()
