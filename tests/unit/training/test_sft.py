"""The SFT recipe on real tiny parts: a saved ``xs`` Qwen2.5-VL and a SynthCXR manifest."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from editgrpo.config import RESOLVED_CONFIG_NAME, SFTConfig, load_config
from editgrpo.errors import UserError

pytest.importorskip("trl")

IMAGE_SIZE = 64  # SynthCXR's smallest; min_pixels 56 * 56 turns each image into 2x2 visual tokens


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from editgrpo.data.synth import SynthConfig, write_synthcxr

    out = tmp_path_factory.mktemp("synth")
    write_synthcxr(out, SynthConfig(n=16, seed=0, image_size=IMAGE_SIZE))
    return out


def _config(model_dir: Path, synth_dir: Path, output_dir: Path, *overrides: str) -> SFTConfig:
    config = load_config(
        None,
        [
            f"model.name_or_path={model_dir}",
            "model.dtype=float32",
            "model.attn_implementation=eager",
            "model.min_pixels=3136",
            "model.max_pixels=3136",
            f"data.train={synth_dir / 'train.jsonl'}",
            f"output_dir={output_dir}",
            "use_cpu=true",
            "per_device_batch_size=2",
            "max_steps=2",
            "logging_steps=1",
            "optim.learning_rate=1e-3",
            "optim.lr_scheduler=constant",
            *overrides,
        ],
        stage="sft",
    )
    assert isinstance(config, SFTConfig)
    return config


def test_collator_labels_answer_tokens_only(tiny_model_dir: Path, synth_dir: Path, tmp_path: Path) -> None:
    from editgrpo.models.qwen_vl import load_processor
    from editgrpo.training.sft import StudyCollator, as_dataset, read_examples

    config = _config(tiny_model_dir, synth_dir, tmp_path)
    examples = read_examples(config.data.train, config, limit=3)
    # Rows as the trainer's dataloader hands them over (through Arrow).
    rows = list(as_dataset(examples.rows))
    assert len(rows) == 3 and all(row["images"] for row in rows)
    processor = load_processor(str(tiny_model_dir), min_pixels=3136, max_pixels=3136)
    tokenizer = processor.tokenizer
    batch = StudyCollator(processor)(rows)

    labels, input_ids, attention = batch["labels"], batch["input_ids"], batch["attention_mask"]
    assert labels.shape == input_ids.shape
    image_pad = processor.image_token_id
    assert (input_ids == image_pad).any(), "the batch carries image tokens"
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for b, row in enumerate(rows):
        target = row["completion"][0]["content"][0]["text"]
        # The answer as the chat template writes the assistant turn: text, <|im_end|>, newline.
        answer_ids = tokenizer(target + "<|im_end|>\n", add_special_tokens=False)["input_ids"]
        labelled = (labels[b] != -100).nonzero().flatten().tolist()
        # Answer tokens are contiguous at the end of the real (unpadded) tokens and labelled with
        # their own ids; everything else -- system, user turn, image pads, padding -- is -100.
        assert labelled == list(range(labelled[0], labelled[0] + len(answer_ids)))
        assert labels[b, labelled].tolist() == answer_ids == input_ids[b, labelled].tolist()
        assert im_end in labels[b].tolist()
        real = attention[b].nonzero().flatten().tolist()
        assert labelled[-1] == real[-1], "the answer ends the sequence"
        prompt_part = [i for i in range(labels.shape[1]) if i not in set(labelled)]
        assert all(labels[b, i].item() == -100 for i in prompt_part)
        assert not (labels[b][input_ids[b] == image_pad] != -100).any()
        assert tokenizer.decode(input_ids[b, labelled]) == target + "<|im_end|>\n"
    assert (attention == 0).any(), "rows of different lengths: the test saw padding"


def test_examples_skip_studies_without_a_target(synth_dir: Path) -> None:
    import dataclasses

    from editgrpo.data.manifest import read_manifest
    from editgrpo.training.sft import build_examples

    studies, _ = read_manifest(synth_dir / "train.jsonl")
    emptied = dataclasses.replace(studies[0], findings=None)
    examples = build_examples([emptied, *studies[1:3]], image_root=synth_dir, target_section="findings")
    assert examples.skipped == [studies[0].study_id]
    assert len(examples.rows) == 2
    first = examples.rows[0]
    assert [m["role"] for m in first["prompt"]] == ["user"]
    placeholders = [item for item in first["prompt"][0]["content"] if item["type"] == "image"]
    assert placeholders == [{"type": "image"}] * len(first["images"])
    assert all(Path(p).is_file() for p in first["images"])


def test_missing_train_manifest_is_a_user_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    from editgrpo.training.sft import run_sft

    config = _config(tiny_model_dir, tmp_path / "nowhere", tmp_path / "run")
    with pytest.raises(UserError, match=r"data.train = .*nowhere/train.jsonl': file not found"):
        run_sft(config)
    assert not (tmp_path / "run").exists(), "nothing is written before the inputs are checked"


def test_cpu_smoke_recipe_is_a_valid_sft_config() -> None:
    root = Path(__file__).resolve().parents[3]
    config = load_config(root / "recipes" / "cpu_smoke_sft.yaml", stage="sft")
    assert isinstance(config, SFTConfig) and config.use_cpu and config.save_each_epoch


def test_cli_sft_config_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    from editgrpo.cli import main

    root = Path(__file__).resolve().parents[3]
    code = main(["sft", str(root / "recipes" / "cpu_smoke_sft.yaml"), "save_steps=0", "optim.lr=1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "save_steps = 0: must be > 0" in err
    assert "optim.lr = 1: is not a key of OptimConfig" in err and "Traceback" not in err


def test_cli_sft_runs_a_recipe(tiny_model_dir: Path, synth_dir: Path, tmp_path: Path, capsys) -> None:
    import json

    from editgrpo.cli import main

    root = Path(__file__).resolve().parents[3]
    code = main(
        [
            "sft",
            str(root / "recipes" / "cpu_smoke_sft.yaml"),
            f"model.name_or_path={tiny_model_dir}",
            f"data.train={synth_dir / 'train.jsonl'}",
            "data.eval=null",
            f"output_dir={tmp_path / 'run'}",
            "max_steps=1",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["global_step"] == 1 and Path(summary["final_checkpoint"]).is_dir()


def test_sft_trains_two_epochs_and_saves_loadable_checkpoints(
    tiny_model_dir: Path, synth_dir: Path, tmp_path: Path
) -> None:
    import torch

    from editgrpo.models.qwen_vl import load_policy, load_processor
    from editgrpo.training.sft import FINAL_CHECKPOINT, run_sft

    output_dir = tmp_path / "sft"
    # 4 studies in batches of 4: one optimizer step per epoch, two epochs, a checkpoint each.
    config = _config(
        tiny_model_dir,
        synth_dir,
        output_dir,
        "model.freeze_vision=true",
        "max_steps=-1",
        "num_epochs=2",
        "per_device_batch_size=4",
        "data.max_train_samples=4",
        f"data.eval={synth_dir / 'train.jsonl'}",  # SynthCXR n=16 has 1-2 test studies
        "data.max_eval_samples=2",
    )
    before = load_policy(str(tiny_model_dir))
    result = run_sft(config)

    assert result.global_step == 2
    assert (result.train_examples, result.eval_examples) == (4, 2)
    assert math.isfinite(result.train_loss)
    assert (output_dir / RESOLVED_CONFIG_NAME).is_file()
    assert [Path(c).name for c in result.checkpoints] == ["checkpoint-1", "checkpoint-2"]
    assert Path(result.final_checkpoint) == output_dir / FINAL_CHECKPOINT
    for checkpoint in [*result.checkpoints, result.final_checkpoint]:
        load_processor(checkpoint)
    after = load_policy(result.final_checkpoint)
    old, new = dict(before.named_parameters()), dict(after.named_parameters())
    changed = {name for name, p in new.items() if not torch.equal(p, old[name])}
    assert any(name.startswith("model.language_model") for name in changed)
    # freeze_vision keeps the vision tower as it was.
    assert not any(name.startswith("model.visual") for name in changed)
