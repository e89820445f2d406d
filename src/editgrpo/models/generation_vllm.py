"""Report generation with vLLM's offline engine: the HF path's prompts, vLLM's batching.

``VLLMGenerator`` keeps the call contract of the transformers generator ``editgrpo generate``
builds (``cli._generate``): ``generator(prompts, seed) -> list[str]``, one decoded text per
prompt, where a prompt is anything with ``images`` (PIL, prompt order) and ``text`` (a
``VisualPrompt`` or an ``eval.generate.GenerationPrompt``).

Same input as the HF path: each prompt is rendered by ``generation.render_prompt`` (the one
chat-template rendering both engines use) and its images are handed over in the same order, as one
vLLM request ``{"prompt": text, "multi_modal_data": {"image": [PIL, ...]}}``; vLLM's Qwen2.5-VL
processor then expands each ``<|image_pad|>`` like the HF processor does. ``min_pixels`` /
``max_pixels`` reach that processor as the engine's ``mm_processor_kwargs``.

Same decoding as ``model.generate``: temperature 0 is greedy; the checkpoint's
``generation_config.json`` supplies what HF generate would take from it (repetition penalty,
``top_k``/``top_p`` when sampling, end-of-sequence ids), because a ``SamplingParams`` built by hand
starts from vLLM's neutral defaults instead. Sampling cannot reproduce HF's draws (another RNG);
each prompt gets the seed ``seed + its index in the batch``, which with the batch seeds of
``eval.generate`` (``seed + index of the batch's first study``) is ``seed + the study's index``:
a study draws the same text whatever the batch size or resume point.

vLLM is imported inside the functions that need it (ARCHITECTURE.md rule 9); without it the user
gets a ``UserError`` naming the ``gpu`` extra (pyproject.toml).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from editgrpo.errors import UserError
from editgrpo.models.generation import VisualPrompt, render_prompt

INSTALL_HINT = "pip install 'editgrpo[gpu]'"
# transformers' top_k when a generation config leaves it unset (GenerationConfig defaults).
HF_DEFAULT_TOP_K = 50


def import_vllm() -> Any:
    """The ``vllm`` module, or a ``UserError`` saying how to install it."""
    try:
        import vllm
    except ImportError as err:
        raise UserError(
            f"the vllm engine needs vLLM, which cannot be imported here ({err}); install it with "
            f"{INSTALL_HINT} (Linux with CUDA GPUs), or use --engine hf"
        ) from None
    return vllm


@dataclass(frozen=True)
class CheckpointDecoding:
    """What ``model.generate`` takes from a checkpoint's generation config unless told otherwise
    (transformers' ``GenerationConfig`` defaults where the file leaves a field unset)."""

    repetition_penalty: float = 1.0
    top_k: int | None = HF_DEFAULT_TOP_K
    top_p: float = 1.0
    eos_token_ids: tuple[int, ...] = ()

    @classmethod
    def from_pretrained(cls, name_or_path: str) -> CheckpointDecoding:
        from transformers import GenerationConfig

        try:
            config = GenerationConfig.from_pretrained(name_or_path)
        except OSError:  # no generation_config.json: transformers' defaults, as generate uses
            return cls()
        eos = config.eos_token_id
        eos_ids = () if eos is None else (eos,) if isinstance(eos, int) else tuple(eos)
        # transformers 5 leaves unset fields None and generate() fills in its global defaults
        # (GenerationConfig._get_default_generation_params: top_k 50, top_p 1.0, penalty 1.0);
        # an explicit top_k of 0 turns top-k off.
        top_k = HF_DEFAULT_TOP_K if config.top_k is None else config.top_k or None
        return cls(
            repetition_penalty=float(
                config.repetition_penalty if config.repetition_penalty is not None else 1.0
            ),
            top_k=top_k,
            top_p=float(config.top_p if config.top_p is not None else 1.0),
            eos_token_ids=eos_ids,
        )


def build_requests(processor: Any, prompts: Sequence[Any]) -> list[dict[str, Any]]:
    """One vLLM prompt dict per prompt: the HF path's text and the prompt's images, in order."""
    requests = []
    for prompt in prompts:
        visual = VisualPrompt(list(prompt.images), prompt.text)
        request: dict[str, Any] = {"prompt": render_prompt(processor, visual)}
        if visual.images:
            request["multi_modal_data"] = {"image": list(visual.images)}
        requests.append(request)
    return requests


def sampling_kwargs(
    count: int,
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float | None,
    num_samples: int,
    seed: int | None,
    checkpoint: CheckpointDecoding,
) -> list[dict[str, Any]]:
    """``SamplingParams`` keyword arguments for ``count`` prompts (one dict each: the seeds
    differ). ``top_p=None`` takes the checkpoint's, as HF generate does."""
    common: dict[str, Any] = {
        "max_tokens": max_new_tokens,
        "n": num_samples,
        "repetition_penalty": checkpoint.repetition_penalty,
        "skip_special_tokens": True,  # as processor.batch_decode(..., skip_special_tokens=True)
    }
    if checkpoint.eos_token_ids:
        common["stop_token_ids"] = list(checkpoint.eos_token_ids)
    if temperature == 0:
        # Greedy: vLLM ignores top_k/top_p/seed at temperature 0.
        return [{**common, "temperature": 0.0} for _ in range(count)]
    common |= {
        "temperature": temperature,
        "top_p": checkpoint.top_p if top_p is None else top_p,
        # vLLM spells "no top-k" as -1 (0 in later releases accepts too); -1 works across the range.
        "top_k": checkpoint.top_k if checkpoint.top_k else -1,
    }
    return [{**common, "seed": None if seed is None else seed + index} for index in range(count)]


class VLLMGenerator:
    """``generator(prompts, seed) -> list[str]`` on a vLLM engine; ``sample`` returns all
    ``num_samples`` texts per prompt. Build it with ``VLLMGenerator.load``."""

    def __init__(
        self,
        llm: Any,
        processor: Any,
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float | None = None,
        num_samples: int = 1,
        checkpoint: CheckpointDecoding | None = None,
    ) -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if num_samples > 1 and temperature == 0:
            raise ValueError("num_samples > 1 needs temperature > 0: greedy samples are identical")
        self.llm = llm
        self.processor = processor
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.num_samples = num_samples
        self.checkpoint = checkpoint or CheckpointDecoding()

    @classmethod
    def load(
        cls,
        model: str,
        *,
        max_images: int,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.9,
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        seed: int | None = 0,
        **decoding: Any,
    ) -> VLLMGenerator:
        """Start a vLLM engine on ``model`` (hub id or local path) and load its processor for
        the prompt rendering; ``decoding`` goes to ``__init__``."""
        vllm = import_vllm()
        from editgrpo.models.qwen_vl import load_processor

        try:
            processor = load_processor(model)
            checkpoint = CheckpointDecoding.from_pretrained(model)
        except (OSError, ValueError) as err:
            raise UserError(f"--model {model}: cannot load a Qwen2.5-VL checkpoint: {err}") from None
        mm_processor_kwargs = {
            key: value
            for key, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels))
            if value is not None
        }
        engine: dict[str, Any] = {
            "model": model,
            "dtype": dtype,
            # No videos: vLLM then reserves no memory for them when it profiles the worst case.
            "limit_mm_per_prompt": {"image": max_images, "video": 0},
            "gpu_memory_utilization": gpu_memory_utilization,
            "tensor_parallel_size": tensor_parallel_size,
        }
        if max_model_len is not None:
            engine["max_model_len"] = max_model_len
        if mm_processor_kwargs:
            engine["mm_processor_kwargs"] = mm_processor_kwargs
        if seed is not None:
            engine["seed"] = seed
        try:
            llm = vllm.LLM(**engine)
        except (OSError, ValueError) as err:
            raise UserError(f"--model {model}: vLLM cannot start an engine on it: {err}") from None
        return cls(llm, processor, checkpoint=checkpoint, **decoding)

    def sample(self, prompts: Sequence[Any], seed: int | None = None) -> list[list[str]]:
        """``num_samples`` decoded texts per prompt, in prompt order."""
        if not prompts:
            return []
        from vllm import SamplingParams

        params = [
            SamplingParams(**kwargs)
            for kwargs in sampling_kwargs(
                len(prompts),
                max_new_tokens=self.max_new_tokens,
                temperature=self.temperature,
                top_p=self.top_p,
                num_samples=self.num_samples,
                seed=seed,
                checkpoint=self.checkpoint,
            )
        ]
        # LLM.generate returns one RequestOutput per request, in request order.
        outputs = self.llm.generate(build_requests(self.processor, prompts), params, use_tqdm=False)
        return [[completion.text for completion in output.outputs] for output in outputs]

    def __call__(self, prompts: Sequence[Any], seed: int | None = None) -> list[str]:
        if self.num_samples != 1:
            raise ValueError("a generator call returns one text per prompt; use sample() for num_samples > 1")
        return [texts[0] for texts in self.sample(prompts, seed)]
