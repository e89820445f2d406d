"""The GREEN judge: an LLM that reads a GREEN prompt and writes its error analysis (raw text).

Two backends, each ``generate(prompts) -> list[str]`` (one raw output per prompt, in order):

- ``transformers``: ``AutoModelForCausalLM`` + ``AutoTokenizer`` from a local folder or a hub id
  (default ``StanfordAIMI/GREEN-RadLlama2-7b``), batched greedy decoding with left padding.
- ``openai``: any OpenAI-compatible server (vLLM's ``vllm serve``, a hosted API) through
  ``/v1/chat/completions`` or ``/v1/completions``, with timeouts and bounded retries.

Prompts come from ``metrics.green.build_green_prompt`` and outputs go to
``metrics.green.parse_green_output``; ``metrics.green.judge(backend, references, candidates)`` wires
the three (this layer may not import metrics, ARCHITECTURE.md "Layers").

Upstream protocol (Stanford-AIMI/GREEN at d72c195, ``green_score/green.py``, ``GREEN.__init__`` and
``get_response``): the tokenizer is loaded with ``add_eos_token=True`` and ``padding_side="left"``,
its pad token is set to its eos token, and each prompt is rendered with a fixed chat template
(``GREEN_CHAT_TEMPLATE``) from the messages ``[{"from": "human", "value": prompt}, {"from": "gpt",
"value": ""}]`` with ``add_generation_prompt=True``, which gives ``format_green_chat`` below; inputs
are cut at 2048 tokens; decoding is greedy (``do_sample=False``) in float16 on the GPU. Upstream
decodes the prompt with the completion and cuts it at ``<|assistant|>``; we decode only the new
tokens. Upstream bounds the total length at 2048 tokens (``max_length=2048``); we bound the new
tokens (``max_new_tokens``). Upstream loads with ``trust_remote_code=True``; we do not (the judge
is a stock Llama).
"""

from __future__ import annotations

import inspect
import os
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from editgrpo.errors import UserError

DEFAULT_MODEL = "StanfordAIMI/GREEN-RadLlama2-7b"
MAX_INPUT_TOKENS = 2048  # GREEN.max_length: tokenizer truncation of the chat-formatted prompt

