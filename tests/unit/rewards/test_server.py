"""The reward server on loopback: load, a killed-and-restarted server, bad requests, security.

Every server here is real: uvicorn on a free 127.0.0.1 port, either in a thread of this process
(``thread_server``: fast to start, lets a test set limits) or as ``editgrpo serve-rewards`` in a
subprocess (``CliServer``: the load test, so the server has its own core and GIL, and the restart
test, which needs a process to SIGKILL). Expected values always come from an in-process
``CompositeReward`` scoring the same pairs. Texts are a fixed pool of SynthCXR findings plus
hand-written edge cases, so the annotators' sentence caches keep the load test fast.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from editgrpo.annotators.embeddings import build_embedder
from editgrpo.annotators.entities import LexiconEntityExtractor
from editgrpo.config import RewardConfig
from editgrpo.data.synth import SynthConfig, generate_studies
from editgrpo.rewards.client import RewardClient, RewardServerError, build_reward_scorer
from editgrpo.rewards.composite import CompositeReward, RewardResult
from editgrpo.rewards.server import RewardService, ServerLimits
from editgrpo.text.sentences import split_sentences
from fixtures.servers import thread_server

TOKEN = "test-token-3f9a"
TOKEN_ENV = "EDITGRPO_TEST_REWARD_TOKEN"
HAND_WRITTEN = [
    "Mild cardiomegaly. Small left pleural effusion. No pneumothorax.",
    "Heart size is normal. Lungs are clear. No pleural effusion or pneumothorax.",
    "1. Right lower lobe opacity may represent pneumonia.\n2. Endotracheal tube in place.",
    "",  # empty report: scored (all components defined on empty input) or None, as in-process
    "No acute cardiopulmonary process.",
    "Cœur de taille normale – poumons clairs ¹²³.",
]


# ---------------------------------------------------------------------------------------------
# Texts and expected scores
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool() -> list[tuple[str | None, str | None]]:
    """256 (hyp, ref) pairs: SynthCXR findings as hypotheses against 24 references (a GRPO group
    shares its reference), hand-written cases, and pairs with a missing text (scored None)."""
    reports = [s.study.findings for s in generate_studies(SynthConfig(n=160, seed=7), render=False)]
    texts = [t for t in reports if t] + HAND_WRITTEN
    refs = texts[:24]
    rng = np.random.default_rng(0)
    pairs: list[tuple[str | None, str | None]] = [
        (texts[int(rng.integers(len(texts)))], refs[int(rng.integers(len(refs)))]) for _ in range(250)
    ]
    pairs += [(text, HAND_WRITTEN[0]) for text in HAND_WRITTEN[1:4]] + [
        (None, refs[0]),
        (refs[1], None),
        (None, None),
    ]
    return pairs


@pytest.fixture(scope="module")
def expected(pool: list[tuple[str | None, str | None]]) -> list[RewardResult]:
    return CompositeReward().score([h for h, _ in pool], [r for _, r in pool])


# ---------------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------------


def editgrpo_command() -> list[str]:
    exe = shutil.which("editgrpo", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "editgrpo.cli"]


class CliServer:
    """``editgrpo serve-rewards`` in a subprocess; ``url`` once its ready line is printed."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, log: Path) -> None:
        self.args, self.env, self.log = list(args), env, log
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self, port: int = 0, timeout_s: float = 20.0) -> CliServer:
        with open(self.log, "a", encoding="utf-8") as log:
            self.process = subprocess.Popen(
                [*editgrpo_command(), "serve-rewards", "--port", str(port), *self.args],
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                text=True,
                env={**os.environ, **(self.env or {})},
            )
        lines: queue.Queue[str] = queue.Queue()
        stdout = self.process.stdout
        threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
        try:
            line = lines.get(timeout=timeout_s)
        except queue.Empty:
            self.stop()
            raise AssertionError(f"server not ready in {timeout_s}s: {self.log.read_text()}") from None
        match = re.search(r"serving rewards on (http://\S+)", line)
        assert match, f"unexpected first line {line!r}; log: {self.log.read_text()}"
        self.url = match.group(1)
        return self

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def cli_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliServer]:
    """The CLI server of a plain reward recipe (no `stage:`), its token in an env variable."""
    folder = tmp_path_factory.mktemp("serve-rewards")
    recipe = folder / "reward.yaml"
    recipe.write_text(
        "reward:\n"
        "  components: {radgraph_partial: 1.0, chexbert_micro14: 1.0, ratescore: 1.0}\n"
        "  labeler: rules\n  entities: lexicon\n  embedder: lexical\n"
        f"  server_token_env: {TOKEN_ENV}\n",
        encoding="utf-8",
    )
    server = CliServer("--config", str(recipe), env={TOKEN_ENV: TOKEN}, log=folder / "server.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def service() -> RewardService:
    return RewardService(CompositeReward(), limits=ServerLimits(), token=TOKEN)


@pytest.fixture(scope="module")
def url(service: RewardService) -> Iterator[str]:
    with thread_server(service) as url:
        yield url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def payload(pairs: list[tuple[str | None, str | None]]) -> dict:
    return {"pairs": [{"hyp": h, "ref": r} for h, r in pairs]}


AUTH = {"Authorization": f"Bearer {TOKEN}"}


# ---------------------------------------------------------------------------------------------
# (a) load: concurrent clients, results identical to in-process
# ---------------------------------------------------------------------------------------------

# The size, 16 clients x 200 requests x 32 pairs (102,400 pairs): about 30 s on the 2-core
# development machine (3,300 pairs/s, the reward's own speed), inside the one-minute budget.
# EDITGRPO_LOAD_TEST_PAIRS lowers it for quick local runs.
CLIENTS, REQUESTS = 16, 200
PAIRS = int(os.environ.get("EDITGRPO_LOAD_TEST_PAIRS", "32"))


def test_concurrent_clients_get_the_in_process_results(
    cli_server: CliServer, pool: list, expected: list[RewardResult]
) -> None:
    """16 clients x 200 requests x 32 pairs against one server: no error, every result equal to
    the in-process score of its pair, and concurrent requests merged into shared model calls."""
    errors: list[str] = []
    mismatches: list[tuple[int, int]] = []
    done = [0] * CLIENTS

    def work(c: int) -> None:
        with RewardClient(cli_server.url, token=TOKEN, timeout_s=30, retries=2, backoff_s=0.1) as client:
            for r in range(REQUESTS):
                index = [(c * 977 + r * PAIRS + k) % len(pool) for k in range(PAIRS)]
                try:
                    results = client.score([pool[i][0] for i in index], [pool[i][1] for i in index])
                except Exception as err:  # counted, then the test fails listing them
                    errors.append(f"client {c} request {r}: {err}")
                    continue
                mismatches.extend(
                    (c, i) for i, result in zip(index, results, strict=True) if result != expected[i]
                )
                done[c] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=work, args=(c,)) for c in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    elapsed = time.perf_counter() - started
    assert not errors, errors[:5]
    assert not mismatches, mismatches[:5]
    assert sum(done) == CLIENTS * REQUESTS

    with RewardClient(cli_server.url, token=TOKEN) as client:
        metrics = client.metrics()
    pairs = CLIENTS * REQUESTS * PAIRS
    assert metrics["requests"]["POST /v1/score"]["200"] >= CLIENTS * REQUESTS
    assert metrics["reward"]["samples"] >= pairs
    batches = metrics["batches"]
    assert batches["requests"] >= CLIENTS * REQUESTS
    assert batches["model_calls"] < batches["requests"], "concurrent requests were never merged"
    assert batches["max_pairs"] > PAIRS
    print(
        f"\n{pairs} pairs in {elapsed:.1f}s = {pairs / elapsed:,.0f} pairs/s; "
        f"{batches['model_calls']} model calls, mean {batches['mean_pairs']} pairs"
    )


