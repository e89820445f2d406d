"""The SFT recipe on real tiny parts: a saved ``xs`` Qwen2.5-VL and a SynthCXR manifest."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from editgrpo.config import RESOLVED_CONFIG_NAME, ConfigError, SFTConfig, load_config
from editgrpo.errors import UserError

pytest.importorskip("trl")

IMAGE_SIZE = 64  # SynthCXR's smallest; min_pixels 56 * 56 turns each image into 2x2 visual tokens
CLINICAL_KEYS = (
    "eval_chexpert_rules_micro_f1_14",
    "eval_chexpert_rules_macro_f1_14",
    "eval_radgraph_lexicon_f1",
)


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
    from editgrpo.training.sft import CLINICAL_EVAL_FILE, FINAL_CHECKPOINT, run_sft

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
        "eval_clinical_max_new_tokens=12",
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
    assert result.trainable_parameters < result.total_parameters

    # Clinical evaluation: one line per epoch in clinical_eval.jsonl, the same in the log history.
    lines = (output_dir / CLINICAL_EVAL_FILE).read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["epoch"], r["step"], r["n"]) for r in records] == [(1.0, 1, 2), (2.0, 2, 2)]
    assert records == result.clinical_evals
    for record in records:
        assert set(record["metrics"]) == set(CLINICAL_KEYS)
        assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in record["metrics"].values())
    # The checkpoint of epoch 2 is saved after its evaluation: its log history holds both.
    history = json.loads((output_dir / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    logged = [entry for entry in history if CLINICAL_KEYS[0] in entry]
    assert [entry["step"] for entry in logged] == [1, 2]
    assert [{k: entry[k] for k in CLINICAL_KEYS} for entry in logged] == [r["metrics"] for r in records]


# ---------------------------------------------------------------------------------------------
# LoRA
# ---------------------------------------------------------------------------------------------


def test_lora_targets_stay_in_the_language_model_unless_vision_modules_are_named(
    tiny_model_dir: Path,
) -> None:
    from editgrpo.config import LoraConfig
    from editgrpo.models.qwen_vl import load_policy
    from editgrpo.training.sft import lora_target_names

    model = load_policy(str(tiny_model_dir))
    layers = model.config.text_config.num_hidden_layers
    names = lora_target_names(model, LoraConfig(enabled=True))
    # 7 projections per decoder layer, none in the vision tower (whose MLP has gate/up/down_proj too).
    assert len(names) == 7 * layers
    assert all(name.startswith("model.language_model.layers.") for name in names)
    assert "model.language_model.layers.0.mlp.gate_proj" in names

    with_vision = lora_target_names(model, LoraConfig(enabled=True, vision_target_modules=["qkv"]))
    vision = [name for name in with_vision if name.startswith("model.visual")]
    assert vision and all(name.endswith(".attn.qkv") for name in vision)

    with pytest.raises(UserError, match=r"lora.target_modules: no module named \['qkv_proj'\] in "):
        lora_target_names(model, LoraConfig(enabled=True, target_modules=["q_proj", "qkv_proj"]))


def test_lora_trains_adapters_only_and_final_is_a_merged_model(
    tiny_model_dir: Path, synth_dir: Path, tmp_path: Path
) -> None:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file

    from editgrpo.models.qwen_vl import load_policy, load_processor
    from editgrpo.training.sft import StudyCollator, merge_lora_checkpoint, read_examples, run_sft

    output_dir = tmp_path / "lora"
    config = _config(
        tiny_model_dir,
        synth_dir,
        output_dir,
        "lora.enabled=true",
        "lora.r=4",
        "lora.alpha=8",
        "max_steps=-1",
        "num_epochs=2",
        "per_device_batch_size=4",
        "data.max_train_samples=4",
    )
    result = run_sft(config)
    assert result.global_step == 2 and result.clinical_evals == []  # no data.eval, no clinical eval
    base = load_policy(str(tiny_model_dir))
    targets = {
        n for n, m in base.named_modules() if n.startswith("model.language_model.") and n.endswith("_proj")
    }
    # Trainable: exactly A (r x in) and B (out x r) of every targeted linear layer.
    expected = sum(4 * (m.in_features + m.out_features) for n, m in base.named_modules() if n in targets)
    assert result.trainable_parameters == expected < result.total_parameters

    # Per-epoch checkpoints hold the adapter only: LoRA tensors, none in the vision tower, and B
    # (initialised to zero) moved away from zero.
    adapter = load_file(str(output_dir / "checkpoint-2" / "adapter_model.safetensors"))
    assert adapter and all(".lora_A." in k or ".lora_B." in k for k in adapter)
    assert not any("visual" in k for k in adapter)
    assert all(v.abs().sum() > 0 for k, v in adapter.items() if ".lora_B." in k)

    # final/: a plain model. The base weights stayed as they were: only targeted projections differ
    # (by the merged update), everything else -- vision tower, embeddings, norms -- is unchanged.
    final = load_policy(result.final_checkpoint)
    old, new = dict(base.named_parameters()), dict(final.named_parameters())
    assert set(old) == set(new)
    changed = {name.removesuffix(".weight") for name in new if not torch.equal(new[name], old[name])}
    assert changed == targets

    # final/ gives the logits of base + adapter (the adapted model at the end of training).
    adapted = PeftModel.from_pretrained(base, str(output_dir / "checkpoint-2")).eval()
    processor = load_processor(result.final_checkpoint, min_pixels=3136, max_pixels=3136)
    rows = read_examples(config.data.train, config, limit=2).rows
    batch = StudyCollator(processor)(rows)
    batch.pop("labels")
    with torch.no_grad():
        want = adapted(**batch).logits
        got = final.eval()(**batch).logits
    assert torch.allclose(got, want, atol=1e-5)

    # A per-epoch adapter checkpoint becomes a full model the same way.
    merged = load_policy(str(merge_lora_checkpoint(output_dir / "checkpoint-2", tmp_path / "merged")))
    assert all(torch.allclose(p, new[n], atol=1e-6) for n, p in merged.named_parameters())


def test_clinical_eval_runs_at_saves_when_saving_by_steps(
    tiny_model_dir: Path, synth_dir: Path, tmp_path: Path
) -> None:
    from editgrpo.training.sft import CLINICAL_EVAL_FILE, run_sft

    output_dir = tmp_path / "steps"
    # 4 studies in batches of 2: epochs end at steps 2 and 4; saves every 3 steps and at the end (4).
    config = _config(
        tiny_model_dir,
        synth_dir,
        output_dir,
        "max_steps=-1",
        "num_epochs=2",
        "save_each_epoch=false",
        "save_steps=3",
        "data.max_train_samples=4",
        f"data.eval={synth_dir / 'train.jsonl'}",
        "data.max_eval_samples=3",
        "eval_clinical_samples=2",
        "eval_clinical_max_new_tokens=8",
    )
    result = run_sft(config)
    records = [json.loads(line) for line in (output_dir / CLINICAL_EVAL_FILE).read_text().splitlines()]
    # Epoch 1 end (2), the save at 3, epoch 2 end + final save (4, evaluated once).
    assert [r["step"] for r in records] == [2, 3, 4] and {r["n"] for r in records} == {2}
    assert result.clinical_evals == records

    off = _config(
        tiny_model_dir,
        synth_dir,
        tmp_path / "off",
        f"data.eval={synth_dir / 'train.jsonl'}",
        "data.max_eval_samples=2",
        "max_steps=1",
        "eval_clinical_samples=0",
    )
    assert run_sft(off).clinical_evals == []
    assert not (tmp_path / "off" / CLINICAL_EVAL_FILE).exists()


def test_lora_and_clinical_eval_config_errors_say_how_to_fix() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(
            None,
            [
                "lora.enabled=true",
                "lora.r=0",
                "lora.alpha=-1",
                "lora.dropout=1.5",
                "lora.target_modules=[]",
                "eval_clinical_samples=-1",
                "eval_clinical_max_new_tokens=0",
            ],
            stage="sft",
        )
    message = str(err.value)
    assert "lora.r = 0: must be > 0" in message
    assert "lora.alpha = -1: must be > 0" in message
    assert "lora.dropout = 1.5: must be in [0, 1). Fix: use e.g. 0.05" in message
    assert "lora.target_modules = []: is empty (and so is vision_target_modules)" in message
    assert "or set lora.enabled=false" in message
    assert "eval_clinical_samples = -1: must be >= 0" in message
    assert "eval_clinical_max_new_tokens = 0: must be > 0" in message
    with pytest.raises(
        ConfigError, match=r"lora.target_modules = \['model.language_model.q_proj'\]: entries must"
    ):
        load_config(None, ["lora.target_modules=[model.language_model.q_proj]"], stage="sft")
    with pytest.raises(
        ConfigError,
        match=r"lora\.rank = 8: is not a key of LoraConfig\. Fix: valid keys here: enabled, r, alpha",
    ):
        load_config(None, ["lora.rank=8"], stage="sft")


def test_clinical_scores_match_the_metrics_modules(synth_dir: Path) -> None:
    from editgrpo.annotators.chexpert import build_labeler
    from editgrpo.annotators.entities import build_entity_extractor
    from editgrpo.data.manifest import read_manifest
    from editgrpo.metrics.chexbert_f1 import chexbert_scores
    from editgrpo.metrics.radgraph_f1 import radgraph_f1_corpus
    from editgrpo.rewards.composite import CompositeReward
    from editgrpo.training.sft import clinical_scores

    studies, _ = read_manifest(synth_dir / "train.jsonl")
    references = [s.findings for s in studies if s.findings][:8]
    # Predictions: references shifted by one study (some labels agree, some do not), an empty one.
    predictions = [*references[1:], ""]
    reward = CompositeReward({"chexbert_micro14": 1.0, "radgraph_partial": 1.0}, empty_completion="score")
    got = clinical_scores(predictions, references, reward)

    labeler, extractor = build_labeler("rules"), build_entity_extractor("lexicon")
    want = chexbert_scores(labeler.label(predictions), labeler.label(references))
    graphs = [[e.to_radgraph() for e in extractor.extract(t)] for t in (predictions, references)]
    assert got == pytest.approx(
        {
            "chexpert_rules_micro_f1_14": want["micro_f1_14"],
            "chexpert_rules_macro_f1_14": want["macro_f1_14"],
            "radgraph_lexicon_f1": radgraph_f1_corpus(*graphs, level="partial")["mean"],
        }
    )
    assert 0.0 < got["chexpert_rules_micro_f1_14"] < 1.0
    # Hand-computed corner: identical texts score 1 on micro F1 and RadGraph.
    same = clinical_scores(references[:2], references[:2], reward)
    assert same["chexpert_rules_micro_f1_14"] == 1.0 and same["radgraph_lexicon_f1"] == 1.0


def test_training_reads_only_the_train_split(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A manifest holding every split (as `editgrpo prepare` writes one) trains on `train` only;
    a split with no study is a clear error naming the splits present."""
    from editgrpo.data.synth import SynthConfig, write_synthcxr
    from editgrpo.training.sft import read_examples

    synth = tmp_path / "synth"
    write_synthcxr(synth, SynthConfig(n=30, seed=1, image_size=IMAGE_SIZE))
    # One manifest of every split, beside the images its paths are relative to.
    combined = synth / "all.jsonl"
    combined.write_text(
        "".join((synth / f"{s}.jsonl").read_text() for s in ("train", "validate", "test")), encoding="utf-8"
    )
    train_lines = len((synth / "train.jsonl").read_text().splitlines())
    config = _config(tiny_model_dir, synth, tmp_path / "out", f"data.train={combined}")
    from editgrpo.data.schema import SPLITS

    assert config.data.train_split == "train" and config.data.SPLITS == SPLITS
    assert len(read_examples(combined, config, None, "train").rows) == train_lines
    assert len(read_examples(combined, config, None).rows) == len(combined.read_text().splitlines())
    with pytest.raises(UserError, match=r"no study of split 'test' \(splits present: train\)"):
        read_examples(synth / "train.jsonl", config, None, "test")


