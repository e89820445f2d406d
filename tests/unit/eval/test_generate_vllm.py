"""`editgrpo generate --engine vllm`: its config, its user errors, its prompts (the HF path's, on
the tiny real processor), its sampling settings, and (on a GPU with vLLM) its greedy output
against the HF path's."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from editgrpo.cli import main
from editgrpo.config import ConfigError, GenerateConfig, load_config
from editgrpo.data.manifest import read_manifest
from editgrpo.data.prompts import PromptOptions, build_prompt
from editgrpo.data.synth import SynthConfig, write_synthcxr
from editgrpo.eval.generate import GenerationPrompt, load_images
from editgrpo.models.generation import VisualPrompt, build_messages, encode_prompts
from editgrpo.models.generation_vllm import (
    INSTALL_HINT,
    CheckpointDecoding,
    VLLMGenerator,
    build_requests,
    sampling_kwargs,
)

HAS_VLLM = importlib.util.find_spec("vllm") is not None


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 small SynthCXR studies with priors (so prompts carry current + prior images)."""
    out = tmp_path_factory.mktemp("synth-vllm")
    write_synthcxr(
        out, SynthConfig(n=6, seed=3, image_size=64, with_priors=True, split_fractions=(0.0, 0.0, 1.0))
    )
    return out


def prompts_of(manifest: Path, max_images: int = 6) -> list[GenerationPrompt]:
    """What eval.generate hands a generator: every study's images (loaded, prompt order) and text."""
    out = []
    for study in read_manifest(manifest)[0]:
        prompt = build_prompt(study, PromptOptions(max_images=max_images), image_root=manifest.parent)
        out.append(
            GenerationPrompt(study.study_id, load_images(prompt.image_paths, study.study_id), prompt.text)
        )
    return out


@pytest.fixture(scope="module")
def tiny_processor(tiny_model_dir: Path):
    from editgrpo.models.qwen_vl import load_processor

    return load_processor(str(tiny_model_dir))


# --- config ---------------------------------------------------------------------------------------


def test_config_defaults_and_override() -> None:
    config = GenerateConfig()
    assert (config.engine, config.vllm_gpu_memory_utilization, config.vllm_tensor_parallel_size) == (
        "hf",
        0.9,
        1,
    )
    assert config.vllm_max_model_len is None
    loaded = load_config(None, ["engine=vllm", "vllm_max_model_len=4096"], stage="generate")
    assert isinstance(loaded, GenerateConfig)
    assert (loaded.engine, loaded.vllm_max_model_len) == ("vllm", 4096)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"engine": "vlm"}, "engine = 'vlm': must be one of hf, vllm. Fix: did you mean 'vllm'?"),
        ({"vllm_gpu_memory_utilization": 0.0}, "vllm_gpu_memory_utilization = 0.0: must be in (0, 1]. Fix: use 0.9"),
        ({"vllm_gpu_memory_utilization": 1.5}, "vllm_gpu_memory_utilization = 1.5: must be in (0, 1]"),
        ({"vllm_tensor_parallel_size": 0}, "vllm_tensor_parallel_size = 0: must be > 0. Fix: use a value > 0"),
        ({"vllm_max_model_len": -1}, "vllm_max_model_len = -1: must be > 0"),
        ({"vllm_max_model_len": 256}, "vllm_max_model_len = 256: leaves no room for the prompt: it must exceed "
         "max_new_tokens (256). Fix: raise it"),
    ],
)  # fmt: skip
def test_config_rejects_bad_engine_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        GenerateConfig(**kwargs)
    assert message in str(raised.value)
    assert len(raised.value.problems) == 1


def test_config_bad_values_fail_at_load_with_their_source() -> None:
    with pytest.raises(ConfigError, match=r"override 'engine=vlm'|engine = 'vlm'"):
        load_config(None, ["engine=vlm"], stage="generate")


