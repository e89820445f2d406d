"""The reward server's client, and the one switch the trainer uses: ``build_reward_scorer``.

``RewardClient`` has the scoring interface of ``CompositeReward`` (``score``, the TRL call form,
``stats``, ``__name__``), so the trainer holds either and does not care which:

    scorer = build_reward_scorer(config.reward)   # reward.scoring: inprocess | server
    results = scorer.score(hyps, refs)            # one HTTP request per call (per training step)

Failures: connection errors, timeouts and 5xx answers are retried with exponential backoff
(``backoff_s``, 2x, 4x, ...), since a reward server restarting or briefly overloaded is the common
case and scoring is pure, so a repeated request is harmless. A 4xx is the request's own fault and
is not retried (a 413 or 422 names the server limit it broke and the ``serve-rewards`` option that
raises it; a 401/403 is a missing or wrong token). When the attempts run out the client raises ``RewardServerError`` naming the URL,
the attempts and the last error: it never makes up a reward (ARCHITECTURE.md rule 5), because a
made-up 0 would silently become a strong negative advantage.

httpx is imported when a client is built, so an in-process run never needs it.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from editgrpo.metrics.chexbert_f1 import OUTCOMES
from editgrpo.rewards.composite import CompositeReward, RewardResult, RewardStats, trl_totals
from editgrpo.text.sentences import Sentence


class RewardServerError(RuntimeError):
    """The reward server could not give an answer: unreachable, failing, or refusing the request.

    ``status`` is the last HTTP status (None when no answer came), ``attempts`` how many requests
    were sent."""

    def __init__(self, message: str, *, url: str, attempts: int, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.attempts = attempts
        self.status = status


@dataclass(frozen=True)
class EntityMention:
    """A RaTE entity of an analysed text: character span, type, the index of its sentence in
    ``TextAnalysis.sentences`` (None if it lies outside every sentence), and its vector (float32,
    L2-normalised) when vectors were asked for."""

    text: str
    start: int
    end: int
    type: str
    sentence: int | None
    vector: Any = None  # np.ndarray of shape (dim,) or None


@dataclass(frozen=True)
class TextAnalysis:
    """What ``/v1/analyze`` says about one text; ``entities`` is None where the entity annotator
    failed on it (could not analyse, which is not the same as "no entities")."""

    sentences: list[Sentence]
    entities: list[EntityMention] | None

    def entities_in(self, sentence: int) -> list[EntityMention]:
        """The entities of sentence ``sentence`` (the edit engine works sentence by sentence)."""
        return [e for e in self.entities or () if e.sentence == sentence]


RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class RewardClient:
    """HTTP client of ``editgrpo serve-rewards`` (see the module docstring for the retry policy).

    ``url``: the server's base URL (``http://127.0.0.1:8765``). ``token``: its bearer token, if it
    has one. ``timeout_s``: per request (connect, read, write each). ``retries``: extra attempts
    after the first. ``backoff_s``: the wait before the first retry, doubling after each, at most
    ``max_backoff_s``. ``max_pairs_per_request`` / ``max_chars_per_request``: a
    larger call is sent as several requests (the server's default limits: 1,024 pairs and
    1,000,000 characters of text per request)."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout_s: float = 60.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        *,
        max_backoff_s: float = 30.0,
        max_pairs_per_request: int = 1024,
        max_chars_per_request: int = 1_000_000,
        name: str = "editgrpo_reward_server",
    ) -> None:
        import httpx

        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"reward server URL must start with http:// or https://, got {url!r}")
        if (
            retries < 0
            or timeout_s <= 0
            or backoff_s < 0
            or max_pairs_per_request < 1
            or max_chars_per_request < 1
        ):
            raise ValueError(
                "need retries >= 0, timeout_s > 0, backoff_s >= 0, max_pairs_per_request >= 1, "
                f"max_chars_per_request >= 1; got {retries}, {timeout_s}, {backoff_s}, {max_pairs_per_request}, "
                f"{max_chars_per_request}"
            )
        self.url = url.rstrip("/")
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_pairs_per_request = max_pairs_per_request
        self.max_chars_per_request = max_chars_per_request
        self.stats = RewardStats()
        self.retries_used = 0  # retries this client has made, for the training log
        self.__name__ = name  # TRL logs reward functions by __name__
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._httpx = httpx
        self._client = httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout_s), headers=headers)

    def __repr__(self) -> str:  # never the token
        return f"RewardClient({self.url!r}, retries={self.retries})"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # requests ------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, payload: Any = None) -> Any:
        """One call with retries; the answer's JSON, or RewardServerError."""
        httpx = self._httpx
        body = None if payload is None else json.dumps(payload, separators=(",", ":")).encode()
        attempts = self.retries + 1
        last = "no attempt made"
        status = None
        for attempt in range(1, attempts + 1):
            try:
                response = self._client.request(method, path, content=body)
            except httpx.TransportError as err:  # connect/read/write errors, timeouts, dropped connections
                last, status = f"{type(err).__name__}: {err or 'no detail'}", None
            else:
                status = response.status_code
                if status < 400:
                    try:
                        return response.json()
                    except ValueError:
                        raise RewardServerError(
                            f"reward server {self.url}: {method} {path} answered {status} with a body that "
                            "is not JSON",
                            url=self.url,
                            attempts=attempt,
                            status=status,
                        ) from None
                last = f"HTTP {status}: {_error_message(response)}"
                if status not in RETRYABLE_STATUS:
                    raise RewardServerError(
                        f"reward server {self.url}: {method} {path} was refused ({last}); not retried, "
                        "the request itself is at fault",
                        url=self.url,
                        attempts=attempt,
                        status=status,
                    )
            if attempt < attempts:
                self.retries_used += 1
                time.sleep(min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s))
        raise RewardServerError(
            f"reward server {self.url}: {method} {path} failed after {attempts} attempt(s); last error: {last}",
            url=self.url,
            attempts=attempts,
            status=status,
        )

    def _malformed(self, what: str) -> RewardServerError:
        return RewardServerError(
            f"reward server {self.url}: malformed answer ({what})", url=self.url, attempts=1
        )

    # the scoring interface ---------------------------------------------------------------------------

    def score(self, hyps: Sequence[Any], refs: Sequence[Any]) -> list[RewardResult]:
        """One result per (hyp, ref) pair, as ``CompositeReward.score`` gives it; a text that is
        not a string is sent as null and scored None (as in-process)."""
        hyps, refs = list(hyps), list(refs)
        if len(hyps) != len(refs):
            raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
        hyps, refs = [_str_or_none(h) for h in hyps], [_str_or_none(r) for r in refs]
        sizes = [len(h or "") + len(r or "") for h, r in zip(hyps, refs, strict=True)]
        results: list[RewardResult] = []
        for chunk in self._chunks(sizes):
            pairs = [{"hyp": hyps[i], "ref": refs[i]} for i in chunk]
            answer = self._request("POST", "/v1/score", {"pairs": pairs})
            results += self._results(answer, len(pairs))
        self._count(results)
        return results

    def _chunks(self, sizes: list[int]) -> list[range]:
        """Consecutive index ranges within ``max_pairs_per_request`` items and
        ``max_chars_per_request`` characters (an item larger than that alone: the server then
        answers 413 naming its limit)."""
        out, start, used = [], 0, 0
        for i, size in enumerate(sizes):
            if i > start and (
                i - start >= self.max_pairs_per_request or used + size > self.max_chars_per_request
            ):
                out.append(range(start, i))
                start, used = i, 0
            used += size
        if sizes:
            out.append(range(start, len(sizes)))
        return out

    def _results(self, answer: Any, expected: int) -> list[RewardResult]:
        items = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(items, list) or len(items) != expected:
            raise self._malformed(f"expected 'results' with {expected} items")
        out = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("components"), dict):
                raise self._malformed("a result without 'components'")
            total, components = item.get("total"), item["components"]
            values = [total, *components.values()]
            if any(v is not None and not isinstance(v, int | float) for v in values):
                raise self._malformed("a score that is neither a number nor null")
            outcomes = item.get("label_outcomes")
            if outcomes is not None and not (
                isinstance(outcomes, dict) and all(v in OUTCOMES for v in outcomes.values())
            ):
                raise self._malformed("'label_outcomes' that is not a map of observation -> tp/fp/fn/tn")
            out.append(
                RewardResult(
                    None if total is None else float(total),
                    {k: None if v is None else float(v) for k, v in components.items()},
                    None if outcomes is None else {str(k): str(v) for k, v in outcomes.items()},
                )
            )
        return out

    def _count(self, results: list[RewardResult]) -> None:
        """``stats`` as ``CompositeReward.score`` counts them, for the training log."""
        for result in results:
            self.stats.record(result)

    def __call__(
        self,
        prompts: Sequence[Any] | None = None,
        completions: Sequence[Any] | None = None,
        reference: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        """TRL reward-function form, as ``CompositeReward.__call__``."""
        return trl_totals(self.score, completions, reference)

    # the rest of the API ---------------------------------------------------------------------------------

    def analyze(self, texts: Sequence[str], vectors: bool = False) -> list[TextAnalysis]:
        """Sentences and RaTE entities (with vectors when asked) of each text (``/v1/analyze``)."""
        texts = list(texts)
        if not texts:
            return []
        out: list[TextAnalysis] = []
        for indices in self._chunks([len(t) if isinstance(t, str) else 0 for t in texts]):
            chunk = texts[indices.start : indices.stop]
            answer = self._request("POST", "/v1/analyze", {"texts": chunk, "vectors": bool(vectors)})
            analyses = answer.get("analyses") if isinstance(answer, dict) else None
            if not isinstance(analyses, list) or len(analyses) != len(chunk):
                raise self._malformed(f"expected 'analyses' with {len(chunk)} items")
            dim = answer.get("dim")
            try:
                out += [_analysis(item, dim if vectors else None) for item in analyses]
            except (KeyError, TypeError, ValueError) as err:
                raise self._malformed(f"an analysis: {type(err).__name__}: {err}") from None
        return out

    def health(self) -> dict[str, Any]:
        """``/healthz``: components, backends, auth mode."""
        return self._request("GET", "/healthz")

    def metrics(self) -> dict[str, Any]:
        """``/metrics.json``: request counts, latencies, batch sizes, the reward's counters (the
        same figures as ``/metrics``, which is Prometheus text)."""
        return self._request("GET", "/metrics.json")

    def check(self) -> dict[str, Any]:
        """That the server answers and accepts this client's token (a trainer calls it before
        loading its model, so a wrong URL or token fails in seconds, not after the first
        rollouts): ``/healthz``, then ``/metrics.json``, which needs the token when the server
        has one. Returns the health answer; RewardServerError otherwise."""
        health = self.health()
        if not isinstance(health, dict) or health.get("status") != "ok":
            raise self._malformed("/healthz did not say status ok")
        if health.get("auth") == "bearer" and "Authorization" not in self._client.headers:
            raise RewardServerError(
                f"reward server {self.url} needs a bearer token and this client has none",
                url=self.url,
                attempts=1,
                status=401,
            )
        self.metrics()
        return health


def _str_or_none(text: Any) -> Any:
    return text if isinstance(text, str) else None


def _error_message(response: Any) -> str:
    try:
        message = response.json().get("error")
    except (ValueError, AttributeError):
        message = None
    return str(message) if message else (response.text[:200] or response.reason_phrase)


def _analysis(item: dict[str, Any], dim: int | None) -> TextAnalysis:
    import numpy as np

    sentences = [Sentence(s["text"], int(s["start"]), int(s["end"])) for s in item["sentences"]]
    entities = None
    if item["entities"] is not None:
        entities = []
        for e in item["entities"]:
            vector = None
            if dim is not None and e.get("vector") is not None:
                vector = np.frombuffer(base64.b64decode(e["vector"]), dtype="<f4").astype(np.float32)
                if vector.shape != (dim,):
                    raise ValueError(f"a vector of {vector.shape[0]} values, expected {dim}")
            entities.append(
                EntityMention(e["text"], int(e["start"]), int(e["end"]), e["type"], e["sentence"], vector)
            )
    return TextAnalysis(sentences, entities)


def build_reward_scorer(config: Any) -> CompositeReward | RewardClient:
    """The trainer's reward by ``config.scoring`` (a ``config.RewardConfig``): ``inprocess`` builds
    the CompositeReward here; ``server`` returns a client of ``config.server_url``, with the token
    read from the environment variable named by ``config.server_token_env`` (never from the
    recipe, which is saved next to the run's outputs)."""
    if config.scoring == "inprocess":
        return CompositeReward.from_config(config)
    if config.scoring == "server":
        if not config.server_url:
            raise ValueError("reward.scoring is server but reward.server_url is empty")
        return RewardClient(
            config.server_url,
            token=os.environ.get(config.server_token_env) or None,
            timeout_s=config.timeout_s,
            retries=config.retries,
            name="editgrpo_" + "_plus_".join(config.components),
        )
    raise ValueError(f"unknown reward.scoring {config.scoring!r}; valid: inprocess, server")
