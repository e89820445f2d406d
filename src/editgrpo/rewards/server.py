"""The batched reward server behind ``editgrpo serve-rewards``: one CompositeReward, many trainers.

Why a server: the reward's annotators (CheXbert, RaTE-NER, BioLORD, RadGraph) are models that
should be loaded once, on their own device, and fed large batches, while every trainer rank sends
one small request per step. The server builds the reward once at start-up and gathers concurrent
requests into one model call (micro-batching), then splits the results back. A request larger than
one model call (``max_batch_pairs`` pairs, ``max_batch_chars`` characters) is scored in slices
that take turns with the other clients' requests, so a 1-pair request is never stuck behind a
100-pair request of long reports (``RewardService._take_batch``).

Endpoints (JSON in and out; errors are ``{"error": "<message>"}`` with a 4xx/5xx status):

- ``POST /v1/score``: ``{"pairs": [{"hyp": str | null, "ref": str | null}, ...]}`` ->
  ``{"results": [{"total": float | null, "components": {name: float | null}, "label_outcomes":
  {observation: "tp" | "fp" | "fn" | "tn"} (only when a labeler ran)}, ...], "batch_pairs": int}``,
  results in the order of the pairs. ``null`` text = no text: scored
  ``None``, as ``CompositeReward.score`` scores a non-string (ARCHITECTURE.md rule 5: a reward is
  a number or ``None``, never a silent 0). ``batch_pairs`` is the size of the (largest) model
  call the request was merged into.
- ``POST /v1/analyze``: ``{"texts": [str, ...], "vectors": bool (default false)}`` ->
  ``{"analyses": [{"sentences": [{"text", "start", "end"}], "entities": [{"text", "start",
  "end", "type", "sentence", "vector"?}] | null}], "dim": int | null, "vector_encoding":
  "base64-float32-le" | null}``: what the edit engine needs, the RaTE entities of each sentence
  (``text.sentences`` splitting, the splitter the entity backends use) with their types and,
  when asked, their embedding vectors. A vector is base64 of
  ``dim`` little-endian float32 (exact, and 4x smaller than JSON numbers: the offline ``lexical``
  embedder has 2,107 dimensions); ``entities`` is ``null`` where the annotator failed on a text.
- ``GET /healthz``: ``{"status": "ok", "components": {name: weight}, "backends": {...}}`` (no
  token needed, so a load balancer or ``RewardClient.health`` can probe it).
- ``GET /metrics``: Prometheus text exposition (``text/plain; version=0.0.4``; HELP and TYPE
  lines, names ``editgrpo_reward_*``): request counts by route and status, request duration
  (summary: p50/p90/p99 over the last 10,000 requests per route, sum and count since start),
  model-call sizes (histogram), requests merged and sliced, queue depth, connections closed by a
  deadline, and the reward's counters (samples scored, unscorable, partial, failures per
  component).
- ``GET /metrics.json``: the same figures as one JSON object (``RewardClient.metrics``).

Limits (``ServerLimits``, each a ``serve-rewards`` option named in the message that enforces it):
body 4 MiB (413, ``--max-body-bytes``); 1,024 pairs or texts per request (422, ``--max-pairs``);
20,000 characters per text (422, ``--max-text-chars``); the work bound, 1,000,000 characters of
text per request (413, ``--max-request-chars``); malformed JSON (400); wrong types or missing /
unknown keys or an empty batch (422). Per connection: 10 s to send a request's headers
(``--header-timeout``) and 30 s for its body after them (``--body-timeout``), else 408 and the
connection is closed. The server keeps serving after each.

Security: ``serve`` binds 127.0.0.1 unless told otherwise, and refuses a non-loopback host without
a bearer token of at least 16 characters (printable ASCII, no spaces, for any bind); with a token,
every route but ``/healthz`` needs ``Authorization: Bearer <token>`` (401 when missing, 403 when
wrong).

Threads: the event loop parses, validates and answers; the reward runs in one worker thread (one,
because the annotators' caches and counters are not thread-safe), so ``/healthz`` answers while a
batch is being scored. Scoring is pure, so a client may retry a request whose answer it lost.

Speed (2-core development machine, offline backends, ``benchmarks/reward_throughput.py``): about
3,400 pairs/s through the server with 8 concurrent clients sending 32-pair requests, against
4,000 pairs/s in-process; a lone 32-pair request takes about 10 ms. While 100-pair requests of
2,000-character reports are being scored, a 1-pair request is answered in 190-240 ms at p99
(``small_p99_while_large_ms``; 3.7-4.9 s when a request was scored whole), measured with the
machine shared (in-process 1,100 pairs/s), where the server's throughput was the same before and
after the slicing.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import hmac
import ipaddress
import itertools
import json
import math
import os
import socket
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from editgrpo.errors import UserError
from editgrpo.rewards.composite import CompositeReward, RewardResult
from editgrpo.rewards.limits import MIN_TOKEN_CHARS, ServerLimits
from editgrpo.text.sentences import split_sentences

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
ROUTES = ("POST /v1/score", "POST /v1/analyze", "GET /healthz", "GET /metrics", "GET /metrics.json")
# /healthz stays open with a token set: it tells only that the server is up and what it scores.
OPEN_PATHS = frozenset({"/healthz"})
VECTOR_ENCODING = "base64-float32-le"
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Set in a request's ASGI scope by the connection when its body timed out (see _read_json).
TIMEOUT_SCOPE_KEY = "editgrpo.timeout"


# ---------------------------------------------------------------------------------------------
# Analysis for the edit engine
# ---------------------------------------------------------------------------------------------


def _per_text(function: Callable[[list[Any]], list[Any]], items: list[Any]) -> list[Any]:
    """``function`` on the batch; if the batch fails, item by item, so one bad text costs only its
    own result (None), as ``CompositeReward`` guards its annotators."""
    try:
        return list(function(items))
    except Exception:
        out = []
        for item in items:
            try:
                out.append(function([item])[0])
            except Exception:
                out.append(None)
        return out


def analyze_texts(
    texts: Sequence[str], extractor: Any, embedder: Any | None, vectors: bool
) -> dict[str, Any]:
    """The ``/v1/analyze`` answer for ``texts``: sentences with offsets, RaTE entities with types,
    the index of the sentence holding each, and (``vectors``) each entity's vector."""
    texts = list(texts)
    reports = _per_text(extractor.extract, texts)
    rate_lists: list[list[Any] | None] = [None if report is None else list(report.rate) for report in reports]
    encoded: list[str | None] = []
    if vectors:
        if embedder is None:
            raise RuntimeError("vectors were asked for but this server has no embedder")
        names = [e.text for entities in rate_lists if entities for e in entities]
        matrix = _per_text(lambda batch: list(embedder.embed(batch)), names) if names else []
        encoded = [None if v is None else _encode_vector(v) for v in matrix]
    cursor = 0
    analyses = []
    for text, entities in zip(texts, rate_lists, strict=True):
        sentences = split_sentences(text)
        starts = [s.start for s in sentences]
        out_entities = None
        if entities is not None:
            out_entities = []
            for entity in entities:
                k = bisect.bisect_right(starts, entity.start) - 1
                inside = k >= 0 and entity.start < sentences[k].end
                item = {
                    "text": entity.text,
                    "start": entity.start,
                    "end": entity.end,
                    "type": entity.rate_type,
                    "sentence": k if inside else None,
                }
                if vectors:
                    item["vector"] = encoded[cursor]
                    cursor += 1
                out_entities.append(item)
        analyses.append(
            {
                "sentences": [{"text": s.text, "start": s.start, "end": s.end} for s in sentences],
                "entities": out_entities,
            }
        )
    return {
        "analyses": analyses,
        "dim": getattr(embedder, "dim", None) if vectors else None,
        "vector_encoding": VECTOR_ENCODING if vectors else None,
    }


