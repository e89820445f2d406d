"""The reward server and its users against hostile input: half-sent requests, oversize and
malformed requests, weak tokens, and a trainer whose reward server is gone.

Everything is real: the server is uvicorn on a free 127.0.0.1 port (``thread_server``, with the
connection deadlines ``serve-rewards`` runs with) or ``editgrpo serve-rewards`` / ``editgrpo
train`` in a subprocess; half requests are written byte by byte on a plain socket. Every answer
is checked for a status, a message that names the limit or option to change, and no traceback.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from editgrpo.rewards.client import RewardClient, RewardServerError
from editgrpo.rewards.composite import CompositeReward
from editgrpo.rewards.server import RewardService, ServerLimits
from fixtures.commands import ROOT, editgrpo
from fixtures.servers import thread_server

TOKEN = "robustness-token-0123456789"
TOKEN_ENV = "EDITGRPO_ROBUSTNESS_TOKEN"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REPORT = "Mild cardiomegaly. Small left pleural effusion. No pneumothorax."
# Short deadlines so a stalled connection is seen closing within a second.
HEADER_S, BODY_S = 0.5, 0.5


def assert_no_traceback(text: str) -> None:
    assert "Traceback" not in text and 'File "' not in text, text[-2000:]


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    limits = ServerLimits(
        header_timeout_s=HEADER_S,
        body_timeout_s=BODY_S,
        max_request_chars=50_000,
        max_items=64,
        max_text_chars=10_000,
        max_body_bytes=256 * 1024,
    )
    with thread_server(RewardService(CompositeReward(), limits=limits, token=TOKEN)) as address:
        yield address


def metrics(url: str) -> dict:
    return httpx.get(f"{url}/metrics.json", headers=AUTH, timeout=10).json()


def still_serves(url: str) -> None:
    """A normal request right after the hostile one is answered in full."""
    answer = httpx.post(
        f"{url}/v1/score", json={"pairs": [{"hyp": REPORT, "ref": REPORT}]}, headers=AUTH, timeout=30
    )
    assert answer.status_code == 200 and answer.json()["results"][0]["total"] > 0


# ---------------------------------------------------------------------------------------------
# Half requests on a raw socket
# ---------------------------------------------------------------------------------------------


def raw_exchange(
    url: str, chunks: list[bytes], pause_s: float = 0.0, wait_s: float = 10.0
) -> tuple[bytes, float]:
    """Connect, write ``chunks`` (``pause_s`` apart, stopping if the server closes), then read
    until the server closes the connection; (everything it sent, seconds from connecting to its
    close). Fails if the server keeps the connection open for ``wait_s``."""
    host, port = url.removeprefix("http://").split(":")
    received = b""
    with socket.create_connection((host, int(port)), timeout=wait_s) as sock:
        started = time.monotonic()
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(pause_s)
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                raise AssertionError(f"the server kept a stalled connection open for {wait_s}s") from None
            except ConnectionResetError:
                break
            if not data:
                break
            received += data
        return received, time.monotonic() - started


def split_response(data: bytes) -> tuple[int, dict]:
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"connection: close" in head.lower(), head
    return status, json.loads(body)


def test_a_connection_that_sends_nothing_is_answered_408_and_closed(url: str) -> None:
    before = metrics(url)["connection_timeouts"]["header"]
    data, seconds = raw_exchange(url, [])
    status, body = split_response(data)
    assert status == 408 and "--header-timeout" in body["error"]
    assert HEADER_S <= seconds < HEADER_S + 3
    assert metrics(url)["connection_timeouts"]["header"] == before + 1
    still_serves(url)


def test_half_sent_headers_are_answered_408_and_closed(url: str) -> None:
    data, seconds = raw_exchange(url, [b"POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le"])
    status, body = split_response(data)
    assert status == 408 and "headers did not arrive within 0.5 s" in body["error"]
    assert HEADER_S <= seconds < HEADER_S + 3
    assert_no_traceback(data.decode())
    still_serves(url)


def test_headers_trickled_byte_by_byte_still_meet_the_deadline(url: str) -> None:
    """Slowloris: each byte resets no clock, the headers' deadline counts from the first byte."""
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 200 + b"\r\n\r\n"
    data, seconds = raw_exchange(url, [bytes([b]) for b in request], pause_s=0.02)
    assert split_response(data)[0] == 408
    assert seconds < HEADER_S + 3  # closed at the deadline, not after the 4+ s the trickle takes


