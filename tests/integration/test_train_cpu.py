"""EditGRPO end to end on CPU with real tiny parts: a saved ``xs`` Qwen2.5-VL, SynthCXR studies, the
offline reward, TRL's GRPOTrainer underneath.

- acceptance: SFT 2 steps, then EditGRPO 3 steps: every trainable parameter changed, the frozen
  vision tower did not, edits were made and logged, rewards finite;
- one rollout batch looked at directly: edited rows, their inserted-token masks and our advantages;
- the variants: edits off (plain Dr. GRPO), overwrite + off_policy, and the sample accounting of fill;
- resume: 6 steps straight vs 3 steps, kill -9, ``--resume`` to 6 -> the same parameters.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl")

from editgrpo.config import RLConfig, load_config
from editgrpo.core.advantages import group_advantages
from editgrpo.training.checkpoints import COMPLETE_MARKER, last_complete_checkpoint

IMAGE_OVERRIDES = [
    "model.dtype=float32",
    "model.attn_implementation=eager",
    "model.min_pixels=3136",
    "model.max_pixels=3136",
]


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from editgrpo.data.synth import SynthConfig, write_synthcxr

    out = tmp_path_factory.mktemp("synth")
    write_synthcxr(out, SynthConfig(n=40, seed=3, image_size=64))
    return out


@pytest.fixture(scope="module")
def sft_model(tiny_model_dir: Path, synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The acceptance's SFT stage: 2 answer-only-loss steps on SynthCXR."""
    from editgrpo.training.sft import run_sft

    out = tmp_path_factory.mktemp("sft")
    config = load_config(
        None,
        [
            f"model.name_or_path={tiny_model_dir}",
            *IMAGE_OVERRIDES,
            f"data.train={synth_dir / 'train.jsonl'}",
            f"output_dir={out}",
            "use_cpu=true",
            "per_device_batch_size=4",
            "max_steps=2",
            "eval_clinical_samples=0",
            "optim.learning_rate=1e-3",
        ],
        stage="sft",
    )
    result = run_sft(config)
    assert result.global_step == 2
    return Path(result.final_checkpoint)


def rl_overrides(model: Path, synth_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        f"model.name_or_path={model}",
        *IMAGE_OVERRIDES,
        f"data.train={synth_dir / 'train.jsonl'}",
        f"output_dir={output_dir}",
        "use_cpu=true",
        "prompts_per_step=2",
        "rollout.group_size=4",
        "rollout.max_completion_length=40",
        "max_steps=3",
        "save_steps=100",
        "optim.learning_rate=1e-3",
        "progress_bar=false",
        *extra,
    ]


def rl_config(*overrides: str) -> RLConfig:
    config = load_config(None, list(overrides), stage="rl")
    assert isinstance(config, RLConfig)
    return config


def _state(path: Path) -> dict[str, torch.Tensor]:
    from editgrpo.models.qwen_vl import load_policy

    return {k: v.detach().clone() for k, v in load_policy(str(path)).named_parameters()}