# --- CLI user errors ------------------------------------------------------------------------------


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed here")
def test_cli_without_vllm_exits_2_naming_the_gpu_extra(
    synth_dir: Path, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.jsonl"
    args = ["generate", "--model", str(tiny_model_dir), "--manifest", str(synth_dir / "test.jsonl")]
    assert main([*args, "--out", str(out), "--engine", "vllm"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("editgrpo generate: error: the vllm engine needs vLLM"), err
    assert INSTALL_HINT in err and "pip install 'editgrpo[gpu]'" in err and "--engine hf" in err
    assert "Traceback" not in err
    assert not out.exists()  # nothing written before the engine exists


def test_cli_rejects_bad_vllm_settings(
    synth_dir: Path, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "p.jsonl")
    base = [
        "generate",
        "--model",
        str(tiny_model_dir),
        "--manifest",
        str(synth_dir / "test.jsonl"),
        "--out",
        out,
    ]
    cases = [
        (["--engine", "vllm", "--gpu-memory-utilization", "1.5"], "vllm_gpu_memory_utilization = 1.5"),
        (["--engine", "vllm", "--tensor-parallel-size", "0"], "vllm_tensor_parallel_size = 0"),
        (["--engine", "vllm", "--max-model-len", "8", "--max-new-tokens", "16"], "vllm_max_model_len = 8"),
        (
            ["--engine", "vllm", "--device", "cpu"],
            "--device cpu: the vllm engine runs on all visible CUDA GPUs",
        ),
    ]
    for extra, message in cases:
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("editgrpo generate: error:") and message in err, err
        assert "Traceback" not in err
    with pytest.raises(SystemExit) as raised:  # argparse: an unknown engine name
        main([*base, "--engine", "tgi"])
    assert raised.value.code == 2
    assert "invalid choice: 'tgi'" in capsys.readouterr().err
    assert not Path(out).exists()


# --- prompts: the HF path's text and images -------------------------------------------------------


def test_requests_carry_the_hf_text_and_images_in_order(synth_dir: Path, tiny_processor) -> None:
    prompts = prompts_of(synth_dir / "test.jsonl")
    multi = [p for p in prompts if len(p.images) >= 3]
    assert multi, "the fixture should have a study with current + prior images"
    requests = build_requests(tiny_processor, prompts)
    assert len(requests) == len(prompts)
    for prompt, request in zip(prompts, requests, strict=True):
        visual = VisualPrompt(prompt.images, prompt.text)
        hf_text = tiny_processor.apply_chat_template(
            build_messages(visual), add_generation_prompt=True, tokenize=False
        )
        assert request["prompt"] == hf_text
        assert request["prompt"].count("<|image_pad|>") == len(prompt.images)
        assert request["prompt"].endswith("<|im_start|>assistant\n")
        # The very image objects, in prompt order (current frontal first, priors last).
        assert [id(image) for image in request["multi_modal_data"]["image"]] == [id(i) for i in prompt.images]


def test_requests_tokenise_like_the_hf_batch(synth_dir: Path, tiny_processor) -> None:
    """vLLM runs the checkpoint's HF processor on (prompt, images); for a multi-image study that
    gives the HF path's input ids and pixels exactly."""
    import torch

    prompt = max(prompts_of(synth_dir / "test.jsonl"), key=lambda p: len(p.images))
    assert len(prompt.images) >= 3
    (request,) = build_requests(tiny_processor, [prompt])
    hf = encode_prompts(tiny_processor, [VisualPrompt(prompt.images, prompt.text)])
    vllm_side = tiny_processor(
        text=[request["prompt"]], images=request["multi_modal_data"]["image"], return_tensors="pt"
    )
    assert torch.equal(vllm_side["input_ids"], hf["input_ids"])
    assert torch.equal(vllm_side["image_grid_thw"], hf["image_grid_thw"])
    assert torch.equal(vllm_side["pixel_values"], hf["pixel_values"])


def test_a_prompt_without_images_has_no_multimodal_data(tiny_processor) -> None:
    (request,) = build_requests(tiny_processor, [VisualPrompt([], "Describe the findings.")])
    assert "multi_modal_data" not in request and "<|image_pad|>" not in request["prompt"]


# --- sampling settings ------------------------------------------------------------------------------


def test_greedy_settings_take_the_checkpoint_penalty_and_end_tokens() -> None:
    checkpoint = CheckpointDecoding(repetition_penalty=1.05, top_k=1, top_p=0.001, eos_token_ids=(7, 9))
    kwargs = sampling_kwargs(
        2, max_new_tokens=64, temperature=0.0, top_p=None, num_samples=1, seed=5, checkpoint=checkpoint
    )
    expected = {
        "max_tokens": 64,
        "n": 1,
        "repetition_penalty": 1.05,
        "skip_special_tokens": True,
        "stop_token_ids": [7, 9],
        "temperature": 0.0,
    }
    assert kwargs == [expected, expected]


def test_sampling_settings_seed_each_prompt_by_its_index() -> None:
    checkpoint = CheckpointDecoding()  # transformers' defaults: top_k 50, top_p 1.0
    kwargs = sampling_kwargs(
        3, max_new_tokens=16, temperature=0.7, top_p=None, num_samples=4, seed=10, checkpoint=checkpoint
    )
    assert [k["seed"] for k in kwargs] == [10, 11, 12]  # batch seed + index = seed + study index
    assert {(k["temperature"], k["top_p"], k["top_k"], k["n"], k["max_tokens"]) for k in kwargs} == {
        (0.7, 1.0, 50, 4, 16)
    }
    assert "stop_token_ids" not in kwargs[0]
    explicit = sampling_kwargs(
        1, max_new_tokens=16, temperature=1.0, top_p=0.9, num_samples=1, seed=None,
        checkpoint=CheckpointDecoding(top_k=None),
    )  # fmt: skip
    assert (explicit[0]["top_p"], explicit[0]["top_k"], explicit[0]["seed"]) == (0.9, -1, None)


def test_checkpoint_decoding_reads_the_tiny_generation_config(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import GenerationConfig

    saved = GenerationConfig.from_pretrained(tiny_model_dir)
    decoding = CheckpointDecoding.from_pretrained(str(tiny_model_dir))
    assert decoding == CheckpointDecoding(1.0, 50, 1.0, (saved.eos_token_id,))
    assert CheckpointDecoding.from_pretrained(str(tmp_path)) == CheckpointDecoding()  # no file: defaults


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_samples": 2}, "num_samples > 1 needs temperature > 0"),
        ({"temperature": -1.0}, "temperature must be >= 0"),
        ({"max_new_tokens": 0}, "max_new_tokens must be >= 1"),
    ],
)
def test_generator_settings_are_checked(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VLLMGenerator(None, None, **kwargs)


def test_one_text_per_prompt_needs_one_sample() -> None:
    generator = VLLMGenerator(None, None, temperature=1.0, num_samples=2)
    with pytest.raises(ValueError, match=r"use sample\(\)"):
        generator([], 0)


# --- GPU: real vLLM against the HF path -------------------------------------------------------------


@pytest.mark.gpu
def test_vllm_greedy_matches_hf_greedy_on_the_tiny_model(synth_dir: Path, tiny_model_dir: Path) -> None:
    pytest.importorskip("vllm")
    from editgrpo.models.generation import generate_reports
    from editgrpo.models.qwen_vl import load_policy, load_processor

    prompts = prompts_of(synth_dir / "test.jsonl", max_images=3)
    visual = [VisualPrompt(p.images, p.text) for p in prompts]
    processor = load_processor(str(tiny_model_dir))
    model = load_policy(str(tiny_model_dir), dtype="float32", device="cuda").eval()
    # One prompt per HF call: left padding would otherwise shift positions against vLLM's unpadded ones.
    hf = [generate_reports(model, processor, [p], max_new_tokens=12)[0] for p in visual]
    del model

    generator = VLLMGenerator.load(
        str(tiny_model_dir), max_images=3, dtype="float32", gpu_memory_utilization=0.3, max_new_tokens=12
    )
    assert generator(prompts, 0) == hf
