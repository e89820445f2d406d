"""How fast SynthCXR writes a benchmark (target: 10,000 studies in under 60 s on one core).

Writes N studies (frontal + lateral PNGs at the default 112 px, manifests, summary) to a temporary
folder with ``editgrpo.data.synth.write_synthcxr`` and prints, as its last line, one JSON object:
{"studies", "seconds", "studies_per_s", "images", "with_priors"}. "seconds" is the whole write,
rendering, PNG encoding and manifests included. Pin it to one core to measure the acceptance figure:

    taskset -c 0 .venv/bin/python benchmarks/synth_speed.py --n 10000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from editgrpo.data.synth import SynthConfig, write_synthcxr


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="studies to write (default 10000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--with-priors", action="store_true", help="also render prior studies")
    args = parser.parse_args(argv)
    config = SynthConfig(n=args.n, seed=args.seed, image_size=args.image_size, with_priors=args.with_priors)
    with tempfile.TemporaryDirectory(prefix="synthcxr-bench-") as out:
        start = time.perf_counter()
        summary = write_synthcxr(out, config)
        seconds = time.perf_counter() - start
    figures = {
        "studies": config.n,
        "seconds": round(seconds, 2),
        "studies_per_s": round(config.n / seconds, 1),
        "images": summary["images"],
        "with_priors": config.with_priors,
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