def test_sft_then_editgrpo_changes_every_trainable_parameter(
    sft_model: Path, synth_dir: Path, tmp_path: Path
) -> None:
    from editgrpo.training.trainer import LOG_HISTORY, run_train

    before = _state(sft_model)
    result = run_train(rl_config(*rl_overrides(sft_model, synth_dir, tmp_path / "rl")))
    assert result.global_step == 3
    after = _state(Path(result.final_checkpoint))
    vision = {k for k in before if k.startswith(("model.visual.", "visual."))}
    assert vision, "the tiny model has a vision tower"
    unchanged = [k for k in before if k not in vision and torch.equal(before[k], after[k])]
    assert not unchanged, f"trainable parameters left unchanged: {unchanged}"
    assert all(torch.equal(before[k], after[k]) for k in vision), "the frozen vision tower moved"

    steps = [entry for entry in result.log_history if "rewards/on_policy/total" in entry]
    assert len(steps) == 3
    assert max(entry["edits/changed_rate"] for entry in steps) > 0
    for entry in steps:
        for key in ("rewards/on_policy/total", "reward", "kl", "entropy", "loss"):
            assert math.isfinite(entry[key]), (key, entry[key])
        assert 0.0 <= entry["rewards/on_policy/total"] <= 3.0
        assert entry["edits/edited_rows_frac"] <= 0.5 + 1e-9
        for key in ("time/generate", "time/edit", "time/score", "time/update"):
            assert entry[key] >= 0.0
        assert any(key.startswith("labels/") and key.endswith("/recall") for key in entry)
    assert any("rewards/edited/total" in entry for entry in steps)
    lines = (tmp_path / "rl" / LOG_HISTORY).read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines][:3] == [1, 2, 3]
    # The model card names the base model through the local SFT checkpoint, and the method.
    card = (Path(result.final_checkpoint) / "README.md").read_text()
    assert card.startswith("---\nbase_model: ") and f"finetuned_from: {sft_model}\n" in card
    assert "trained with **EditGRPO**" in card and "[None]" not in card
    assert (tmp_path / "rl" / "resolved_config.yaml").is_file()

    # Collapse figures, on-policy rows every step (edited rows when a step had any).
    for entry in steps:
        assert 0.0 <= entry["collapse/on_policy/empty_rate"] <= 1.0
        assert 0.0 <= entry["collapse/on_policy/duplicate_rate"] <= 1.0
        assert 0.0 <= entry["collapse/on_policy/repeated_sentence_rate"] <= 1.0
        assert 0.0 < entry["collapse/on_policy/length_tokens"] <= 40
    assert any("collapse/edited/length_tokens" in entry for entry in steps)

    # What the policy wrote next to its edits: one row per group and step (logging_steps=1).
    from editgrpo.data.manifest import read_manifest
    from editgrpo.training.trainer import COMPLETIONS_LOG

    findings = {s.study_id: s.findings for s in read_manifest(synth_dir / "train.jsonl")[0]}
    rows = [json.loads(line) for line in (tmp_path / "rl" / COMPLETIONS_LOG).read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 1, 2, 2, 3, 3]
    edits = 0
    for row in rows:
        assert (
            row["reference"] == findings[row["study_id"]].strip()
            or row["reference"] == findings[row["study_id"]]
        )
        assert len(row["completions"]) == 4 and [c["index"] for c in row["completions"]] == [0, 1, 2, 3]
        for item in row["completions"]:
            assert item["reward"] is not None and 0.0 <= item["reward"] <= 3.0
            assert set(item["components"]) == {"radgraph_partial", "chexbert_micro14", "ratescore"}
            if item["kind"] == "edit":
                edits += 1
                assert item["index"] >= 2 and 0 <= item["source"] < 2 and item["ops"]
                source = row["completions"][item["source"]]
                assert source["kind"] == "sample" and source["text"] != item["text"]
                for start, end in item["inserted"]:
                    assert item["text"][start:end].strip() in row["reference"]
    assert edits > 0


def test_one_rollout_batch_edits_masks_and_advantages(
    sft_model: Path, synth_dir: Path, tmp_path: Path
) -> None:
    """A real rollout batch: edited rows are the last k of each group, their inserted tokens decode
    to reference text, other rows have no inserted token, advantages are ours."""
    from editgrpo.training.trainer import build_trainer

    config = rl_config(*rl_overrides(sft_model, synth_dir, tmp_path / "rl"))
    trainer, _, _ = build_trainer(config)
    trainer.model.train()
    dataset = trainer.train_dataset
    inputs = [dataset[i] for i in (0, 0, 0, 0, 1, 1, 1, 1)]
    out = trainer._generate_and_score_completions(inputs)
    tokenizer = trainer._tokenizer
    edited = out["is_edited"].tolist()
    records = trainer._records
    assert len(records) == 8
    for row, record in enumerate(records):
        ids = out["completion_ids"][row][out["completion_mask"][row].bool()].tolist()
        inserted = out["inserted_mask"][row][: len(ids)].tolist()
        if record.kind == "edit":
            assert edited[row] and row % 4 >= 2, "edits go to the last k slots of a group"
            assert record.source is not None and record.source // 4 == row // 4 and record.source % 4 < 2
            # Replaced or appended sentences bring reference tokens; a pure deletion brings none.
            # (An edit whose inserted tokens the completion limit cut away is no edit: a top-up.)
            assert any(inserted) == bool({"replace", "append"} & set(record.ops))
            reference = inputs[row]["reference"]
            pieces = tokenizer.decode(
                [t for t, m in zip(ids, inserted, strict=True) if m], skip_special_tokens=True
            )
            for word in pieces.split():
                assert word in reference, (word, reference)
        else:
            assert not edited[row] and not any(inserted)
    totals = trainer._gathered_totals
    expected, _ = group_advantages(totals, 4, scale="none")
    assert torch.allclose(out["advantages"], expected)