def _encode_vector(vector: Any) -> str:
    import numpy as np

    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


# ---------------------------------------------------------------------------------------------
# Micro-batching
# ---------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Job:
    """One request waiting for its results. A job is handed to model calls in slices
    ``[cursor, cursor + k)``; its future is resolved once every item has its result."""

    kind: str  # "score" | "analyze" | "analyze+vectors": only jobs of one kind are merged
    columns: tuple[list[Any], ...]  # score: (hyps, refs); analyze: (texts,)
    future: asyncio.Future
    size: int = 0
    chars: list[int] = field(default_factory=list)  # characters of each item (its work)
    cursor: int = 0  # items handed to a model call so far
    finished: int = 0  # items whose results are in
    results: list[Any] = field(default_factory=list)
    batch_pairs: int = 0  # the largest model call any slice of it was part of

    def __post_init__(self) -> None:
        self.size = len(self.columns[0])
        self.chars = [
            sum(len(column[i]) for column in self.columns if isinstance(column[i], str))
            for i in range(self.size)
        ]
        self.results = [None] * self.size

    def remaining(self) -> tuple[int, int]:
        """(items, characters) not yet handed to a model call."""
        return self.size - self.cursor, sum(self.chars[self.cursor :])

    def slice_end(self, pairs: int, chars: int, *, at_least_one: bool) -> int:
        """The end of the longest slice from ``cursor`` within ``pairs`` items and ``chars``
        characters (one item even past the bound when ``at_least_one``)."""
        end, used = self.cursor, 0
        while end < self.size and end - self.cursor < pairs and used + self.chars[end] <= chars:
            used += self.chars[end]
            end += 1
        if end == self.cursor and at_least_one and end < self.size:
            end += 1
        return end


@dataclass
class _Slice:
    job: _Job
    start: int
    end: int


class ServiceUnavailable(Exception):
    """The queue is full or the server is stopping: the request may be retried (503)."""