def test_a_half_sent_body_is_answered_408_and_closed(url: str) -> None:
    before = metrics(url)
    head = (
        b"POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: 1000\r\n\r\n"
    )
    data, seconds = raw_exchange(url, [head, b'{"pairs": [{"hyp": "Mild'])
    status, body = split_response(data)
    assert status == 408 and "body did not arrive within 0.5 s" in body["error"]
    assert "--body-timeout" in body["error"]
    assert BODY_S <= seconds < BODY_S + 3
    after = metrics(url)
    assert after["connection_timeouts"]["body"] == before["connection_timeouts"]["body"] + 1
    score = after["requests"]["POST /v1/score"]
    assert score.get("408", 0) == before["requests"].get("POST /v1/score", {}).get("408", 0) + 1
    still_serves(url)


def test_a_body_trickled_for_longer_than_the_deadline_is_cut(url: str) -> None:
    body = json.dumps({"pairs": [{"hyp": REPORT, "ref": REPORT}]}).encode()
    head = (
        b"POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    data, seconds = raw_exchange(
        url, [head, *[body[i : i + 4] for i in range(0, len(body), 4)]], pause_s=0.05
    )
    assert split_response(data)[0] == 408
    assert seconds < BODY_S + 3


def test_a_kept_alive_connection_that_stalls_in_its_second_request_is_closed(url: str) -> None:
    first = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    data, _ = raw_exchange(url, [first, b"GET /healthz HTTP/1.1\r\nHo"], pause_s=0.2)
    answers = data.split(b"HTTP/1.1 ")[1:]
    assert len(answers) == 2, data
    assert answers[0].startswith(b"200") and answers[1].startswith(b"408")


def test_stalled_connections_do_not_hold_up_other_clients() -> None:
    """Ten half-sent requests held open; a normal client is answered meanwhile, while all ten are
    still waiting for their deadline (5 s here, so a busy machine cannot make this flaky)."""
    service = RewardService(CompositeReward(), limits=ServerLimits(header_timeout_s=5.0))
    with thread_server(service) as address:
        host, port = address.removeprefix("http://").split(":")
        stalled = [socket.create_connection((host, int(port)), timeout=5) for _ in range(10)]
        try:
            for sock in stalled:
                sock.sendall(b"POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            answer = httpx.post(
                f"{address}/v1/score", json={"pairs": [{"hyp": REPORT, "ref": REPORT}]}, timeout=30
            )
            assert answer.status_code == 200 and answer.json()["results"][0]["total"] > 0
            for sock in stalled:  # nothing received yet: the stalled connections are still open
                sock.setblocking(False)
                with pytest.raises(BlockingIOError):
                    sock.recv(1)
        finally:
            for sock in stalled:
                sock.close()


def test_a_request_that_takes_longer_to_score_than_the_deadlines_is_not_cut() -> None:
    """The deadlines are for receiving; scoring a complete request takes what it takes."""
    limits = ServerLimits(header_timeout_s=0.05, body_timeout_s=0.05)
    long = " ".join([REPORT] * 62)[:4_000]  # 12 pairs of 4,000 characters: 0.3 s or more on 2 cores
    pairs = [{"hyp": long, "ref": long[::-1]} for _ in range(12)]
    with thread_server(RewardService(CompositeReward(), limits=limits)) as address:
        began = time.monotonic()
        answer = httpx.post(f"{address}/v1/score", json={"pairs": pairs}, timeout=60)
        elapsed = time.monotonic() - began
    assert answer.status_code == 200 and len(answer.json()["results"]) == 12
    if elapsed < 0.1:
        pytest.skip(f"scoring took {elapsed:.3f}s, within the deadlines: nothing shown")


# ---------------------------------------------------------------------------------------------
# Oversize and malformed requests
# ---------------------------------------------------------------------------------------------

OVERSIZE = [
    # (body, status, the limit, the option that raises it)
    ({"pairs": [{"hyp": "x" * 9_000, "ref": "y" * 9_000}] * 3}, 413, "50,000", "--max-request-chars"),
    ({"pairs": [{"hyp": "a", "ref": "b"}] * 65}, 422, "64", "--max-pairs"),
    ({"pairs": [{"hyp": "x" * 10_001, "ref": "b"}]}, 422, "10,000", "--max-text-chars"),
    ({"texts": ["x" * 9_000] * 6}, 413, "50,000", "--max-request-chars"),
]