def test_edits_off_is_plain_dr_grpo(sft_model: Path, synth_dir: Path, tmp_path: Path) -> None:
    from editgrpo.training.trainer import run_train

    result = run_train(
        rl_config(*rl_overrides(sft_model, synth_dir, tmp_path / "rl", "edit.enabled=false", "max_steps=2"))
    )
    steps = [entry for entry in result.log_history if "rewards/on_policy/total" in entry]
    assert len(steps) == 2
    assert all(entry["edits/edited_rows_frac"] == 0.0 for entry in steps)
    assert all(entry["generation/sampled_per_completion"] == 1.0 for entry in steps)
    assert not any("rewards/edited/total" in entry or "edits/changed_rate" in entry for entry in steps)


def test_overwrite_with_off_policy_tokens_and_fill_sample_accounting(
    sft_model: Path, synth_dir: Path, tmp_path: Path
) -> None:
    from editgrpo.training.trainer import run_train

    overwrite = run_train(
        rl_config(
            *rl_overrides(
                sft_model,
                synth_dir,
                tmp_path / "overwrite",
                "edit.generation=overwrite",
                "edit.token_treatment=off_policy",
                "max_steps=2",
            )
        )
    )
    steps = [entry for entry in overwrite.log_history if "rewards/on_policy/total" in entry]
    # overwrite samples all G rows of each group; edited targets discard theirs.
    assert all(entry["generation/sampled_per_completion"] == 1.0 for entry in steps)
    assert any(0.0 < entry.get("loss/off_policy_prob_mean", 0.0) <= 1.0 for entry in steps)

    fill = run_train(rl_config(*rl_overrides(sft_model, synth_dir, tmp_path / "fill", "max_steps=2")))
    for entry in (e for e in fill.log_history if "rewards/on_policy/total" in e):
        # fill samples G - k rows per group, plus one per slot whose edit changed nothing.
        assert entry["generation/sampled_per_completion"] == pytest.approx(
            0.5 + entry["edits/topup_rows_frac"]
        )


# ---------------------------------------------------------------------------------------------
# Resume after kill -9
# ---------------------------------------------------------------------------------------------


def _train_command(recipe: Path, overrides: list[str], *flags: str) -> list[str]:
    return [sys.executable, "-m", "editgrpo", "train", str(recipe), *overrides, *flags]


