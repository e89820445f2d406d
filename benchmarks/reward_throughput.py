"""Reward throughput: pairs/s in-process and through `editgrpo serve-rewards`, and request latency.

The composite reward with the offline backends (chexpert-rules labels, lexicon entities, lexical
embedder), on (hyp, ref) pairs of SynthCXR findings: hypotheses from ``--studies`` reports,
references from the first 50 (a GRPO group shares its reference). Every request holds
``--pairs`` pairs (32: one training step's rollouts of 4 prompts at G = 8).

- in-process: one ``CompositeReward`` scoring the requests one after another;
- server: ``editgrpo serve-rewards`` in a subprocess on 127.0.0.1, ``--clients`` threads each
  sending ``--requests`` requests through ``RewardClient`` (one HTTP request per call), all at
  once, so the server merges them into shared model calls.

Both sides are warmed first on the whole pool (the annotators' sentence caches filled, as they are
a few steps into training), and the server's answers to the warm-up are checked equal to the
in-process ones. No process is pinned: the server and the clients share the machine's cores.

Last line: one JSON object with ``inproc_pairs_per_s``, ``server_pairs_per_s``, ``p50_ms`` and
``p99_ms`` (latency of a request under that concurrent load, as a trainer rank sees it),
``idle_p50_ms`` / ``idle_p99_ms`` (one request at a time), ``mean_batch_pairs`` (pairs per model
call in the server), and the run's settings.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time

import numpy as np

from editgrpo.data.synth import SynthConfig, generate_studies
from editgrpo.rewards.client import RewardClient
from editgrpo.rewards.composite import CompositeReward


def percentile_ms(seconds: list[float], q: float) -> float:
    return round(1000 * float(np.percentile(seconds, q)), 2)


def start_server(max_batch_pairs: int) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "editgrpo.cli", "serve-rewards", "--port", "0"]
    command += ["--max-batch-pairs", str(max_batch_pairs)]
    env = {k: v for k, v in os.environ.items() if k != "EDITGRPO_REWARD_TOKEN"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, stdin=subprocess.DEVNULL)
    line = process.stdout.readline()
    match = re.search(r"serving rewards on (http://\S+)", line)
    if not match:
        process.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return process, match.group(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=400, help="SynthCXR reports in the text pool")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    parser.add_argument("--requests", type=int, default=100, help="requests per client")
    parser.add_argument("--pairs", type=int, default=32, help="pairs per request")
    parser.add_argument(
        "--idle-requests", type=int, default=200, help="one-at-a-time requests for idle latency"
    )
    parser.add_argument("--max-batch-pairs", type=int, default=512, help="the server's model-call cap")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    texts = [
        s.study.findings for s in generate_studies(SynthConfig(n=args.studies, seed=args.seed), render=False)
    ]
    texts = [t for t in texts if t]
    refs = texts[:50]
    rng = np.random.default_rng(args.seed)
    total = args.clients * args.requests
    requests = [
        (
            [texts[i] for i in rng.integers(len(texts), size=args.pairs)],
            [refs[i] for i in rng.integers(len(refs), size=args.pairs)],
        )
        for _ in range(total)
    ]
    check_hyps = [h for hyps, _ in requests[:64] for h in hyps]
    check_refs = [r for _, rs in requests[:64] for r in rs]

    # In-process.
    reward = CompositeReward()
    expected = reward.score(check_hyps, check_refs)
    reward.score(texts, texts)  # warm-up: every text's sentences cached
    started = time.perf_counter()
    for hyps, rs in requests:
        reward.score(hyps, rs)
    inproc = total * args.pairs / (time.perf_counter() - started)
    print(f"in-process: {inproc:,.0f} pairs/s ({total} requests of {args.pairs} pairs, one after another)")

    # Through the server.
    process, url = start_server(args.max_batch_pairs)
    try:
        with RewardClient(url, timeout_s=120, retries=0) as client:
            client.score(texts, texts)  # warm-up, as in-process
            if client.score(check_hyps, check_refs) != expected:
                raise SystemExit("the server's scores differ from the in-process scores")
            idle = []
            for hyps, rs in requests[: args.idle_requests]:
                began = time.perf_counter()
                client.score(hyps, rs)
                idle.append(time.perf_counter() - began)
            before = client.metrics()["batches"]

        latencies: list[float] = []
        errors: list[str] = []

        def work(c: int) -> None:
            with RewardClient(url, timeout_s=120, retries=0) as own:
                for hyps, rs in requests[c * args.requests : (c + 1) * args.requests]:
                    began = time.perf_counter()
                    try:
                        own.score(hyps, rs)
                    except Exception as err:
                        errors.append(str(err))
                    latencies.append(time.perf_counter() - began)

        threads = [threading.Thread(target=work, args=(c,)) for c in range(args.clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        served = total * args.pairs / (time.perf_counter() - started)
        with RewardClient(url) as client:
            after = client.metrics()["batches"]
    finally:
        process.terminate()
        process.wait(10)
    if errors:
        raise SystemExit(f"{len(errors)} failed requests, e.g. {errors[0]}")
    calls = after["model_calls"] - before["model_calls"]
    mean_batch = (after["pairs"] - before["pairs"]) / calls if calls else 0.0
    print(
        f"server: {served:,.0f} pairs/s ({args.clients} clients x {args.requests} requests x {args.pairs} pairs; "
        f"{calls} model calls of {mean_batch:.0f} pairs on average)"
    )
    figures = {
        "inproc_pairs_per_s": round(inproc, 1),
        "server_pairs_per_s": round(served, 1),
        "p50_ms": percentile_ms(latencies, 50),
        "p99_ms": percentile_ms(latencies, 99),
        "idle_p50_ms": percentile_ms(idle, 50),
        "idle_p99_ms": percentile_ms(idle, 99),
        "mean_batch_pairs": round(mean_batch, 1),
        "clients": args.clients,
        "requests_per_client": args.requests,
        "pairs_per_request": args.pairs,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