@dataclass
class _Metrics:
    started: float = field(default_factory=time.monotonic)
    requests: dict[str, Counter] = field(default_factory=dict)
    latencies: dict[str, deque] = field(default_factory=dict)  # the last 10,000, for quantiles
    latency_count: Counter = field(default_factory=Counter)  # route -> requests, since start
    latency_sum: dict[str, float] = field(default_factory=dict)  # route -> seconds, since start
    batch_sizes: Counter = field(default_factory=Counter)  # upper bucket bound -> model calls
    calls: int = 0
    batched_pairs: int = 0
    max_pairs: int = 0
    merged_requests: int = 0  # (request, model call) pairs: a request in slices counts once per call
    sliced_requests: int = 0  # requests scored in more than one model call
    timeouts: Counter = field(default_factory=Counter)  # "header" | "body" -> connections closed

    BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)

    def record_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.setdefault(route, Counter())[str(status)] += 1
        self.latencies.setdefault(route, deque(maxlen=10_000)).append(seconds)
        self.latency_count[route] += 1
        self.latency_sum[route] = self.latency_sum.get(route, 0.0) + seconds

    def record_batch(self, pairs: int, requests: int) -> None:
        self.calls += 1
        self.batched_pairs += pairs
        self.merged_requests += requests
        self.max_pairs = max(self.max_pairs, pairs)
        bucket = next((b for b in self.BUCKETS if pairs <= b), None)
        self.batch_sizes["+Inf" if bucket is None else str(bucket)] += 1


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of a sorted list."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class RewardService:
    """The reward, its batching worker and its counters; ``create_app`` puts HTTP around it.

    ``extractor`` / ``embedder`` serve ``/v1/analyze``; they default to the reward's own (built
    once, shared with scoring). All calls into them and the reward run on one worker thread."""

    def __init__(
        self,
        reward: CompositeReward,
        *,
        extractor: Any | None = None,
        embedder: Any | None = None,
        limits: ServerLimits | None = None,
        token: str | None = None,
    ) -> None:
        self.reward = reward
        self.extractor = extractor if extractor is not None else reward.extractor
        self.embedder = embedder if embedder is not None else reward.embedder
        self.limits = limits or ServerLimits()
        self.token = token or None
        self.metrics = _Metrics()
        self._pending: deque[_Job] = deque()
        self._pending_pairs = 0
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._stopping = False

    # lifecycle (the app's lifespan) ----------------------------------------------------------

    async def start(self) -> None:
        self._stopping = False
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="editgrpo-reward")
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="editgrpo-reward-batcher")

    async def stop(self) -> None:
        self._stopping = True
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        while self._pending:
            job = self._pending.popleft()
            if not job.future.done():
                job.future.set_exception(ServiceUnavailable("the reward server is shutting down"))
        self._pending_pairs = 0
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    # submitting --------------------------------------------------------------------------------

    async def submit(self, kind: str, *columns: list[Any]) -> tuple[list[Any], int]:
        """Queue a job and wait for all its results: (its results, pairs in the largest model
        call it was part of)."""
        if self._stopping or self._worker is None or self._worker.done():
            raise ServiceUnavailable("the reward server is not running")
        job = _Job(kind, columns, asyncio.get_running_loop().create_future())
        if self._pending_pairs + job.size > self.limits.max_queue_pairs:
            raise ServiceUnavailable(
                f"the reward server is busy ({self._pending_pairs} pairs queued, limit "
                f"{self.limits.max_queue_pairs}, serve-rewards --max-queue-pairs); retry later"
            )
        self._pending.append(job)
        self._pending_pairs += job.size
        self._wakeup.set()
        return await job.future

    def _drop_finished(self) -> None:
        """Forget jobs already answered (a slice failed, or the server gave up on them)."""
        if any(job.future.done() for job in self._pending):
            for job in self._pending:
                if job.future.done():
                    self._pending_pairs -= job.size - job.cursor
            self._pending = deque(job for job in self._pending if not job.future.done())

    async def _take_batch(self) -> list[_Slice]:
        """The next model call: slices of queued jobs of the oldest job's kind, within
        ``max_batch_pairs`` pairs and ``max_batch_chars`` characters.

        Fairness with merging, in three passes over the queue (oldest first):

        1. the oldest job, when it does not fit whole, gets a slice of half the budget and goes
           to the back of the queue: a large job always makes progress and then takes its turn
           behind the others;
        2. every job that fits whole in what is left is taken whole, in arrival order: small
           requests are merged (the throughput) and none waits behind a large one;
        3. if pass 2 took no new request whole, what is still left goes to the first job not yet
           finished in this call (a slice; to the back of the queue if it is still not finished).
           A call that answers whole requests is not filled up with slices of large ones: its
           duration is those requests' latency.

        So a request that fits in one call waits for at most the call in progress plus a call of
        at most half the budget of others' work, whatever the size of their requests (issue 18:
        a 1-pair request behind a 100-pair request of long reports waited 10.5 s). Jobs of
        another kind keep their place."""
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            if self.limits.batch_wait_s > 0 and self._pending_pairs < self.limits.max_batch_pairs:
                await asyncio.sleep(self.limits.batch_wait_s)
            self._drop_finished()
            if self._pending:
                break
        kind = self._pending[0].kind
        jobs = [job for job in self._pending if job.kind == kind]
        pairs_left, chars_left = self.limits.max_batch_pairs, self.limits.max_batch_chars
        slices: dict[int, _Slice] = {}  # id(job) -> its slice in this call

        def take(job: _Job, end: int) -> None:
            nonlocal pairs_left, chars_left
            if end <= job.cursor:
                return
            pairs_left -= end - job.cursor
            chars_left -= sum(job.chars[job.cursor : end])
            if id(job) in slices:
                slices[id(job)].end = end
            else:
                slices[id(job)] = _Slice(job, job.cursor, end)
            job.cursor = end

        def fits(job: _Job) -> bool:
            items, chars = job.remaining()
            return items <= pairs_left and chars <= chars_left

        head = jobs[0]
        if not fits(head):
            take(head, head.slice_end(pairs_left // 2 or 1, chars_left // 2, at_least_one=True))
        answered_whole = False  # a request that had waited with nothing scored is in this call
        for job in jobs:
            if job.cursor < job.size and fits(job):
                answered_whole = answered_whole or job.cursor == 0
                take(job, job.size)
        if not answered_whole and pairs_left > 0 and chars_left > 0:
            for job in jobs:
                if job.cursor < job.size:
                    take(job, job.slice_end(pairs_left, chars_left, at_least_one=not slices))
                    break
        taken = list(slices.values())
        sliced = [s.job for s in taken if s.job.cursor < s.job.size]  # not finished: to the back
        moved = {id(job) for job in sliced}
        self._pending = deque(
            [job for job in self._pending if job.cursor < job.size and id(job) not in moved] + sliced
        )
        self._pending_pairs -= sum(s.end - s.start for s in taken)
        return taken

    async def _run(self) -> None:
        while True:
            batch = await self._take_batch()
            live = [s for s in batch if not s.job.future.done()]  # a slice of this job may have failed
            if live:
                await self._process(live)

    def _deliver(self, piece: _Slice, results: list[Any], call_pairs: int) -> None:
        job = piece.job
        if job.future.done():
            return
        job.results[piece.start : piece.end] = results
        job.finished += piece.end - piece.start
        job.batch_pairs = max(job.batch_pairs, call_pairs)
        if job.finished == job.size:
            if job.batch_pairs < job.size:
                self.metrics.sliced_requests += 1
            job.future.set_result((job.results, job.batch_pairs))

    async def _process(self, live: list[_Slice]) -> None:
        """One model call for the merged slices, its results split back in order. If the merged
        call raises, each slice is run alone, so a request whose text breaks the model costs only
        its own answer (a 500), not its neighbours'."""
        loop = asyncio.get_running_loop()
        kind = live[0].job.kind
        columns = [
            list(itertools.chain.from_iterable(s.job.columns[c][s.start : s.end] for s in live))
            for c in range(len(live[0].job.columns))
        ]
        try:
            results = await loop.run_in_executor(self._executor, self._call, kind, columns)
        except asyncio.CancelledError:
            for piece in live:
                if not piece.job.future.done():
                    piece.job.future.set_exception(ServiceUnavailable("the reward server is shutting down"))
            raise
        except Exception:
            for piece in live:
                if piece.job.future.done():
                    continue
                alone_columns = [column[piece.start : piece.end] for column in piece.job.columns]
                try:
                    alone = await loop.run_in_executor(self._executor, self._call, kind, alone_columns)
                except asyncio.CancelledError:
                    if not piece.job.future.done():
                        piece.job.future.set_exception(
                            ServiceUnavailable("the reward server is shutting down")
                        )
                    raise
                except Exception as err:
                    if not piece.job.future.done():
                        piece.job.future.set_exception(err)
                else:
                    self.metrics.record_batch(piece.end - piece.start, 1)
                    self._deliver(piece, alone, piece.end - piece.start)
            return
        size = len(columns[0])
        self.metrics.record_batch(size, len(live))
        cursor = 0
        for piece in live:
            share = results[cursor : cursor + piece.end - piece.start]
            cursor += piece.end - piece.start
            self._deliver(piece, share, size)

    def _call(self, kind: str, columns: list[list[Any]]) -> list[Any]:
        """Runs on the worker thread: one model call for a merged batch."""
        if kind == "score":
            out = self.reward.score(columns[0], columns[1])
        else:
            vectors = kind == "analyze+vectors"
            out = analyze_texts(columns[0], self.extractor, self.embedder, vectors=vectors)["analyses"]
        if len(out) != len(columns[0]):  # splitting back would hand requests their neighbours' results
            raise RuntimeError(f"{kind} returned {len(out)} results for {len(columns[0])} inputs")
        return out

    # reporting ----------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "components": dict(self.reward.components),
            "backends": dict(self.reward.names),
            "ratescore_version": self.reward.ratescore_version,
            "analyze": {
                "entities": getattr(self.extractor, "name", type(self.extractor).__name__)
                if self.extractor is not None
                else None,
                "embedder": getattr(self.embedder, "name", None) if self.embedder is not None else None,
                "dim": getattr(self.embedder, "dim", None) if self.embedder is not None else None,
            },
            "auth": "bearer" if self.token else "none",
        }

    def metrics_report(self) -> dict[str, Any]:
        m = self.metrics
        latency = {}
        for route, values in m.latencies.items():
            ordered = sorted(values)
            latency[route] = {
                "count": len(ordered),
                **{f"p{q}_ms": round(1000 * _percentile(ordered, q / 100), 3) for q in (50, 90, 99)},
            }
        stats = self.reward.stats
        return {
            "uptime_s": round(time.monotonic() - m.started, 3),
            "requests": {route: dict(counts) for route, counts in m.requests.items()},
            "latency": latency,
            "batches": {
                "model_calls": m.calls,
                "pairs": m.batched_pairs,
                "requests": m.merged_requests,
                "mean_pairs": round(m.batched_pairs / m.calls, 3) if m.calls else 0.0,
                "max_pairs": m.max_pairs,
                "sliced_requests": m.sliced_requests,
                "histogram": {
                    ("le_" + bucket): m.batch_sizes[bucket]
                    for bucket in [*map(str, _Metrics.BUCKETS), "+Inf"]
                    if m.batch_sizes[bucket]
                },
            },
            "queue": {"jobs": len(self._pending), "pairs": self._pending_pairs},
            "connection_timeouts": {phase: m.timeouts[phase] for phase in ("header", "body")},
            "reward": {
                "samples": stats.samples,
                "unscorable": stats.unscorable,
                "partial": stats.partial,
                "failures": dict(stats.failures),
            },
        }

    def metrics_prometheus(self) -> str:
        """``/metrics``: the figures of ``metrics_report`` in the Prometheus text exposition
        format (version 0.0.4: a HELP and a TYPE line per metric family, then its samples), so a
        Prometheus server or any scraper reads them as they are. Counters count since start-up;
        the latency quantiles are over the last 10,000 requests of each route."""
        m = self.metrics
        out = _Exposition("editgrpo_reward_")
        out.family("uptime_seconds", "gauge", "Seconds since the reward server started.")
        out.sample("uptime_seconds", {}, time.monotonic() - m.started)
        out.family("requests_total", "counter", "HTTP requests answered, by route and status code.")
        for route, counts in sorted(m.requests.items()):
            for status, count in sorted(counts.items()):
                out.sample("requests_total", {"route": route, "status": status}, count)
        out.family(
            "request_duration_seconds",
            "summary",
            "Time from a request's headers to its answer; quantiles over the last 10,000 per route.",
        )
        for route, values in sorted(m.latencies.items()):
            ordered = sorted(values)
            for q in (0.5, 0.9, 0.99):
                out.sample(
                    "request_duration_seconds", {"route": route, "quantile": str(q)}, _percentile(ordered, q)
                )
            out.sample("request_duration_seconds_sum", {"route": route}, m.latency_sum.get(route, 0.0))
            out.sample("request_duration_seconds_count", {"route": route}, m.latency_count[route])
        out.family("model_call_pairs", "histogram", "Pairs (or texts) per model call.")
        cumulative = 0
        for bucket in [*map(str, _Metrics.BUCKETS), "+Inf"]:
            cumulative += m.batch_sizes[bucket]
            out.sample("model_call_pairs_bucket", {"le": bucket}, cumulative)
        out.sample("model_call_pairs_sum", {}, m.batched_pairs)
        out.sample("model_call_pairs_count", {}, m.calls)
        out.family(
            "model_call_requests_total",
            "counter",
            "Requests merged into model calls, counted once per call they took part in.",
        )
        out.sample("model_call_requests_total", {}, m.merged_requests)
        out.family("sliced_requests_total", "counter", "Requests scored in more than one model call.")
        out.sample("sliced_requests_total", {}, m.sliced_requests)
        out.family("queue_jobs", "gauge", "Requests waiting for (part of) a model call.")
        out.sample("queue_jobs", {}, len(self._pending))
        out.family("queue_pairs", "gauge", "Pairs (or texts) waiting for a model call.")
        out.sample("queue_pairs", {}, self._pending_pairs)
        out.family(
            "connection_timeouts_total",
            "counter",
            "Connections closed because a request's headers or body did not arrive in time.",
        )
        for phase in ("header", "body"):
            out.sample("connection_timeouts_total", {"phase": phase}, m.timeouts[phase])
        stats = self.reward.stats
        out.family("samples_total", "counter", "Pairs scored by the reward.")
        out.sample("samples_total", {}, stats.samples)
        out.family("unscorable_total", "counter", "Pairs whose total reward could not be computed (None).")
        out.sample("unscorable_total", {}, stats.unscorable)
        out.family("partial_total", "counter", "Pairs scored with at least one component None.")
        out.sample("partial_total", {}, stats.partial)
        out.family("component_failures_total", "counter", "Pairs a reward component could not score.")
        for name, count in sorted(stats.failures.items()):
            out.sample("component_failures_total", {"component": name}, count)
        return out.text()


class _Exposition:
    """Builds Prometheus text exposition (https://prometheus.io/docs/instrumenting/exposition_formats/)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {self.prefix}{name} {help_text}")
        self.lines.append(f"# TYPE {self.prefix}{name} {kind}")

    def sample(self, name: str, labels: Mapping[str, str], value: float) -> None:
        def escape(text: str) -> str:
            return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

        tags = ",".join(f'{key}="{escape(str(v))}"' for key, v in labels.items())
        number = repr(float(value)) if isinstance(value, float) else str(int(value))
        self.lines.append(
            f"{self.prefix}{name}{{{tags}}} {number}" if tags else f"{self.prefix}{name} {number}"
        )

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------


def _json_response(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    # allow_nan=False: a NaN would be invalid JSON for the client; it fails here, loudly, as a 500.
    body = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return _json_response({"error": message}, status, headers)


class _Gate:
    """Pure ASGI middleware: counts every request (route, status, latency) and checks the bearer
    token before anything reads the body."""

    def __init__(self, app: Any, service: RewardService) -> None:
        self.app = app
        self.service = service
        self._expected = f"Bearer {service.token}".encode() if service.token else None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        route = f"{scope['method']} {scope['path']}"
        route = route if route in ROUTES else "other"
        status = 500

        async def send_counting(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            denied = self._check_token(scope)
            if denied is not None:
                await denied(scope, receive, send_counting)
            else:
                await self.app(scope, receive, send_counting)
        finally:
            self.service.metrics.record_request(route, status, time.perf_counter() - started)

    def _check_token(self, scope: dict) -> Response | None:
        if self._expected is None or scope["path"] in OPEN_PATHS:
            return None
        given = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        if given is None:
            return _error(
                401,
                "this reward server needs a bearer token: send 'Authorization: Bearer <token>'",
                {"WWW-Authenticate": "Bearer"},
            )
        if not hmac.compare_digest(given, self._expected):
            return _error(403, "the bearer token is wrong")
        return None


async def _read_json(request: Request, limit: int) -> Any:
    """The body as JSON, at most ``limit`` bytes (413 beyond). An over-long body is still read to
    its end (up to 16x the limit) before the 413 goes out: a client still sending when the server
    answers and closes would see a broken pipe instead of the message. A body that does not
    arrive within the body timeout is answered 408 by the connection (``_deadline_protocol``)."""
    declared = request.headers.get("content-length")
    if declared is not None and not declared.strip().isdigit():
        raise HTTPException(400, f"Content-Length {declared!r} is not a number")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size <= limit:
                chunks.append(chunk)
            elif size > 16 * limit:
                break
    except ClientDisconnect:
        # Nobody reads this answer (the connection is gone); it names the cause for /metrics.
        if request.scope.get(TIMEOUT_SCOPE_KEY) == "body":
            raise HTTPException(408, "the request body did not arrive in time") from None
        raise HTTPException(400, "the client closed the connection before sending the whole body") from None
    if size > limit:
        raise HTTPException(
            413,
            f"request body is over {limit} bytes ({size:,}+ received); send fewer pairs per request, or "
            "raise the server's limit (serve-rewards --max-body-bytes)",
        )
    body = b"".join(chunks)
    try:
        return json.loads(body)
    except UnicodeDecodeError as err:
        raise HTTPException(400, f"malformed JSON: the body is not UTF-8 ({err.reason})") from None
    except json.JSONDecodeError as err:
        raise HTTPException(
            400, f"malformed JSON: {err.msg} at line {err.lineno} column {err.colno}"
        ) from None
    except RecursionError:
        raise HTTPException(400, "malformed JSON: nested too deeply") from None


def _object_with(payload: Any, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    keys = ", ".join(repr(k) for k in (*required, *optional))
    if not isinstance(payload, dict):
        raise HTTPException(422, f"the body must be a JSON object with keys {keys}, not {_kind(payload)}")
    missing = [k for k in required if k not in payload]
    if missing:
        raise HTTPException(422, f"missing key {missing[0]!r}; the body's keys are {keys}")
    unknown = sorted(set(payload) - set(required) - set(optional))
    if unknown:
        raise HTTPException(422, f"unknown key {unknown[0]!r}; the body's keys are {keys}")
    return payload


def _kind(value: Any) -> str:
    """A JSON value's type in JSON's words, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _batch(payload: dict, key: str, limits: ServerLimits) -> list[Any]:
    items = payload[key]
    if not isinstance(items, list):
        raise HTTPException(422, f"{key!r} must be an array, not {_kind(items)}")
    if not items:
        raise HTTPException(422, f"{key!r} is empty: send at least one item")
    if len(items) > limits.max_items:
        raise HTTPException(
            422,
            f"{key!r} has {len(items)} items; the limit is {limits.max_items} per request (serve-rewards "
            "--max-pairs): split it",
        )
    return items


def _text(value: Any, where: str, limits: ServerLimits, *, nullable: bool) -> str | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        allowed = "a string or null" if nullable else "a string"
        raise HTTPException(422, f"{where} must be {allowed}, not {_kind(value)}")
    if len(value) > limits.max_text_chars:
        raise HTTPException(
            422,
            f"{where} has {len(value):,} characters; the limit is {limits.max_text_chars:,} per text "
            "(serve-rewards --max-text-chars)",
        )
    return value


def _check_work(texts: Sequence[str | None], limits: ServerLimits) -> None:
    """The work bound: all the request's characters together (413 beyond ``max_request_chars``),
    since scoring time grows with the text, not just with the number of pairs."""
    total = sum(len(t) for t in texts if t is not None)
    if total > limits.max_request_chars:
        raise HTTPException(
            413,
            f"the request holds {total:,} characters of text; the limit is {limits.max_request_chars:,} per "
            "request (serve-rewards --max-request-chars): send fewer or shorter texts per request "
            "(RewardClient splits its calls at max_chars_per_request)",
        )


def parse_score_request(payload: Any, limits: ServerLimits) -> tuple[list[str | None], list[str | None]]:
    """``{"pairs": [{"hyp", "ref"}, ...]}`` -> (hyps, refs), or an HTTPException naming the fault."""
    pairs = _batch(_object_with(payload, ("pairs",)), "pairs", limits)
    hyps, refs = [], []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, dict):
            raise HTTPException(
                422, f"pairs[{i}] must be an object {{'hyp': ..., 'ref': ...}}, not {_kind(pair)}"
            )
        for key in ("hyp", "ref"):
            if key not in pair:
                raise HTTPException(422, f"pairs[{i}] is missing {key!r}")
        extra = sorted(set(pair) - {"hyp", "ref"})
        if extra:
            raise HTTPException(422, f"pairs[{i}] has unknown key {extra[0]!r}; a pair has 'hyp' and 'ref'")
        hyps.append(_text(pair["hyp"], f"pairs[{i}].hyp", limits, nullable=True))
        refs.append(_text(pair["ref"], f"pairs[{i}].ref", limits, nullable=True))
    _check_work([*hyps, *refs], limits)
    return hyps, refs