def _env() -> dict[str, str]:
    # One thread each: CPU kernels then reduce in the same order in every process.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_resume_after_kill_gives_the_uninterrupted_parameters(
    sft_model: Path, synth_dir: Path, tmp_path: Path
) -> None:
    common = ["max_steps=6", "save_steps=1", "rollout.max_completion_length=24"]
    recipe = tmp_path / "rl.yaml"
    recipe.write_text("stage: rl\n")
    straight = tmp_path / "straight"
    run = subprocess.run(
        _train_command(recipe, rl_overrides(sft_model, synth_dir, straight, *common)),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]

    interrupted = tmp_path / "interrupted"
    overrides = rl_overrides(sft_model, synth_dir, interrupted, *common)
    process = subprocess.Popen(
        _train_command(recipe, overrides), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while not (interrupted / "checkpoint-3" / COMPLETE_MARKER).exists():
        assert process.poll() is None, "the run ended before checkpoint-3"
        assert time.monotonic() < deadline, "no checkpoint-3 in time"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    killed_at = last_complete_checkpoint(interrupted)
    assert killed_at is not None and not (interrupted / "final").exists()

    resumed = subprocess.run(
        _train_command(recipe, overrides, "--resume"), env=_env(), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["resumed_from"] == str(killed_at) and summary["global_step"] == 6

    a, b = _state(straight / "final"), _state(interrupted / "final")
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-5, f"resumed parameters differ from the uninterrupted run by {worst}"


def test_tensorboard_gets_the_scalars_and_the_completions_table(
    sft_model: Path, synth_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from editgrpo.training.trainer import run_train

    out = tmp_path / "rl"
    run_train(rl_config(*rl_overrides(sft_model, synth_dir, out, "max_steps=2", "report_to=[tensorboard]")))
    events = sorted(out.rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    tags: dict[str, list[str]] = {"scalars": [], "tensors": []}
    texts = []
    for path in events:
        accumulator = EventAccumulator(str(path), size_guidance={"tensors": 0, "scalars": 0})
        accumulator.Reload()
        for kind in tags:
            tags[kind] += accumulator.Tags().get(kind, [])
        if "completions/text_summary" in accumulator.Tags().get("tensors", []):
            texts += [
                e.tensor_proto.string_val[0].decode() for e in accumulator.Tensors("completions/text_summary")
            ]
    assert "train/rewards/on_policy/total" in tags["scalars"]
    assert "train/collapse/on_policy/empty_rate" in tags["scalars"]
    assert len(texts) == 2  # one table per logged step
    header = texts[0].splitlines()[0]
    assert header == "| step | study_id | index | kind | source | reward | text | reference |"
    assert len(texts[0].splitlines()) == 2 + 2 * 4  # header, rule, 2 groups of 4 completions


def test_resume_at_max_steps_writes_final_and_trains_nothing(
    sft_model: Path, synth_dir: Path, tmp_path: Path
) -> None:
    """max_steps = 3 with save_steps = 2 (not a divisor): checkpoints 2 and 3 (the Trainer saves at
    the end). ``--resume`` then finds the run finished: before the fix it trained a step 4, wrote
    checkpoint-4 and overwrote final/."""
    from editgrpo.errors import UserError
    from editgrpo.training.trainer import COMPLETIONS_LOG, run_train

    out = tmp_path / "rl"
    overrides = rl_overrides(sft_model, synth_dir, out, "max_steps=3", "save_steps=2")
    first = run_train(rl_config(*overrides))
    assert first.global_step == 3
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    trained = _state(out / "final")
    logged = (out / COMPLETIONS_LOG).read_text()

    # final/ present: nothing to do, nothing changes.
    stamp = (out / "final" / "model.safetensors").stat().st_mtime_ns
    again = run_train(rl_config(*overrides), resume=True)
    assert again.global_step == 3 and again.resumed_from == str(out / "checkpoint-3")
    assert (out / "final" / "model.safetensors").stat().st_mtime_ns == stamp

    # final/ lost (a kill while it was written): made again from checkpoint-3, still no training.
    import shutil

    shutil.rmtree(out / "final")
    (out / "final.partial").mkdir()  # what a kill during the write leaves behind
    again = run_train(rl_config(*overrides), resume=True)
    assert again.global_step == 3
    assert not (out / "checkpoint-4").exists() and not (out / "final.partial").exists()
    rebuilt = _state(out / "final")
    assert rebuilt.keys() == trained.keys() and all(torch.equal(rebuilt[k], trained[k]) for k in trained)
    from editgrpo.models.qwen_vl import load_processor

    load_processor(str(out / "final"))
    assert not list((out / "final").glob("optimizer.pt")) and not (out / "final" / COMPLETE_MARKER).exists()
    assert (out / COMPLETIONS_LOG).read_text() == logged

    # A checkpoint past max_steps: the user lowered max_steps; refused with the fix.
    with pytest.raises(UserError, match="past max_steps = 2: raise max_steps"):
        run_train(
            rl_config(*rl_overrides(sft_model, synth_dir, out, "max_steps=2", "save_steps=2")), resume=True
        )


# ---------------------------------------------------------------------------------------------
# The shipped CPU recipes
# ---------------------------------------------------------------------------------------------

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


@pytest.mark.parametrize("recipe", ["cpu_smoke.yaml", "cpu_smoke_balanced.yaml"])
def test_shipped_cpu_recipes_train_end_to_end(
    recipe: str, sft_model: Path, synth_dir: Path, tmp_path: Path
) -> None:
    """The recipes as shipped (paths pointed at this test's files), with the balanced variant's
    frequencies written by label-stats: radgraph + chexbert + ratescore + chexpert_balanced."""
    from editgrpo.eval.label_stats import label_stats
    from editgrpo.training.trainer import run_train

    freqs = tmp_path / "freqs.json"
    label_stats(synth_dir / "train.jsonl", freqs, section="findings")
    config = load_config(
        RECIPES / recipe,
        [
            f"model.name_or_path={sft_model}",
            f"data.train={synth_dir / 'train.jsonl'}",
            *([f"data.eval={synth_dir / 'validate.jsonl'}"] if "balanced" not in recipe else []),
            f"output_dir={tmp_path / 'run'}",
            "max_steps=2",
            "prompts_per_step=2",
            "rollout.max_completion_length=32",
            "progress_bar=false",
            *([f"reward.label_freqs={freqs}"] if "balanced" in recipe else []),
        ],
        stage="rl",
    )
    result = run_train(config)
    steps = [entry for entry in result.log_history if "rewards/on_policy/total" in entry]
    assert len(steps) == 2
    components = set(config.reward.components)
    assert ("chexpert_balanced" in components) == ("balanced" in recipe)
    for entry in steps:
        for name in components:
            value = entry[f"rewards/on_policy/{name}"]
            assert math.isfinite(value) and 0.0 <= value <= 1.0, (name, value)
        assert 0.0 <= entry["rewards/on_policy/total"] <= len(components)
        # The per-label breakdown: recall where a reference is positive, FP rate where negative,
        # and with chexpert_balanced each label's share of it (their mean is the component).
        assert "labels/No Finding/recall" in entry or "labels/No Finding/false_positive_rate" in entry
        shares = [entry[k] for k in entry if k.endswith("/balanced_reward")]
        if "balanced" in recipe:
            assert len(shares) == 14
            assert sum(shares) / 14 == pytest.approx(entry["rewards/on_policy/chexpert_balanced"], abs=1e-9)
        else:
            assert not shares
    if "balanced" not in recipe:
        # Clinical validation during RL (cpu_smoke.yaml: eval_steps 5, so here at the last step).
        from editgrpo.training.sft import CLINICAL_EVAL_FILE

        (record,) = [
            json.loads(line) for line in (tmp_path / "run" / CLINICAL_EVAL_FILE).read_text().splitlines()
        ]
        assert record["step"] == 2 and record["n"] == min(
            8, len((synth_dir / "validate.jsonl").read_text().splitlines())
        )
        assert set(record["metrics"]) == {
            "eval_chexpert_rules_micro_f1_14",
            "eval_chexpert_rules_macro_f1_14",
            "eval_radgraph_lexicon_f1",
        }
        logged = [entry for entry in result.log_history if "eval_radgraph_lexicon_f1" in entry]
        assert [entry["step"] for entry in logged] == [2]


def test_a_test_split_eval_is_refused_unless_the_recipe_says_so(
    sft_model: Path, synth_dir: Path, tmp_path: Path
) -> None:
    from editgrpo.config import ConfigError
    from editgrpo.errors import UserError
    from editgrpo.training.trainer import build_trainer

    with pytest.raises(ConfigError, match=r"data.eval_split = 'test': evaluating on test studies"):
        rl_config(
            *rl_overrides(
                sft_model,
                synth_dir,
                tmp_path / "a",
                f"data.eval={synth_dir / 'test.jsonl'}",
                "data.eval_split=test",
            )
        )
    # A test manifest without a split filter: refused when its studies are read, before training.
    config = rl_config(
        *rl_overrides(sft_model, synth_dir, tmp_path / "b", f"data.eval={synth_dir / 'test.jsonl'}")
    )
    with pytest.raises(UserError, match=r"evaluation studies are of split 'test'.*data.eval_on_test=true"):
        build_trainer(config)
    allowed = rl_config(
        *rl_overrides(
            sft_model,
            synth_dir,
            tmp_path / "c",
            f"data.eval={synth_dir / 'test.jsonl'}",
            "data.eval_on_test=true",
        )
    )
    trainer, _, _ = build_trainer(allowed)
    assert trainer is not None


def test_kl_is_measured_against_the_named_reference(
    tiny_model_dir: Path, sft_model: Path, synth_dir: Path, tmp_path: Path
) -> None:
    """The KL reference is the initial policy by default (KL 0 on the first step, before any
    update) and ``reference_model`` when named (the untrained base here: KL > 0 at once)."""
    from editgrpo.training.trainer import run_train

    first = {}
    for name, extra in (("initial", []), ("base", [f"reference_model={tiny_model_dir}"])):
        result = run_train(
            rl_config(*rl_overrides(sft_model, synth_dir, tmp_path / name, "max_steps=1", *extra))
        )
        first[name] = next(entry["kl"] for entry in result.log_history if "kl" in entry)
    assert first["initial"] == pytest.approx(0.0, abs=1e-6)
    assert first["base"] > 1e-3


def test_training_against_a_reward_server(sft_model: Path, synth_dir: Path, tmp_path: Path) -> None:
    """reward.scoring=server: rewards and the edits' analyses come from a real reward server on
    127.0.0.1; the per-component and per-label logs are the in-process ones."""
    from editgrpo.rewards.composite import CompositeReward
    from editgrpo.rewards.server import RewardService
    from editgrpo.training.trainer import run_train
    from fixtures.servers import thread_server

    service = RewardService(CompositeReward())
    with thread_server(service) as url:
        result = run_train(
            rl_config(
                *rl_overrides(
                    sft_model,
                    synth_dir,
                    tmp_path / "rl",
                    "max_steps=1",
                    "reward.scoring=server",
                    f"reward.server_url={url}",
                )
            )
        )
    (entry,) = [e for e in result.log_history if "rewards/on_policy/total" in e]
    for name in ("radgraph_partial", "chexbert_micro14", "ratescore"):
        assert math.isfinite(entry[f"rewards/on_policy/{name}"])
    assert entry["edits/changed_rate"] > 0 and entry["edits/failed_rate"] == 0.0
    assert any(key.startswith("labels/") for key in entry)