@pytest.mark.parametrize(("body", "status", "limit", "option"), OVERSIZE, ids=[o for *_, o in OVERSIZE])
def test_oversize_requests_name_the_limit_and_its_option(
    url: str, body: dict, status: int, limit: str, option: str
) -> None:
    route = "/v1/analyze" if "texts" in body else "/v1/score"
    answer = httpx.post(f"{url}{route}", json=body, headers=AUTH, timeout=30)
    assert answer.status_code == status
    message = answer.json()["error"]
    assert limit in message and f"serve-rewards {option}" in message
    assert_no_traceback(answer.text)
    still_serves(url)


def test_an_oversize_body_names_max_body_bytes(url: str) -> None:
    answer = httpx.post(f"{url}/v1/score", content=b" " * (300 * 1024), headers=AUTH, timeout=30)
    assert answer.status_code == 413 and "--max-body-bytes" in answer.json()["error"]


def test_the_client_reports_a_413_once_without_retrying(url: str) -> None:
    before = metrics(url)["requests"]["POST /v1/score"].get("413", 0)
    hyps = ["x" * 9_000] * 3
    with (
        RewardClient(url, token=TOKEN, retries=3, backoff_s=0.01) as client,
        pytest.raises(RewardServerError) as info,
    ):
        client.score(hyps, ["y" * 9_000] * 3)
    assert info.value.status == 413 and info.value.attempts == 1 and client.retries_used == 0
    assert "--max-request-chars" in str(info.value) and url in str(info.value)
    assert metrics(url)["requests"]["POST /v1/score"]["413"] == before + 1


def test_the_client_splits_a_call_to_fit_the_work_bound(url: str) -> None:
    """A call over the server's bound, sent in requests under it, gives the in-process scores."""
    hyps = [" ".join([REPORT] * 40)[: 4_000 + i] for i in range(12)]  # 12 x ~8,000 characters per pair
    refs = [REPORT * 60 for _ in hyps]
    refs = [r[:4_000] for r in refs]
    with RewardClient(url, token=TOKEN, max_chars_per_request=50_000) as client:
        before = metrics(url)["requests"]["POST /v1/score"]["200"]
        assert client.score(hyps, refs) == CompositeReward().score(hyps, refs)
    assert metrics(url)["requests"]["POST /v1/score"]["200"] - before == 2  # 96,000+ chars: 2 requests


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["pairs", "hyp", "ref", "texts", "vectors", "x"]) | st.text(max_size=5),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=JSON_VALUES, route=st.sampled_from(["/v1/score", "/v1/analyze"]))
def test_any_json_body_is_answered_with_a_result_or_a_4xx_message(url: str, body: object, route: str) -> None:
    answer = httpx.post(f"{url}{route}", json=body, headers=AUTH, timeout=30)
    assert answer.status_code in (200, 400, 413, 422), answer.text
    assert_no_traceback(answer.text)
    if answer.status_code != 200:
        assert answer.json()["error"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=200))
def test_any_bytes_are_answered_with_a_result_or_a_4xx_message(url: str, body: bytes) -> None:
    answer = httpx.post(f"{url}/v1/score", content=body, headers=AUTH, timeout=30)
    assert answer.status_code in (400, 422), answer.text
    assert_no_traceback(answer.text)
    assert answer.json()["error"]


@pytest.mark.parametrize(
    "head",
    [
        b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"POST /v1/score HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"NOT-HTTP\r\n\r\n",
    ],
)
def test_broken_http_is_refused_with_400_and_no_traceback(url: str, head: bytes) -> None:
    data, _ = raw_exchange(url, [head])
    assert data.startswith(b"HTTP/1.1 400"), data
    assert_no_traceback(data.decode("latin-1"))
    still_serves(url)


# ---------------------------------------------------------------------------------------------
# Start-up refusals: tokens and limits
# ---------------------------------------------------------------------------------------------