# ---------------------------------------------------------------------------------------------
# (b) a server killed mid-run and restarted on the same port
# ---------------------------------------------------------------------------------------------


def test_client_retries_across_a_killed_and_restarted_server(
    tmp_path: Path, pool: list, expected: list[RewardResult]
) -> None:
    server = CliServer(log=tmp_path / "server.log").start()
    port, total, per_client = server.port, 40, 4
    progress = [0] * per_client
    results: dict[tuple[int, int], list[RewardResult]] = {}
    errors: list[str] = []
    clients = [
        RewardClient(server.url, timeout_s=10, retries=8, backoff_s=0.05, max_backoff_s=1.0)
        for _ in range(per_client)
    ]

    def work(c: int) -> None:
        for r in range(total):
            index = [(c * 131 + r * PAIRS + k) % len(pool) for k in range(PAIRS)]
            try:
                results[c, r] = clients[c].score([pool[i][0] for i in index], [pool[i][1] for i in index])
            except RewardServerError as err:
                errors.append(str(err))
            progress[c] += 1

    threads = [threading.Thread(target=work, args=(c,)) for c in range(per_client)]
    restarted = None
    try:
        for thread in threads:
            thread.start()
        while min(progress) < 5:  # mid-run: every client has traffic in flight
            time.sleep(0.005)
        server.kill()
        time.sleep(0.3)  # clients now hit a dead port
        restarted = CliServer(log=tmp_path / "restarted.log").start(port=port)
        for thread in threads:
            thread.join(60)
    finally:
        server.stop()
        if restarted is not None:
            restarted.stop()
    assert not errors, errors[:3]
    assert sum(client.retries_used for client in clients) > 0, "the kill did not interrupt any request"
    for (c, r), got in results.items():
        index = [(c * 131 + r * PAIRS + k) % len(pool) for k in range(PAIRS)]
        assert got == [expected[i] for i in index], f"client {c} request {r} differs from in-process"
    assert len(results) == per_client * total


