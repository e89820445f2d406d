"""GREEN judge backends: a tiny random-weight Llama through ``transformers``, and a real HTTP server on
127.0.0.1 through the OpenAI-compatible backend."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from editgrpo.annotators.green_judge import (
    BACKENDS,
    GREEN_CHAT_TEMPLATE,
    OpenAIJudge,
    TransformersJudge,
    build_judge,
    format_green_chat,
)
from editgrpo.errors import UserError
from editgrpo.metrics.green import GreenParse, build_green_prompt, green_summary, judge

CANNED = (
    "The candidate misses the effusion.\n\n[Clinically Significant Errors]:\n"
    "(a) False report of a finding in the candidate: 0.\n"
    "(b) Missing a finding present in the reference: 1. Pleural effusion.\n"
    "(c) Misidentification of a finding's anatomic location/position: 0.\n"
    "(d) Misassessment of the severity of a finding: 0.\n"
    "(e) Mentioning a comparison that isn't in the reference: 0.\n"
    "(f) Omitting a comparison detailing a change from a prior study: 0.\n\n"
    "[Clinically Insignificant Errors]:\nNo errors.\n\n"
    "[Matched Findings]:\n1. Normal heart size."
)
CANNED_PARSE = GreenParse(significant=(0, 1, 0, 0, 0, 0), insignificant=(0,) * 6, matched=1)


# --- transformers backend on a tiny random-weight Llama -------------------------------------------


@pytest.fixture(scope="module")
def tiny_judge_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from editgrpo.models.tiny import default_corpus, train_tokenizer

    tokenizer = train_tokenizer(default_corpus(), 400)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("tiny_green_judge")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_chat_text_matches_the_upstream_template(tiny_judge_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_judge_dir)
    for prompt in ("P Q", build_green_prompt("Heart normal.", "Cardiomegaly.")):
        rendered = tokenizer.apply_chat_template(
            [{"from": "human", "value": prompt}, {"from": "gpt", "value": ""}],
            chat_template=GREEN_CHAT_TEMPLATE,
            tokenize=False,
            add_generation_prompt=True,
        )
        assert rendered == format_green_chat(prompt, tokenizer.eos_token)


def test_transformers_backend_end_to_end(tiny_judge_dir: Path) -> None:
    backend = TransformersJudge(str(tiny_judge_dir), device="cpu", batch_size=2, max_new_tokens=6)
    assert backend.tokenizer.padding_side == "left"
    assert backend.tokenizer.pad_token == backend.tokenizer.eos_token
    references = ["Heart size normal. No effusion.", "Mild cardiomegaly.", "Left basilar atelectasis."]
    candidates = ["Heart size normal.", "No acute findings. " * 5, "Right pneumothorax."]
    prompts = [build_green_prompt(r, c) for r, c in zip(references, candidates, strict=True)]
    outputs = backend.generate(prompts)
    assert len(outputs) == 3 and all(isinstance(o, str) for o in outputs) and any(outputs)
    # left padding: the prompt padded in a batch of 2 decodes as it does alone (greedy, float32)
    assert backend.generate(prompts[:1]) == outputs[:1]
    assert backend.generate(prompts[1:2]) == outputs[1:2]
    assert backend.generate([]) == []

    parses = judge(backend, references, candidates)  # random weights write no GREEN sections
    assert parses == [None, None, None]
    assert green_summary(parses)["n_unparsable"] == 3 and green_summary(parses)["n_parsed"] == 0


def test_transformers_backend_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="neither a model folder nor a hub id"):
        TransformersJudge("not a model", device="cpu")
    with pytest.raises(UserError, match="cannot load the GREEN judge"):
        TransformersJudge(str(tmp_path), device="cpu")  # an empty folder
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        TransformersJudge(str(tmp_path), device="cpu", max_new_tokens=0)


# --- openai backend against a real HTTP server on 127.0.0.1 ---------------------------------------


class _Server:
    """A loopback HTTP server answering POSTs from a script of (status, body) pairs; the last entry
    repeats. Records every request (path, headers, JSON body)."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict | str]] = [(200, {})]
        self.requests: list[tuple[str, dict, dict]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append((self.path, dict(self.headers), body))
                    status, answer = server.script.pop(0) if len(server.script) > 1 else server.script[0]
                data = (answer if isinstance(answer, str) else json.dumps(answer)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.close()


def _completion(text: str) -> dict:
    return {"object": "text_completion", "choices": [{"index": 0, "text": text, "finish_reason": "stop"}]}


def _chat(text: str) -> dict:
    return {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
    }


def test_openai_completions_endpoint(server: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREEN_TEST_KEY", "sekret")
    server.script = [(200, _completion(CANNED))]
    backend = OpenAIJudge(
        server.base_url, model="green-judge", api_key_env="GREEN_TEST_KEY", max_new_tokens=64
    )
    parses = judge(backend, ["Heart normal. Effusion.", "Heart normal."], ["Heart normal.", "Heart normal."])
    assert parses == [CANNED_PARSE, CANNED_PARSE]
    path, headers, body = server.requests[0]
    assert path == "/v1/completions"
    assert headers["Authorization"] == "Bearer sekret"
    assert body["model"] == "green-judge" and body["max_tokens"] == 64 and body["temperature"] == 0
    prompts = {b["prompt"] for _, _, b in server.requests}
    assert prompts == {
        format_green_chat(build_green_prompt("Heart normal. Effusion.", "Heart normal.")),
        format_green_chat(build_green_prompt("Heart normal.", "Heart normal.")),
    }


def test_openai_chat_endpoint_without_key(server: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GREEN_TEST_KEY", raising=False)
    server.script = [(200, _chat(CANNED))]
    backend = OpenAIJudge(server.base_url, model="m", endpoint="chat", api_key_env="GREEN_TEST_KEY")
    assert backend.generate(["the prompt"]) == [CANNED]
    path, headers, body = server.requests[0]
    assert path == "/v1/chat/completions" and "Authorization" not in headers
    assert body["messages"] == [{"role": "user", "content": "the prompt"}]


def test_openai_retries_a_500_then_succeeds(server: _Server) -> None:
    server.script = [(500, "overloaded"), (503, "still"), (200, _completion(CANNED))]
    backend = OpenAIJudge(server.base_url, model="m", max_retries=2, backoff_s=0.01)
    assert backend.generate(["p"]) == [CANNED]
    assert len(server.requests) == 3


def test_openai_gives_up_after_the_last_retry(server: _Server) -> None:
    server.script = [(500, "broken")]
    backend = OpenAIJudge(server.base_url, model="m", max_retries=2, backoff_s=0.01)
    with pytest.raises(UserError, match=r"failed after 3 attempts; last: HTTP 500: broken"):
        backend.generate(["p"])
    assert len(server.requests) == 3


def test_openai_client_error_fails_at_once(server: _Server) -> None:
    server.script = [(404, '{"error": "model not found"}')]
    backend = OpenAIJudge(server.base_url, model="nope", max_retries=3, backoff_s=0.01)
    with pytest.raises(UserError, match=r"answered HTTP 404.*model not found"):
        backend.generate(["p"])
    assert len(server.requests) == 1
    server.script = [(200, {"no": "choices"})]
    with pytest.raises(UserError, match="without an OpenAI-style choice"):
        backend.generate(["p"])


def test_openai_dead_port_gives_up_in_bounded_time() -> None:
    with socket.socket() as sock:  # a free loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = OpenAIJudge(
        f"http://127.0.0.1:{port}/v1", model="m", max_retries=2, backoff_s=0.01, timeout_s=2
    )
    start = time.monotonic()
    with pytest.raises(
        UserError, match=r"127\.0\.0\.1:\d+/v1/completions failed after 3 attempts; last: Connect"
    ):
        backend.generate(["p"])
    assert time.monotonic() - start < 10


def test_registry_and_option_errors() -> None:
    assert set(BACKENDS) == {"transformers", "openai"}
    assert isinstance(build_judge("openai", base_url="http://127.0.0.1:1/v1"), OpenAIJudge)
    with pytest.raises(UserError, match="unknown GREEN judge backend 'vllm'; valid: openai, transformers"):
        build_judge("vllm")
    with pytest.raises(UserError, match="has no option 'temperature'; valid: base_url, model"):
        build_judge("openai", temperature=0.7)
    with pytest.raises(UserError, match="endpoint 'responses' is not one of: chat, completions"):
        OpenAIJudge(endpoint="responses")
    with pytest.raises(UserError, match="must start with http"):
        OpenAIJudge(base_url="127.0.0.1:8000/v1")
    with pytest.raises(TypeError, match="not one string"):
        OpenAIJudge().generate("one prompt")  # type: ignore[arg-type]