def test_resume_continues_to_the_uninterrupted_parameters(
    tiny_model_dir: Path, synth_dir: Path, tmp_path: Path
) -> None:
    """4 steps straight vs the same run resumed from its complete checkpoint-2 (copied alone into a
    fresh directory, as a run killed after step 2 leaves it): the same final weights. Without the
    key-converting loader the resumed run would silently restart from the initial weights."""
    import shutil

    import torch

    from editgrpo.models.qwen_vl import load_policy
    from editgrpo.training.checkpoints import COMPLETE_MARKER
    from editgrpo.training.sft import run_sft

    common = ["max_steps=4", "save_each_epoch=false", "save_steps=2", "eval_clinical_samples=0"]
    straight = run_sft(_config(tiny_model_dir, synth_dir, tmp_path / "a", *common))
    assert (tmp_path / "a" / "checkpoint-2" / COMPLETE_MARKER).is_file()
    (tmp_path / "b").mkdir()
    shutil.copytree(tmp_path / "a" / "checkpoint-2", tmp_path / "b" / "checkpoint-2")
    resumed = run_sft(_config(tiny_model_dir, synth_dir, tmp_path / "b", *common), resume=True)
    assert resumed.global_step == straight.global_step == 4
    a = dict(load_policy(straight.final_checkpoint).named_parameters())
    b = dict(load_policy(resumed.final_checkpoint).named_parameters())
    initial = dict(load_policy(str(tiny_model_dir)).named_parameters())
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    assert any(not torch.equal(a[k], initial[k]) for k in a)