def parse_analyze_request(payload: Any, limits: ServerLimits) -> tuple[list[str], bool]:
    """``{"texts": [...], "vectors": bool}`` -> (texts, vectors), or an HTTPException."""
    body = _object_with(payload, ("texts",), ("vectors",))
    texts = [
        _text(t, f"texts[{i}]", limits, nullable=False) for i, t in enumerate(_batch(body, "texts", limits))
    ]
    vectors = body.get("vectors", False)
    if not isinstance(vectors, bool):
        raise HTTPException(422, f"'vectors' must be true or false, not {_kind(vectors)}")
    _check_work(texts, limits)
    return texts, vectors


def _result_json(result: RewardResult) -> dict[str, Any]:
    def number(value: Any) -> float | None:
        return None if value is None else float(value)

    out: dict[str, Any] = {
        "total": number(result.total),
        "components": {name: number(value) for name, value in result.components.items()},
    }
    if result.label_outcomes is not None:
        out["label_outcomes"] = dict(result.label_outcomes)
    return out


def create_app(service: RewardService, *, on_started: Callable[[], None] | None = None) -> Starlette:
    """The ASGI app around ``service`` (started and stopped by the app's lifespan);
    ``on_started`` runs once the batching worker is up."""

    async def run(kind: str, *columns: list[Any]) -> tuple[list[Any], int]:
        try:
            return await service.submit(kind, *columns)
        except ServiceUnavailable as err:
            raise HTTPException(503, str(err), headers={"Retry-After": "1"}) from None
        except HTTPException:
            raise
        except Exception as err:
            raise HTTPException(500, f"the reward failed: {type(err).__name__}: {err}") from None

    async def score(request: Request) -> Response:
        hyps, refs = parse_score_request(
            await _read_json(request, service.limits.max_body_bytes), service.limits
        )
        results, batch_pairs = await run("score", hyps, refs)
        return _json_response({"results": [_result_json(r) for r in results], "batch_pairs": batch_pairs})

    async def analyze(request: Request) -> Response:
        texts, vectors = parse_analyze_request(
            await _read_json(request, service.limits.max_body_bytes), service.limits
        )
        if service.extractor is None:
            raise HTTPException(501, "this reward server has no entity extractor, so it cannot analyse")
        if vectors and service.embedder is None:
            raise HTTPException(501, 'this reward server has no embedder; ask with "vectors": false')
        analyses, _ = await run("analyze+vectors" if vectors else "analyze", texts)
        return _json_response(
            {
                "analyses": analyses,
                "dim": service.embedder.dim if vectors else None,
                "vector_encoding": VECTOR_ENCODING if vectors else None,
            }
        )

    async def healthz(request: Request) -> Response:
        return _json_response(service.health())

    async def metrics(request: Request) -> Response:
        return Response(service.metrics_prometheus(), media_type=PROMETHEUS_TYPE)

    async def metrics_json(request: Request) -> Response:
        return _json_response(service.metrics_report())

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, str(exc.detail), exc.headers)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await service.start()
        if on_started is not None:
            on_started()
        try:
            yield
        finally:
            await service.stop()

    return Starlette(
        routes=[
            Route("/v1/score", score, methods=["POST"]),
            Route("/v1/analyze", analyze, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/metrics.json", metrics_json, methods=["GET"]),
        ],
        middleware=[Middleware(_Gate, service=service)],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )


# ---------------------------------------------------------------------------------------------
# Serving
# ---------------------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; any other name counts as exposed (it could
    resolve anywhere), so it needs a token."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


