"""Reward throughput: pairs/s in-process and through `editgrpo serve-rewards`, and request latency.

The composite reward with the offline backends (chexpert-rules labels, lexicon entities, lexical
embedder), on (hyp, ref) pairs of SynthCXR findings: hypotheses from ``--studies`` reports,
references from the first 50 (a GRPO group shares its reference). Every request holds
``--pairs`` pairs (32: one training step's rollouts of 4 prompts at G = 8).

- in-process: one ``CompositeReward`` scoring the requests one after another;
- server: ``editgrpo serve-rewards`` in a subprocess on 127.0.0.1, ``--clients`` threads each
  sending ``--requests`` requests through ``RewardClient`` (one HTTP request per call), all at
  once, so the server merges them into shared model calls.

- fairness: ``--large-clients`` threads each send ``--large-requests`` requests of 100 pairs of
  long reports (SynthCXR findings joined to ``--long-chars`` characters, about 2,000: a long real
  report) while one more thread sends 1-pair requests of ordinary reports back to back; the
  1-pair requests' latency is what a trainer rank sees when another client's large request is
  being scored (``small_p99_while_large_ms``).

Both sides are warmed first on the whole pool (the annotators' sentence caches filled, as they are
a few steps into training), and the server's answers to the warm-up are checked equal to the
in-process ones. No process is pinned: the server and the clients share the machine's cores.

Last line: one JSON object with ``inproc_pairs_per_s``, ``server_pairs_per_s``, ``p50_ms`` and
``p99_ms`` (latency of a request under that concurrent load, as a trainer rank sees it),
``idle_p50_ms`` / ``idle_p99_ms`` (one request at a time), ``small_p50_while_large_ms`` /
``small_p99_while_large_ms`` (the fairness run above), ``large_request_s`` (median time of one of
its 100-pair requests), ``mean_batch_pairs`` (pairs per model
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


def long_reports(texts: list[str], chars: int, count: int, rng: np.random.Generator) -> list[str]:
    """``count`` reports of about ``chars`` characters: random SynthCXR findings joined."""
    out = []
    for _ in range(count):
        parts: list[str] = []
        while sum(len(p) + 1 for p in parts) < chars:
            parts.append(texts[int(rng.integers(len(texts)))])
        out.append(" ".join(parts))
    return out


def fairness(url: str, texts: list[str], args: argparse.Namespace, rng: np.random.Generator) -> dict:
    """Latency of 1-pair requests sent back to back while ``--large-clients`` clients send
    100-pair requests of long reports; returns the figures for the last line."""
    long = long_reports(texts, args.long_chars, 200, rng)
    large = [
        (
            [long[i] for i in rng.integers(len(long), size=100)],
            [long[i] for i in rng.integers(len(long), size=100)],
        )
        for _ in range(args.large_clients * args.large_requests)
    ]
    small_latencies: list[float] = []
    large_latencies: list[float] = []
    errors: list[str] = []
    running = threading.Event()
    remaining = [args.large_clients]
    lock = threading.Lock()

    def send_large(c: int) -> None:
        with RewardClient(url, timeout_s=300, retries=0) as own:
            for hyps, rs in large[c * args.large_requests : (c + 1) * args.large_requests]:
                began = time.perf_counter()
                try:
                    own.score(hyps, rs)
                except Exception as err:
                    errors.append(f"large: {err}")
                large_latencies.append(time.perf_counter() - began)
                running.set()  # at least one large request has been in the server
        with lock:
            remaining[0] -= 1

    def send_small() -> None:
        with RewardClient(url, timeout_s=300, retries=0) as own:
            k = 0
            while remaining[0] > 0:
                began = time.perf_counter()
                try:
                    own.score([texts[k % len(texts)]], [texts[(k * 7) % 50]])
                except Exception as err:
                    errors.append(f"small: {err}")
                elapsed = time.perf_counter() - began
                if remaining[0] > 0:  # only requests that overlapped large ones count
                    small_latencies.append(elapsed)
                k += 1

    threads = [threading.Thread(target=send_large, args=(c,)) for c in range(args.large_clients)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)  # the large requests are queued first: the small one arrives behind them
    small = threading.Thread(target=send_small)
    small.start()
    for thread in [*threads, small]:
        thread.join()
    if errors:
        raise SystemExit(f"{len(errors)} failed requests in the fairness run, e.g. {errors[0]}")
    print(
        f"fairness: {len(small_latencies)} 1-pair requests while {len(large)} requests of 100 pairs of "
        f"~{args.long_chars}-character reports were scored: p50 {percentile_ms(small_latencies, 50)} ms, "
        f"p99 {percentile_ms(small_latencies, 99)} ms; a large request took "
        f"{float(np.median(large_latencies)):.2f} s (median)"
    )
    return {
        "small_p50_while_large_ms": percentile_ms(small_latencies, 50),
        "small_p99_while_large_ms": percentile_ms(small_latencies, 99),
        "small_requests_while_large": len(small_latencies),
        "large_request_s": round(float(np.median(large_latencies)), 3),
    }


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
    parser.add_argument(
        "--large-clients", type=int, default=2, help="fairness run: clients of large requests"
    )
    parser.add_argument(
        "--large-requests", type=int, default=4, help="fairness run: large requests per client"
    )
    parser.add_argument(
        "--long-chars", type=int, default=2000, help="fairness run: characters of a long report"
    )
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
        fair = fairness(url, texts, args, rng)
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
        **fair,
        "mean_batch_pairs": round(mean_batch, 1),
        "clients": args.clients,
        "requests_per_client": args.requests,
        "pairs_per_request": args.pairs,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
