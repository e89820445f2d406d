"""The batched reward server behind ``editgrpo serve-rewards``: one CompositeReward, many trainers.

Why a server: the reward's annotators (CheXbert, RaTE-NER, BioLORD, RadGraph) are models that
should be loaded once, on their own device, and fed large batches, while every trainer rank sends
one small request per step. The server builds the reward once at start-up and gathers concurrent
requests into one model call (micro-batching), then splits the results back.

Endpoints (JSON in and out; errors are ``{"error": "<message>"}`` with a 4xx/5xx status):

- ``POST /v1/score``: ``{"pairs": [{"hyp": str | null, "ref": str | null}, ...]}`` ->
  ``{"results": [{"total": float | null, "components": {name: float | null}, "label_outcomes":
  {observation: "tp" | "fp" | "fn" | "tn"} (only when a labeler ran)}, ...], "batch_pairs": int}``,
  results in the order of the pairs. ``null`` text = no text: scored
  ``None``, as ``CompositeReward.score`` scores a non-string (ARCHITECTURE.md rule 5: a reward is
  a number or ``None``, never a silent 0). ``batch_pairs`` is the size of the model call the
  request was merged into.
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
- ``GET /metrics``: request counts by route and status, latency p50/p90/p99 per route (last
  10,000 requests), model-call sizes (histogram and summary), queue depth, and the reward's
  counters (samples scored, unscorable, partial, failures per component).

Limits (``ServerLimits``): body 4 MiB (413), 1,024 pairs or texts per request and 20,000
characters per text (422), malformed JSON (400), wrong types or missing / unknown keys or an empty
batch (422). The server keeps serving after each.

Security: ``serve`` binds 127.0.0.1 unless told otherwise, and refuses a non-loopback host without
a bearer token; with a token, every route but ``/healthz`` needs ``Authorization: Bearer <token>``
(401 when missing, 403 when wrong).

Threads: the event loop parses, validates and answers; the reward runs in one worker thread (one,
because the annotators' caches and counters are not thread-safe), so ``/healthz`` answers while a
batch is being scored. Scoring is pure, so a client may retry a request whose answer it lost.

Speed (2-core development machine, offline backends, ``benchmarks/reward_throughput.py``): about
3,400 pairs/s through the server with 8 concurrent clients sending 32-pair requests, against
4,000 pairs/s in-process; a lone 32-pair request takes about 10 ms.
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
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from editgrpo.errors import UserError
from editgrpo.rewards.composite import CompositeReward, RewardResult
from editgrpo.text.sentences import split_sentences

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
ROUTES = ("POST /v1/score", "POST /v1/analyze", "GET /healthz", "GET /metrics")
# /healthz stays open with a token set: it tells only that the server is up and what it scores.
OPEN_PATHS = frozenset({"/healthz"})
VECTOR_ENCODING = "base64-float32-le"


@dataclass(frozen=True)
class ServerLimits:
    """What one request may ask and how requests are merged.

    ``max_batch_pairs``: the most pairs (or texts) merged into one model call; a single request
    larger than that is still scored whole. 512 because the offline backends lose speed on larger
    calls (4,050 pairs/s at 32-128 pairs per call, 3,780 at 512, 3,160 at 2,048 on one core) while
    GPU models gain little past a few hundred. ``batch_wait_s``: how long the worker waits for more
    requests after the first before calling the model (0: take what is queued; under load requests
    queue while the previous batch is scored, which is what merges them). ``max_queue_pairs``:
    beyond it new requests get 503 (the client backs off and retries) rather than waiting
    longer than their timeout."""

    max_body_bytes: int = 4 * 1024 * 1024
    max_items: int = 1024
    max_text_chars: int = 20_000
    max_batch_pairs: int = 512
    batch_wait_s: float = 0.0
    max_queue_pairs: int = 65_536

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_items", "max_text_chars", "max_batch_pairs", "max_queue_pairs"):
            if getattr(self, name) < 1:
                raise ValueError(f"ServerLimits.{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_wait_s < 0:
            raise ValueError(f"ServerLimits.batch_wait_s must be >= 0, got {self.batch_wait_s}")


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


@dataclass
class _Job:
    kind: str  # "score" | "analyze" | "analyze+vectors": only jobs of one kind are merged
    columns: tuple[list[Any], ...]  # score: (hyps, refs); analyze: (texts,)
    future: asyncio.Future
    size: int = 0

    def __post_init__(self) -> None:
        self.size = len(self.columns[0])


class ServiceUnavailable(Exception):
    """The queue is full or the server is stopping: the request may be retried (503)."""


@dataclass
class _Metrics:
    started: float = field(default_factory=time.monotonic)
    requests: dict[str, Counter] = field(default_factory=dict)
    latencies: dict[str, deque] = field(default_factory=dict)
    batch_sizes: Counter = field(default_factory=Counter)  # upper bucket bound -> model calls
    calls: int = 0
    batched_pairs: int = 0
    max_pairs: int = 0
    merged_requests: int = 0

    BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)

    def record_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.setdefault(route, Counter())[str(status)] += 1
        self.latencies.setdefault(route, deque(maxlen=10_000)).append(seconds)

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
        """Queue a job and wait for its share of a batch: (its results, pairs in that batch)."""
        if self._stopping or self._worker is None or self._worker.done():
            raise ServiceUnavailable("the reward server is not running")
        job = _Job(kind, columns, asyncio.get_running_loop().create_future())
        if self._pending_pairs + job.size > self.limits.max_queue_pairs:
            raise ServiceUnavailable(
                f"the reward server is busy ({self._pending_pairs} pairs queued, limit "
                f"{self.limits.max_queue_pairs}); retry later"
            )
        self._pending.append(job)
        self._pending_pairs += job.size
        self._wakeup.set()
        return await job.future

    async def _take_batch(self) -> list[_Job]:
        """Everything queued of the first job's kind, up to ``max_batch_pairs`` (the first job
        whole), in arrival order; jobs of another kind keep their place for the next batch."""
        while not self._pending:
            self._wakeup.clear()
            await self._wakeup.wait()
        if self.limits.batch_wait_s > 0 and self._pending_pairs < self.limits.max_batch_pairs:
            await asyncio.sleep(self.limits.batch_wait_s)
        first = self._pending.popleft()
        batch, total, kept = [first], first.size, deque()
        while self._pending:
            job = self._pending.popleft()
            if job.kind == first.kind and total + job.size <= self.limits.max_batch_pairs:
                batch.append(job)
                total += job.size
            else:
                kept.append(job)
                if total >= self.limits.max_batch_pairs:
                    break
        kept.extend(self._pending)
        self._pending = kept
        self._pending_pairs -= total
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._take_batch()
            live = [job for job in batch if not job.future.done()]  # a client may have gone away
            if live:
                await self._process(live)

    async def _process(self, live: list[_Job]) -> None:
        """One model call for the merged jobs, its results split back in order. If the merged
        call raises, each job is run alone, so a request whose text breaks the model costs only
        its own answer (a 500), not its neighbours'."""
        loop = asyncio.get_running_loop()
        kind = live[0].kind
        columns = [
            list(itertools.chain.from_iterable(job.columns[c] for job in live))
            for c in range(len(live[0].columns))
        ]
        try:
            results = await loop.run_in_executor(self._executor, self._call, kind, columns)
        except asyncio.CancelledError:
            for job in live:
                if not job.future.done():
                    job.future.set_exception(ServiceUnavailable("the reward server is shutting down"))
            raise
        except Exception:
            for job in live:
                try:
                    alone = await loop.run_in_executor(self._executor, self._call, kind, list(job.columns))
                except asyncio.CancelledError:
                    if not job.future.done():
                        job.future.set_exception(ServiceUnavailable("the reward server is shutting down"))
                    raise
                except Exception as err:
                    if not job.future.done():
                        job.future.set_exception(err)
                else:
                    self.metrics.record_batch(job.size, 1)
                    if not job.future.done():
                        job.future.set_result((alone, job.size))
            return
        size = len(columns[0])
        self.metrics.record_batch(size, len(live))
        cursor = 0
        for job in live:
            share = results[cursor : cursor + job.size]
            cursor += job.size
            if not job.future.done():
                job.future.set_result((share, size))

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
                "histogram": {
                    ("le_" + bucket): m.batch_sizes[bucket]
                    for bucket in [*map(str, _Metrics.BUCKETS), "+Inf"]
                    if m.batch_sizes[bucket]
                },
            },
            "queue": {"jobs": len(self._pending), "pairs": self._pending_pairs},
            "reward": {
                "samples": stats.samples,
                "unscorable": stats.unscorable,
                "partial": stats.partial,
                "failures": dict(stats.failures),
            },
        }


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
    answers and closes would see a broken pipe instead of the message."""
    declared = request.headers.get("content-length")
    if declared is not None and not declared.strip().isdigit():
        raise HTTPException(400, f"Content-Length {declared!r} is not a number")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif size > 16 * limit:
            break
    if size > limit:
        raise HTTPException(
            413, f"request body is over {limit} bytes ({size:,}+ received); send fewer pairs per request"
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
            422, f"{key!r} has {len(items)} items; the limit is {limits.max_items} per request: split it"
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
            422, f"{where} has {len(value):,} characters; the limit is {limits.max_text_chars:,}"
        )
    return value


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


def check_exposure(host: str, token: str | None, token_env: str) -> None:
    """Refuse (UserError, exit 2) to serve a non-loopback address without a bearer token: the
    server runs models on whatever text it is sent, and anyone who reaches it could use them."""
    if not is_loopback(host) and not token:
        raise UserError(
            f"refusing to bind {host!r} without a token: a non-loopback address exposes the reward "
            f"server to the network. Set a bearer token in the environment variable {token_env} "
            "(reward.server_token_env) or pass --token, or bind 127.0.0.1"
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
            uvicorn.Config(
                create_app(service, on_started=lambda: print(ready, flush=True)),
                log_level=log_level,
                access_log=False,
                lifespan="on",
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
