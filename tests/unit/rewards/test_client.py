"""RewardClient's retry policy against servers that misbehave in known ways, on loopback.

The misbehaving servers are plain sockets and stdlib ``http.server`` handlers: they stand in for
a restarting or overloaded reward server (5xx, then an answer; a server that never answers), which
the real server cannot be made to do on cue. The real server's own 4xx / 503 / dead-port cases are
in ``test_server.py``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from editgrpo.config import RewardConfig
from editgrpo.rewards.client import RewardClient, RewardServerError, build_reward_scorer
from editgrpo.rewards.composite import CompositeReward, RewardResult

ANSWER = {"results": [{"total": 2.5, "components": {"ratescore": 0.5, "chexbert_micro14": None}}]}


@contextlib.contextmanager
def scripted_server(statuses: list[int]) -> Iterator[tuple[str, list[dict]]]:
    """Answers the n-th request with ``statuses[n]`` (the last one repeats); a 200 carries
    ``ANSWER``, anything else ``{"error": ...}``. Yields its URL and the request bodies seen."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            status = statuses[min(len(seen), len(statuses)) - 1]
            body = json.dumps(ANSWER if status == 200 else {"error": f"scripted {status}"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_5xx_answers_are_retried_until_an_answer_comes() -> None:
    with (
        scripted_server([503, 500, 200]) as (url, seen),
        RewardClient(url, retries=3, backoff_s=0.01) as client,
    ):
        (result,) = client.score(["Mild cardiomegaly."], ["Cardiomegaly."])
    assert result == RewardResult(2.5, {"ratescore": 0.5, "chexbert_micro14": None})
    assert len(seen) == 3 and client.retries_used == 2
    assert seen[0] == {"pairs": [{"hyp": "Mild cardiomegaly.", "ref": "Cardiomegaly."}]}
    assert (
        client.stats.samples == 1
        and client.stats.partial == 1
        and client.stats.failures["chexbert_micro14"] == 1
    )


def test_persistent_5xx_raise_with_url_attempts_and_last_error() -> None:
    with (
        scripted_server([502]) as (url, seen),
        RewardClient(url, retries=2, backoff_s=0.01) as client,
        pytest.raises(RewardServerError) as info,
    ):
        client.score(["a"], ["b"])
    assert str(info.value) == (
        f"reward server {url}: POST /v1/score failed after 3 attempt(s); last error: HTTP 502: scripted 502"
    )
    assert len(seen) == 3 and info.value.status == 502


def test_4xx_is_not_retried() -> None:
    with (
        scripted_server([422, 200]) as (url, seen),
        RewardClient(url, retries=3, backoff_s=0.01) as client,
        pytest.raises(RewardServerError, match="refused \\(HTTP 422: scripted 422\\); not retried"),
    ):
        client.score(["a"], ["b"])
    assert len(seen) == 1


def test_a_server_that_never_answers_times_out_and_is_retried() -> None:
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and says nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.perf_counter()
        client = RewardClient(url, timeout_s=0.2, retries=1, backoff_s=0.01)
        with client, pytest.raises(RewardServerError, match=r"after 2 attempt\(s\); last error: ReadTimeout"):
            client.score(["a"], ["b"])
    assert time.perf_counter() - started < 3


def test_scoring_rules_match_the_in_process_reward_without_a_request() -> None:
    """Argument checks happen before any request: a length mismatch is ValueError, an empty
    call returns [] (the server would refuse an empty batch), a bad URL fails at construction."""
    client = RewardClient("http://127.0.0.1:9", retries=0)
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        client.score(["a", "b"], ["c"])
    assert client.score([], []) == [] and client.analyze([]) == []
    with pytest.raises(ValueError, match="must start with http:// or https://"):
        RewardClient("127.0.0.1:8765")
    assert "token" not in repr(RewardClient("http://127.0.0.1:9", token="secret"))


def test_large_calls_are_split_into_requests_of_the_server_limit() -> None:
    """The scripted server answers one result per request, so two pairs need two requests."""
    with scripted_server([200]) as (url, seen), RewardClient(url, max_pairs_per_request=1) as client:
        assert len(client.score(["a", "b"], ["c", "d"])) == 2
        with pytest.raises(RewardServerError, match="malformed answer \\(expected 'results' with 2 items\\)"):
            RewardClient(url).score(["a", "b"], ["c", "d"])  # one answer for two pairs: refused
    assert [len(body["pairs"]) for body in seen] == [1, 1, 2]


def test_build_reward_scorer_in_process_and_its_config_errors() -> None:
    assert isinstance(build_reward_scorer(RewardConfig()), CompositeReward)
    config = RewardConfig()
    config.scoring = "server"  # set after validation: the builder checks again
    with pytest.raises(ValueError, match="server_url is empty"):
        build_reward_scorer(config)