# ---------------------------------------------------------------------------------------------
# (c) bad requests: 4xx with a message, and the server keeps serving
# ---------------------------------------------------------------------------------------------

LONG = "Effusion. " * 2001  # 20,010 characters
BAD_SCORE_BODIES = [
    (b"{not json", 400, "malformed JSON"),
    (b"\xff\xfe\xfa", 400, "malformed JSON"),
    (b"[" * 100_000, 400, "malformed JSON"),
    (b"[]", 422, "must be a JSON object"),
    (b"{}", 422, "missing key 'pairs'"),
    (b'{"pairs": "Mild cardiomegaly."}', 422, "'pairs' must be an array, not a string"),
    (b'{"pairs": []}', 422, "'pairs' is empty"),
    (b'{"pairs": [1]}', 422, "pairs[0] must be an object"),
    (b'{"pairs": [{"hyp": 1, "ref": "x"}]}', 422, "pairs[0].hyp must be a string or null, not a number"),
    (b'{"pairs": [{"hyp": "x"}]}', 422, "pairs[0] is missing 'ref'"),
    (b'{"pairs": [{"hyp": "x", "ref": "y", "id": 3}]}', 422, "unknown key 'id'"),
    (b'{"pairs": [{"hyp": "x", "ref": "y"}], "hyps": []}', 422, "unknown key 'hyps'"),
    (('{"pairs": [' + ",".join(['{"hyp": "a", "ref": "b"}'] * 1025) + "]}").encode(), 422, "limit is 1024"),
    (('{"pairs": [{"hyp": "' + LONG + '", "ref": "b"}]}').encode(), 422, "the limit is 20,000"),
    (b" " * (10 * 1024 * 1024), 413, "request body is over 4194304 bytes"),
]