# GREEN.__init__'s chat template (messages use "from"/"value", not "role"/"content").
GREEN_CHAT_TEMPLATE = (
    "{% for message in messages %}\n{% if message['from'] == 'human' %}\n"
    "{{ '<|user|>\n' + message['value'] + eos_token }}\n{% elif message['from'] == 'system' %}\n"
    "{{ '<|system|>\n' + message['value'] + eos_token }}\n{% elif message['from'] == 'gpt' %}\n"
    "{{ '<|assistant|>\n'  + message['value'] + eos_token }}\n{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def format_green_chat(prompt: str, eos_token: str = "</s>") -> str:
    """The text GREEN's chat template renders (jinja with transformers' trim_blocks / lstrip_blocks)
    for ``[human: prompt, gpt: ""]`` plus the generation prompt; ``</s>`` is Llama-2's eos."""
    return f"<|user|>\n{prompt}{eos_token}\n<|assistant|>\n{eos_token}\n<|assistant|>\n"


def _check_prompts(prompts: Sequence[str]) -> None:
    if isinstance(prompts, str):
        raise TypeError("generate() takes a sequence of prompts, not one string")
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
    if bad:
        raise TypeError(f"prompts must be strings; entry {bad[0]} is {type(prompts[bad[0]]).__name__}")


class TransformersJudge:
    """The judge model from ``model`` (a folder written by ``save_pretrained`` or a hub id), run with
    Hugging Face ``generate``: batches of ``batch_size`` prompts, left padding, greedy decoding of at
    most ``max_new_tokens`` tokens. ``device`` defaults to cuda when available, else cpu; ``dtype``
    (a torch dtype name) to float16 on cuda (as upstream) and float32 on cpu."""

    name = "transformers"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 8,
        max_new_tokens: int = 1024,
        max_input_tokens: int = MAX_INPUT_TOKENS,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if max_input_tokens < 1:
            raise ValueError(f"max_input_tokens must be >= 1, got {max_input_tokens}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype_name = dtype or ("float16" if self.device.type == "cuda" else "float32")
        torch_dtype = getattr(torch, dtype_name, None)
        if not isinstance(torch_dtype, torch.dtype):
            raise UserError(f"GREEN judge dtype {dtype_name!r} is not a torch dtype (e.g. float16, bfloat16)")
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.max_input_tokens = max_input_tokens
        self.model_name = _check_model_name(model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                self.model_name, add_eos_token=True, padding_side="left"
            )
            self.model = AutoModelForCausalLM.from_pretrained(self.model_name, dtype=torch_dtype)
        except (OSError, ValueError) as err:  # missing folder/files, no network, unknown architecture
            raise UserError(
                f"cannot load the GREEN judge {self.model_name!r} with transformers: {err}. Give a folder "
                f"written by save_pretrained (model and tokenizer) or a hub id (default {DEFAULT_MODEL!r})"
            ) from err
        if self.tokenizer.eos_token is None:
            raise UserError(f"the tokenizer of GREEN judge {self.model_name!r} has no eos token")
        self.tokenizer.padding_side = "left"  # decoder-only batching: new tokens follow every prompt
        self.tokenizer.pad_token = self.tokenizer.eos_token  # as upstream
        self.model.to(self.device).eval()

    def generate(self, prompts: Sequence[str]) -> list[str]:
        """One raw output per prompt (the new tokens decoded without special tokens), in order."""
        import torch

        _check_prompts(prompts)
        texts = [format_green_chat(p, self.tokenizer.eos_token) for p in prompts]
        outputs: list[str] = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    texts[start : start + self.batch_size],
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=self.max_input_tokens,
                ).to(self.device)
                generated = self.model.generate(
                    input_ids=batch["input_ids"],  # (B, T), left padded
                    attention_mask=batch["attention_mask"],  # (B, T)
                    eos_token_id=self.tokenizer.eos_token_id,
                    pad_token_id=self.tokenizer.pad_token_id,
                    do_sample=False,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    max_new_tokens=self.max_new_tokens,
                )  # (B, T + new)
                new_tokens = generated[:, batch["input_ids"].shape[1] :]  # (B, new)
                outputs.extend(self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
        return outputs


def _check_model_name(model: str | Path) -> str:
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path)
    name = str(model)
    if path.exists() or not _HUB_ID_RE.match(name):
        raise UserError(
            f"GREEN judge model {name!r} is neither a model folder nor a hub id: give a folder written by "
            f"save_pretrained or a hub id such as {DEFAULT_MODEL!r}"
        )
    return name


ENDPOINTS = ("chat", "completions")
_RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class OpenAIJudge:
    """The judge behind an OpenAI-compatible server, e.g. ``vllm serve StanfordAIMI/GREEN-RadLlama2-7b``.

    ``base_url`` is the API root including ``/v1`` (``http://127.0.0.1:8000/v1``); ``model`` the served
    model name. ``endpoint="completions"`` sends GREEN's own chat text (``format_green_chat`` with
    ``eos_token``), the upstream input of the GREEN models; ``endpoint="chat"`` sends one user message
    and leaves the chat template to the server (for general LLMs as judges). The API key is read from
    the environment variable ``api_key_env`` when it is set (none is sent otherwise). Greedy
    (temperature 0), at most ``max_new_tokens`` tokens, ``concurrency`` requests in flight. A request
    that fails to connect, times out (``timeout_s``) or gets 408/409/425/429/5xx is retried
    ``max_retries`` times after ``backoff_s * 2**k`` seconds; then a UserError names the URL and the
    last failure. Other 4xx answers fail at once.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000/v1",
        model: str = DEFAULT_MODEL,
        endpoint: str = "completions",
        api_key_env: str = "OPENAI_API_KEY",
        max_new_tokens: int = 1024,
        timeout_s: float = 120.0,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        concurrency: int = 8,
        eos_token: str = "</s>",
    ) -> None:
        if endpoint not in ENDPOINTS:
            raise UserError(f"GREEN judge endpoint {endpoint!r} is not one of: {', '.join(ENDPOINTS)}")
        if not re.match(r"^https?://", base_url):
            raise UserError(f"GREEN judge base_url {base_url!r} must start with http:// or https://")
        for field, value, low in (
            ("max_new_tokens", max_new_tokens, 1),
            ("max_retries", max_retries, 0),
            ("concurrency", concurrency, 1),
        ):
            if value < low:
                raise ValueError(f"{field} must be >= {low}, got {value}")
        if timeout_s <= 0 or backoff_s < 0:
            raise ValueError(f"timeout_s must be > 0 and backoff_s >= 0, got {timeout_s} and {backoff_s}")
        self.base_url = base_url.rstrip("/")
        self.model_name = model
        self.endpoint = endpoint
        self.api_key_env = api_key_env
        self.max_new_tokens = max_new_tokens
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.concurrency = concurrency
        self.eos_token = eos_token

    @property
    def url(self) -> str:
        return f"{self.base_url}/{'chat/completions' if self.endpoint == 'chat' else 'completions'}"

    def _payload(self, prompt: str) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model_name,
            "max_tokens": self.max_new_tokens,
            "temperature": 0,
        }
        if self.endpoint == "chat":
            payload["messages"] = [{"role": "user", "content": prompt}]
        else:
            payload["prompt"] = format_green_chat(prompt, self.eos_token)
        return payload

    def generate(self, prompts: Sequence[str]) -> list[str]:
        """One raw output per prompt, in order (an empty string when the server returns no text)."""
        import httpx

        _check_prompts(prompts)
        if not prompts:
            return []
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        with (
            httpx.Client(timeout=self.timeout_s, headers=headers) as client,
            ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts))) as pool,
        ):
            return list(pool.map(lambda p: self._request(client, p), prompts))

    def _request(self, client: Any, prompt: str) -> str:
        import httpx

        payload = self._payload(prompt)
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = client.post(self.url, json=payload)
            except httpx.TransportError as err:  # refused, reset, timed out
                last = f"{type(err).__name__}: {err}"
                continue
            if response.status_code in _RETRY_STATUS:
                last = f"HTTP {response.status_code}: {response.text[:300]}"
                continue
            if response.status_code >= 400:
                raise UserError(
                    f"GREEN judge at {self.url} answered HTTP {response.status_code}: {response.text[:300]}"
                    f" (model {self.model_name!r}; check the model name, endpoint and API key in "
                    f"${self.api_key_env})"
                )
            return self._text(response)
        raise UserError(
            f"GREEN judge at {self.url} failed after {self.max_retries + 1} attempts; last: {last}. "
            "Check that the server is running and base_url points at its /v1 root"
        )

    def _text(self, response: Any) -> str:
        try:
            choice = response.json()["choices"][0]
            text = choice["message"]["content"] if self.endpoint == "chat" else choice["text"]
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise UserError(
                f"GREEN judge at {self.url} answered without an OpenAI-style choice ({err!r}): "
                f"{response.text[:300]}"
            ) from err
        return text if isinstance(text, str) else ""


BACKENDS: dict[str, type] = {"transformers": TransformersJudge, "openai": OpenAIJudge}


def build_judge(backend: str, **options: Any) -> TransformersJudge | OpenAIJudge:
    """The judge backend named ``backend`` (one of ``BACKENDS``) built with ``options``."""
    if backend not in BACKENDS:
        raise UserError(f"unknown GREEN judge backend {backend!r}; valid: {', '.join(sorted(BACKENDS))}")
    cls = BACKENDS[backend]
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise UserError(
            f"GREEN judge backend {backend!r} has no option {', '.join(map(repr, unknown))}; valid: "
            f"{', '.join(valid)}"
        )
    return cls(**options)