def serve(*args: str, token: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EDITGRPO_REWARD_TOKEN"}
    if token is not None:
        env["EDITGRPO_REWARD_TOKEN"] = token
    return subprocess.run(
        [*_command(), "serve-rewards", "--port", "0", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
        timeout=timeout,
    )


def _command() -> list[str]:
    import shutil
    import sys

    exe = shutil.which("editgrpo", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "editgrpo.cli"]


@pytest.mark.parametrize(
    ("args", "token", "message"),
    [
        (("--host", "0.0.0.0"), "x", "1-character token"),
        (("--host", "0.0.0.0"), "fifteen-chars-x", "15-character token"),
        (("--host", "::"), "short", "5-character token"),
        (("--host", "0.0.0.0", "--token", "abc"), None, "3-character token"),
        (("--host", "0.0.0.0"), "sixteen chars with spaces", "holds a space"),
        (("--header-timeout", "0"), None, "--header-timeout"),
        (("--body-timeout", "nan"), None, "--body-timeout"),
        (("--max-request-chars", "-1"), None, "--max-request-chars"),
        (("--max-batch-chars", "0"), None, "--max-batch-chars"),
    ],
)
def test_serve_rewards_refuses_weak_tokens_and_bad_limits_at_start(
    args: tuple, token: str | None, message: str
) -> None:
    result = serve(*args, token=token)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert_no_traceback(result.stderr)
    if token and "character token" in message:
        if len(token) >= 5:  # (a 1-character token appears in any message)
            assert token not in result.stderr  # the secret is never echoed
        assert "at least 16 characters" in result.stderr and "EDITGRPO_REWARD_TOKEN" in result.stderr


def test_a_16_character_token_is_enough_for_any_address() -> None:
    process = subprocess.Popen(
        [*_command(), "serve-rewards", "--port", "0", "--host", "0.0.0.0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "EDITGRPO_REWARD_TOKEN": "sixteen-chars-ok"},
    )
    try:
        line = process.stdout.readline()
        assert "serving rewards on http://0.0.0.0:" in line and "token required" in line, (
            process.stderr.read()
        )
    finally:
        process.terminate()
        process.wait(10)


# ---------------------------------------------------------------------------------------------
# A trainer whose reward server is gone, or refuses it
# ---------------------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train(*overrides: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return editgrpo(
        "train",
        str(ROOT / "recipes" / "cpu_smoke.yaml"),
        "reward.scoring=server",
        "reward.retries=1",
        *overrides,
        env={TOKEN_ENV: "", **(env or {})},
        timeout=120,
    )


def test_train_against_a_closed_port_ends_with_the_url_and_the_fix() -> None:
    server_url = f"http://127.0.0.1:{closed_port()}"
    began = time.monotonic()
    result = train(f"reward.server_url={server_url}", f"reward.server_token_env={TOKEN_ENV}")
    assert result.returncode == 2, result.stderr
    assert_no_traceback(result.stderr)
    assert server_url in result.stderr and "ConnectError" in result.stderr
    assert "editgrpo serve-rewards" in result.stderr and "reward.scoring=inprocess" in result.stderr
    assert time.monotonic() - began < 60  # found before any model is loaded


def test_train_with_a_wrong_or_missing_token_names_the_variable(url: str) -> None:
    for token, cause in (
        ("wrong-token-wrong-token", "HTTP 403: the bearer token is wrong"),
        ("", "needs a bearer token"),
    ):
        result = train(
            f"reward.server_url={url}", f"reward.server_token_env={TOKEN_ENV}", env={TOKEN_ENV: token}
        )
        assert result.returncode == 2, result.stderr
        assert_no_traceback(result.stderr)
        assert url in result.stderr and cause in result.stderr
        assert f"set the environment variable {TOKEN_ENV}" in result.stderr


def test_a_reward_server_that_refuses_during_training_ends_it_with_a_message(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The server passes the start-up check but refuses the first rollouts' scoring (its work
    bound is below one step's texts): the run ends with exit 2 and a message, not a traceback
    from inside TRL."""
    from editgrpo.data.synth import SynthConfig, write_synthcxr

    write_synthcxr(tmp_path / "synth", SynthConfig(n=8, seed=3, image_size=64))
    service = RewardService(CompositeReward(), limits=ServerLimits(max_request_chars=10), token=TOKEN)
    with thread_server(service) as server_url:
        result = train(
            f"reward.server_url={server_url}",
            f"reward.server_token_env={TOKEN_ENV}",
            f"model.name_or_path={tiny_model_dir}",
            f"data.train={tmp_path / 'synth' / 'train.jsonl'}",
            "data.eval=null",  # no clinical validation: the run must fail on scoring
            f"output_dir={tmp_path / 'run'}",
            "max_steps=1",
            "prompts_per_step=2",
            "rollout.max_completion_length=8",
            "edit.enabled=false",
            "progress_bar=false",
            env={TOKEN_ENV: TOKEN},
        )
    assert result.returncode == 2, result.stderr[-3000:]
    assert_no_traceback(result.stderr)
    assert "failed during training" in result.stderr and "--max-request-chars" in result.stderr
    assert "--resume" in result.stderr