TOKEN_ADVICE = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def check_exposure(host: str, token: str | None, token_env: str) -> None:
    """Refuse (UserError, exit 2) to serve a non-loopback address without a bearer token of at
    least ``MIN_TOKEN_CHARS`` characters: the server runs models on whatever text it is sent, and
    anyone who reaches it could use them; a short token is guessed. Any token must be printable
    ASCII without spaces, or no client could send it in an HTTP header. The token is never
    printed."""
    where = f"the environment variable {token_env} (reward.server_token_env) or --token"
    if token and not all(33 <= ord(c) <= 126 for c in token):
        raise UserError(
            f"the bearer token from {where} holds a space, a control or a non-ASCII character, which "
            f"cannot travel in an HTTP header; use letters, digits and punctuation, e.g. {TOKEN_ADVICE}"
        )
    if is_loopback(host):
        return
    if not token:
        raise UserError(
            f"refusing to bind {host!r} without a token: a non-loopback address exposes the reward "
            f"server to the network. Set a bearer token in the environment variable {token_env} "
            "(reward.server_token_env) or pass --token, or bind 127.0.0.1"
        )
    if len(token) < MIN_TOKEN_CHARS:
        raise UserError(
            f"refusing to bind {host!r} with a {len(token)}-character token: a non-loopback address needs "
            f"a token of at least {MIN_TOKEN_CHARS} characters, or it can be guessed. Set a longer one in "
            f"{where}, e.g. export {token_env}=$({TOKEN_ADVICE}), or bind 127.0.0.1"
        )