@pytest.mark.parametrize(
    ("body", "status", "message"), BAD_SCORE_BODIES, ids=[m for _, _, m in BAD_SCORE_BODIES]
)
def test_bad_score_requests_get_a_4xx_with_a_message(
    url: str, body: bytes, status: int, message: str
) -> None:
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as http:
        response = http.post("/v1/score", content=body)
        assert response.status_code == status, response.text
        assert message in response.json()["error"]
        good = http.post("/v1/score", json=payload([("Mild cardiomegaly.", HAND_WRITTEN[0])]))
        assert good.status_code == 200 and good.json()["results"][0]["total"] > 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"texts": ["x"], "vectors": "yes"}, "'vectors' must be true or false, not a string"),
        ({"texts": [None]}, "texts[0] must be a string, not null"),
        ({"texts": []}, "'texts' is empty"),
        ({"text": ["x"]}, "missing key 'texts'"),
    ],
)
def test_bad_analyze_requests_get_422(url: str, body: dict, message: str) -> None:
    response = httpx.post(f"{url}/v1/analyze", json=body, headers=AUTH)
    assert response.status_code == 422 and message in response.json()["error"]


def test_token_is_required_on_every_route_but_healthz(url: str) -> None:
    body = payload([("Mild cardiomegaly.", HAND_WRITTEN[0])])
    missing = httpx.post(f"{url}/v1/score", json=body)
    assert missing.status_code == 401 and "bearer token" in missing.json()["error"]
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = httpx.post(f"{url}/v1/score", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and "wrong" in wrong.json()["error"]
    assert httpx.get(f"{url}/metrics").status_code == 401
    assert httpx.post(f"{url}/v1/analyze", json={"texts": ["x"]}).status_code == 401
    assert httpx.get(f"{url}/healthz").status_code == 200  # open: a liveness probe
    assert httpx.post(f"{url}/v1/score", json=body, headers=AUTH).status_code == 200
    # The client turns a 4xx into RewardServerError at once: one attempt, no retry.
    with RewardClient(url, token="nope", retries=3, backoff_s=5) as client:
        started = time.perf_counter()
        with pytest.raises(RewardServerError, match="HTTP 403: the bearer token is wrong") as info:
            client.score(["x"], ["y"])
        assert info.value.attempts == 1 and info.value.status == 403 and time.perf_counter() - started < 2


def test_unknown_routes_and_methods_answer_json(url: str) -> None:
    assert httpx.get(f"{url}/v1/nothing", headers=AUTH).status_code == 404
    response = httpx.get(f"{url}/v1/score", headers=AUTH)
    assert response.status_code == 405 and "error" in response.json()


# ---------------------------------------------------------------------------------------------
# Health, metrics, analysis, batching
# ---------------------------------------------------------------------------------------------


def test_health_names_components_and_backends(url: str) -> None:
    with RewardClient(url, token=TOKEN) as client:
        health = client.health()
    assert health["status"] == "ok" and health["auth"] == "bearer"
    assert health["components"] == {"radgraph_partial": 1.0, "chexbert_micro14": 1.0, "ratescore": 1.0}
    assert health["backends"] == {
        "labeler": "rules",
        "entities": "lexicon",
        "graph_entities": "lexicon",
        "embedder": "lexical",
    }


def test_empty_completions_get_the_servers_policy(url: str) -> None:
    # The server scores with its CompositeReward, so the empty-completion floor holds there too,
    # and `empty_completion: score` (the release's behaviour) passes the components' values through.
    ref = HAND_WRITTEN[1]
    with RewardClient(url, token=TOKEN) as client:
        (empty, blank) = client.score(["", "  \n "], [ref, ref])
    assert empty.total == blank.total == 0.0
    assert empty.components == dict.fromkeys(empty.components, 0.0)
    scoring = CompositeReward(empty_completion="score")
    with thread_server(RewardService(scoring, limits=ServerLimits())) as other, RewardClient(other) as client:
        (scored,) = client.score([""], [ref])
    assert scored == scoring.score([""], [ref])[0] and scored.total > 0.0


def test_metrics_count_routes_statuses_batches_and_unscorable(url: str) -> None:
    with RewardClient(url, token=TOKEN) as client:
        before = client.metrics()
        results = client.score([None, "Mild cardiomegaly."], [HAND_WRITTEN[0], HAND_WRITTEN[0]])
        httpx.post(f"{url}/v1/score", content=b"{", headers=AUTH)
        after = client.metrics()
    assert results[0].total is None and results[1].total is not None
    assert client.stats.unscorable == 1 and client.stats.samples == 2
    assert after["reward"]["samples"] - before["reward"]["samples"] == 2
    assert after["reward"]["unscorable"] - before["reward"]["unscorable"] == 1
    score = after["requests"]["POST /v1/score"]
    assert score["200"] - before["requests"].get("POST /v1/score", {}).get("200", 0) == 1
    assert score["400"] >= 1
    assert set(after["latency"]["POST /v1/score"]) == {"count", "p50_ms", "p90_ms", "p99_ms"}
    assert after["batches"]["model_calls"] >= 1 and sum(after["batches"]["histogram"].values()) >= 1
    assert after["queue"] == {"jobs": 0, "pairs": 0}


PROMETHEUS_SAMPLE = re.compile(
    r'^([a-z_]+)(\{([a-z_]+="(?:[^"\\\\]|\\\\.)*",?)*\})? (-?[0-9.e+-]+|[+-]Inf|NaN)$'
)


def prometheus(text: str) -> dict[tuple[str, frozenset], float]:
    """Parse text exposition strictly: every sample line well formed and preceded by the HELP
    and TYPE lines of its family; {(name, labels): value}."""
    declared: dict[str, str] = {}
    samples: dict[tuple[str, frozenset], float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary"), line
            declared[name] = kind
            continue
        match = PROMETHEUS_SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name = match.group(1)
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in declared or family in declared, f"{name} has no TYPE line before it"
        labels = frozenset(re.findall(r'([a-z_]+)="((?:[^"\\\\]|\\\\.)*)"', match.group(2) or ""))
        samples[name, labels] = float(match.group(4))
    return samples


def test_metrics_are_prometheus_text_that_agrees_with_the_json(url: str) -> None:
    with RewardClient(url, token=TOKEN) as client:
        client.score(["Mild cardiomegaly.", None], [HAND_WRITTEN[0], HAND_WRITTEN[0]])
        text = httpx.get(f"{url}/metrics", headers=AUTH)
        figures = client.metrics()
    assert text.status_code == 200
    assert text.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "# HELP editgrpo_reward_requests_total " in text.text
    samples = prometheus(text.text)
    route = frozenset({("route", "POST /v1/score"), ("status", "200")})
    assert samples["editgrpo_reward_requests_total", route] == figures["requests"]["POST /v1/score"]["200"]
    assert samples["editgrpo_reward_samples_total", frozenset()] == figures["reward"]["samples"]
    assert samples["editgrpo_reward_unscorable_total", frozenset()] == figures["reward"]["unscorable"]
    assert samples["editgrpo_reward_model_call_pairs_count", frozenset()] == figures["batches"]["model_calls"]
    # Histogram buckets are cumulative and end at +Inf == _count.
    buckets = [
        v for (name, labels), v in samples.items() if name == "editgrpo_reward_model_call_pairs_bucket"
    ]
    assert buckets == sorted(buckets)
    assert (
        samples["editgrpo_reward_model_call_pairs_bucket", frozenset({("le", "+Inf")})]
        == figures["batches"]["model_calls"]
    )
    quantiles = {
        dict(labels)["quantile"]
        for name, labels in samples
        if name == "editgrpo_reward_request_duration_seconds" and ("route", "POST /v1/score") in labels
    }
    assert quantiles == {"0.5", "0.9", "0.99"}


def test_a_small_request_is_answered_while_a_large_one_is_still_being_scored(pool: list) -> None:
    """Issue 18: a 1-pair request behind a 100-pair request of long reports waited for all of
    it. Now the large one is scored in slices of at most max_batch_chars, and the small one is
    answered between two of them, while the large one is still being scored; both get the
    in-process results."""
    texts = [h for h, _ in pool if h]
    long = [" ".join(texts[(i + k) % len(texts)] for k in range(20))[:2_000] for i in range(40)]
    assert {len(t) for t in long} == {2_000}  # 40 long reports
    large_hyps, large_refs = long, long[::-1]
    service = RewardService(CompositeReward(), limits=ServerLimits(max_batch_chars=8_000))
    large_answer: dict = {}
    with thread_server(service) as url:

        def send_large() -> None:
            large_answer.update(
                httpx.post(
                    f"{url}/v1/score",
                    json=payload(list(zip(large_hyps, large_refs, strict=True))),
                    timeout=120,
                ).json()
            )

        large = threading.Thread(target=send_large)
        large.start()
        while service.metrics.calls == 0:  # the large request's first slice has been scored
            time.sleep(0.005)
        small = httpx.post(f"{url}/v1/score", json=payload([pool[0]]), timeout=120).json()
        small_done_first = large.is_alive()
        large.join(120)
        figures = httpx.get(f"{url}/metrics.json").json()
    assert small_done_first, "the 1-pair request waited for the whole large request"
    expected_small = CompositeReward().score([pool[0][0]], [pool[0][1]])
    assert [RewardResult(r["total"], r["components"], r.get("label_outcomes")) for r in small["results"]] == (
        expected_small
    )
    got = [
        RewardResult(r["total"], r["components"], r.get("label_outcomes")) for r in large_answer["results"]
    ]
    assert got == CompositeReward().score(large_hyps, large_refs)  # slices put back in order
    assert large_answer["batch_pairs"] <= 2  # 4,000 characters a pair: two pairs per 8,000
    assert figures["batches"]["sliced_requests"] == 1 and figures["batches"]["model_calls"] >= 20


def test_analyze_gives_sentences_typed_entities_and_exact_vectors(url: str) -> None:
    texts = [HAND_WRITTEN[0], HAND_WRITTEN[2], ""]
    with RewardClient(url, token=TOKEN) as client:
        plain, with_vectors = client.analyze(texts), client.analyze(texts, vectors=True)
    extractor, embedder = LexiconEntityExtractor(), build_embedder("lexical")
    for text, analysis, vectored in zip(texts, plain, with_vectors, strict=True):
        assert analysis.sentences == split_sentences(text)
        entities = extractor.extract_one(text).rate
        assert [(e.text, e.start, e.end, e.type) for e in analysis.entities] == [
            (e.text, e.start, e.end, e.rate_type) for e in entities
        ]
        for entity in analysis.entities:
            sentence = analysis.sentences[entity.sentence]
            assert sentence.start <= entity.start < entity.end <= sentence.end
            assert entity.vector is None
        if entities:
            assert np.array_equal(
                np.stack([e.vector for e in vectored.entities]), embedder.embed([e.text for e in entities])
            )
    assert [e.text for e in plain[0].entities_in(1)] == ["left pleural", "effusion"]
    assert plain[2].sentences == [] and plain[2].entities == []


def _concurrently(url: str, bodies: list[dict]) -> list[dict]:
    """POST each body to /v1/score from its own thread, all at once; the answers in order."""
    answers: list[dict] = [{} for _ in bodies]

    def send(c: int) -> None:
        answers[c] = httpx.post(f"{url}/v1/score", json=bodies[c], timeout=30).json()

    threads = [threading.Thread(target=send, args=(c,)) for c in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return answers


def test_concurrent_requests_are_merged_then_split_in_order(pool: list, expected: list[RewardResult]) -> None:
    """With a gathering window, 4 concurrent 8-pair requests become one 32-pair model call (or
    two of 16 under a 16-pair cap), and each request gets its own results back."""
    for cap, calls in ((512, 1), (16, 2)):
        service = RewardService(CompositeReward(), limits=ServerLimits(max_batch_pairs=cap, batch_wait_s=0.3))
        with thread_server(service) as url:
            answers = _concurrently(url, [payload(pool[c * 8 : c * 8 + 8]) for c in range(4)])
            metrics = httpx.get(f"{url}/metrics.json").json()
        assert metrics["batches"]["model_calls"] == calls and metrics["batches"]["max_pairs"] == 32 // calls
        for c in range(4):
            assert answers[c]["batch_pairs"] == 32 // calls
            got = [
                RewardResult(r["total"], r["components"], r.get("label_outcomes"))
                for r in answers[c]["results"]
            ]
            assert got == expected[c * 8 : c * 8 + 8]


def test_a_full_queue_answers_503_and_the_client_gives_up_with_the_reason() -> None:
    service = RewardService(CompositeReward(), limits=ServerLimits(max_queue_pairs=4))
    with thread_server(service) as url, RewardClient(url, retries=2, backoff_s=0.01) as client:
        with pytest.raises(RewardServerError, match=r"after 3 attempt\(s\); last error: HTTP 503: .*busy"):
            client.score(["Mild cardiomegaly."] * 8, [HAND_WRITTEN[0]] * 8)
        assert client.retries_used == 2
        assert client.score(["Mild cardiomegaly."], [HAND_WRITTEN[0]])[0].total is not None


def test_build_reward_scorer_picks_the_server_by_config_and_reads_the_token_from_env(
    url: str, monkeypatch: pytest.MonkeyPatch, pool: list, expected: list[RewardResult]
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    remote = build_reward_scorer(RewardConfig(scoring="server", server_url=url, server_token_env=TOKEN_ENV))
    local = build_reward_scorer(RewardConfig())
    assert isinstance(remote, RewardClient) and isinstance(local, CompositeReward)
    assert remote.__name__ == local.__name__
    hyps, refs = [h for h, _ in pool[:40]], [r for _, r in pool[:40]]
    assert remote.score(hyps, refs) == local.score(hyps, refs) == expected[:40]
    # The TRL reward-function form, conversational completions included.
    completions = [[{"role": "assistant", "content": h}] for h in hyps]
    assert remote(completions=completions, reference=refs) == local(completions=completions, reference=refs)
    remote.close()


# ---------------------------------------------------------------------------------------------
# (d) the CLI refuses to expose an unprotected server
# ---------------------------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "EDITGRPO_REWARD_TOKEN"}
    return subprocess.run(
        [*editgrpo_command(), *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**clean, **(env or {})},
        timeout=60,
    )


def test_cli_refuses_a_non_loopback_host_without_a_token() -> None:
    result = run_cli("serve-rewards", "--host", "0.0.0.0", "--port", str(free_port()))
    assert result.returncode == 2, result.stderr
    assert "refusing to bind '0.0.0.0' without a token" in result.stderr
    assert "EDITGRPO_REWARD_TOKEN" in result.stderr and "Traceback" not in result.stderr


def test_cli_reports_a_busy_port_and_a_wrong_recipe_stage(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run_cli("serve-rewards", "--port", str(taken.getsockname()[1]))
    assert result.returncode == 2 and "cannot listen on 127.0.0.1:" in result.stderr, result.stderr
    recipe = tmp_path / "sft.yaml"
    recipe.write_text("stage: sft\n", encoding="utf-8")
    result = run_cli("serve-rewards", "--config", str(recipe))
    assert result.returncode == 2 and "this command needs a 'rl' recipe" in result.stderr


# ---------------------------------------------------------------------------------------------
# (e) the client against no server at all
# ---------------------------------------------------------------------------------------------


def test_client_gives_up_quickly_on_a_dead_port() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    started = time.perf_counter()
    client = RewardClient(dead, retries=2, backoff_s=0.01, timeout_s=2)
    with client, pytest.raises(RewardServerError) as info:
        client.score(["Mild cardiomegaly."], [HAND_WRITTEN[0]])
    message = str(info.value)
    assert dead in message and "3 attempt(s)" in message and "ConnectError" in message
    assert info.value.attempts == 3 and info.value.status is None
    assert client.stats.samples == 0  # nothing was scored, so nothing was counted
    assert time.perf_counter() - started < 2