def _deadline_protocol(limits: ServerLimits, on_timeout: Callable[[str], None]) -> type:
    """uvicorn's h11 HTTP protocol with per-connection deadlines (uvicorn itself has only the
    keep-alive timeout between requests): ``header_timeout_s`` while a request's headers are
    arriving (from the connection's opening, or from the first byte of a later request on a
    kept-alive connection), ``body_timeout_s`` from the end of the headers to the end of the body.
    When one passes, the connection answers 408 with a JSON message (if it has not answered yet)
    and closes; ``on_timeout`` gets "header" or "body". A request that is fully received has no
    deadline: its answer takes as long as scoring takes."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    def body_of(phase: str) -> bytes:
        limit, option = (
            (limits.header_timeout_s, "--header-timeout")
            if phase == "header"
            else (limits.body_timeout_s, "--body-timeout")
        )
        return json.dumps(
            {
                "error": f"the request's {'headers' if phase == 'header' else 'body'} did not arrive within "
                f"{limit:g} s (serve-rewards {option}); the connection is closed"
            }
        ).encode()

    class DeadlineH11Protocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._deadline: asyncio.TimerHandle | None = None
            self._phase: str | None = None
            self._answered = False  # a response has completed on this connection
            self._watch()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._watch()

        def on_response_complete(self) -> None:
            self._answered = True
            super().on_response_complete()
            self._watch()

        def connection_lost(self, exc: Exception | None) -> None:
            self._arm(None)
            super().connection_lost(exc)

        def _watch(self) -> None:
            """Arm the deadline of what the connection is waiting for now."""
            if self.transport.is_closing():
                self._arm(None)
                return
            state = self.conn.their_state
            if state is h11.IDLE:
                # A kept-alive connection with nothing sent yet is uvicorn's keep-alive timeout's.
                waiting = not self._answered or bool(self.conn.trailing_data[0])
                self._arm("header" if waiting else None)
            elif state is h11.SEND_BODY:
                self._arm("body")
            else:
                self._arm(None)

        def _arm(self, phase: str | None) -> None:
            if phase == self._phase:
                return
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            self._phase = phase
            if phase is not None:
                seconds = limits.header_timeout_s if phase == "header" else limits.body_timeout_s
                self._deadline = self.loop.call_later(seconds, self._expire, phase)

        def _expire(self, phase: str) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            on_timeout(phase)
            body = body_of(phase)
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ]
            cycle = self.cycle if phase == "body" else None
            try:
                if phase == "header":
                    # No request yet, so h11 cannot frame an answer: write the bytes ourselves.
                    head = b"HTTP/1.1 408 Request Timeout\r\n" + b"".join(
                        k + b": " + v + b"\r\n" for k, v in headers
                    )
                    self.transport.write(head + b"\r\n" + body)
                elif cycle is not None and not cycle.response_started:
                    # The app waits in receive(): answer for it, then tell it the client is gone
                    # (its own answer is then dropped by uvicorn, without an error in the log).
                    for event in (
                        h11.Response(status_code=408, headers=headers, reason=b"Request Timeout"),
                        h11.Data(data=body),
                        h11.EndOfMessage(),
                    ):
                        self.transport.write(self.conn.send(event))
                    cycle.scope[TIMEOUT_SCOPE_KEY] = "body"
            except h11.LocalProtocolError:
                pass  # an answer had begun after all: just close
            if cycle is not None:
                cycle.disconnected = True
                cycle.message_event.set()
            self.transport.close()

    return DeadlineH11Protocol


def uvicorn_config(
    service: RewardService, *, on_started: Callable[[], None] | None = None, **options: Any
) -> Any:
    """The ``uvicorn.Config`` serving ``create_app(service)`` with the connection deadlines of
    ``service.limits`` (``serve`` and the tests' servers use it, so both run the same stack);
    ``options`` go to ``uvicorn.Config``."""
    import uvicorn

    def count(phase: str) -> None:
        service.metrics.timeouts[phase] += 1

    return uvicorn.Config(
        create_app(service, on_started=on_started),
        http=_deadline_protocol(service.limits, count),
        lifespan="on",
        **{"access_log": False, **options},
    )


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket (SO_REUSEADDR, so a restarted server gets its port back at once);
    ``port`` 0 picks a free one. UserError when the address cannot be bound."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[
            0
        ]
        sock = socket.socket(family, kind, proto)
    except OSError as err:
        raise UserError(f"cannot use host {host!r}: {err}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as err:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(
    config: Any,
    *,
    host: str = DEFAULT_HOST,
    port: int | None = None,
    token: str | None = None,
    limits: ServerLimits | None = None,
    log_level: str = "warning",
) -> int:
    """Run the reward server until interrupted (``editgrpo serve-rewards``).

    ``config`` is a ``config.RewardConfig``. The token is ``token`` or, when not given, the
    environment variable named by ``config.server_token_env``. ``port`` None: the port of
    ``config.server_url`` when it has one (so one recipe configures both ends), else 8765; 0
    picks a free port. The listening URL is printed on stdout once the reward is built and the
    socket bound, so a script can start the server and wait for that line."""
    import uvicorn

    token = token or os.environ.get(config.server_token_env) or None
    check_exposure(host, token, config.server_token_env)
    if port is None:
        port = _port_of(config.server_url) or DEFAULT_PORT
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port} is not a TCP port (0-65535)")
    reward = CompositeReward.from_config(config)
    extractor, embedder = reward.extractor, reward.embedder
    if extractor is None:  # the reward needs no entities, but /v1/analyze does
        from editgrpo.annotators.entities import build_entity_extractor

        extractor = build_entity_extractor(
            config.entities, **({"model": config.entity_model} if config.entity_model else {})
        )
    if embedder is None:
        from editgrpo.annotators.embeddings import build_embedder

        embedder = build_embedder(
            config.embedder, **({"model": config.embedder_model} if config.embedder_model else {})
        )
    service = RewardService(reward, extractor=extractor, embedder=embedder, limits=limits, token=token)
    sock = bind_socket(host, port)
    weights = ", ".join(f"{name}={weight:g}" for name, weight in reward.components.items())
    backends = " ".join(f"{role}={name}" for role, name in reward.names.items())
    ready = (
        f"serving rewards on {_url(sock)} ({weights}; {backends}; token {'required' if token else 'not set'})"
    )
    try:
        server = uvicorn.Server(
            uvicorn_config(
                service,
                on_started=lambda: print(ready, flush=True),
                log_level=log_level,
                timeout_keep_alive=30,
            )
        )
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it handled once it has shut down
        pass
    finally:
        sock.close()
    print("reward server stopped", file=sys.stderr, flush=True)
    return 0


def _port_of(url: str | None) -> int | None:
    if not url:
        return None
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).port
    except ValueError:
        return None
