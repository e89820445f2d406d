"""Shipped recipes: every one loads, opens with the command that runs it, and the RL variants of a
dataset differ only in the keys that define the variant; accelerate configs are ZeRO-3 with the
process count their name says."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from editgrpo.config import RLConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
RECIPES_DIR = ROOT / "recipes"
ACCELERATE_DIR = RECIPES_DIR / "accelerate"
RECIPES = sorted(p for p in RECIPES_DIR.rglob("*.yaml") if ACCELERATE_DIR not in p.parents)
ACCELERATE = sorted(ACCELERATE_DIR.glob("*.yaml"))

# The keys that make GRPO, Dr. GRPO and EditGRPO of one dataset (EDITGRPO.md section 2; the paper's
# Table 1 rows): edits on/off, the advantage scale and the loss aggregation; output_dir keeps runs apart.
VARIANT_KEYS = {"edit.enabled", "loss.advantage_scale", "loss.aggregation", "output_dir"}
VARIANTS = {
    "editgrpo": {"edit.enabled": True, "loss.advantage_scale": "none", "loss.aggregation": "dr_grpo"},
    "dr_grpo": {"edit.enabled": False, "loss.advantage_scale": "none", "loss.aggregation": "dr_grpo"},
    "grpo": {"edit.enabled": False, "loss.advantage_scale": "group_std", "loss.aggregation": "sequence_mean"},
}
DATASETS = sorted({p.name.removesuffix("_editgrpo.yaml") for p in RECIPES_DIR.rglob("*_editgrpo.yaml")})


def _flat(node: object, prefix: str = "") -> dict[str, object]:
    if isinstance(node, dict):
        out: dict[str, object] = {}
        for key, value in node.items():
            # A dict-valued field (reward.components) is one value, as the loader treats it.
            if isinstance(value, dict) and key != "components":
                out.update(_flat(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value
        return out
    return {prefix.rstrip("."): node}


def _opening_comment(path: Path) -> list[str]:
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return lines


def test_recipes_are_found() -> None:
    assert len(RECIPES) >= 10 and len(ACCELERATE) >= 3
    assert {"mimic_cxr", "iu_xray"} <= set(DATASETS)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(RECIPES_DIR)))
def test_recipe_loads(path: Path) -> None:
    config = load_config(path)
    assert config.stage in ("sft", "rl", "generate", "evaluate")


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(RECIPES_DIR)))
def test_recipe_opens_with_its_command(path: Path) -> None:
    comment = _opening_comment(path)
    assert comment, f"{path} must open with a comment block"
    # "editgrpo ...", "accelerate launch ...", optionally after "Run it:" and VAR=value settings.
    command = re.compile(r"^([A-Z][\w ]*:\s+)?(\w+=\S+\s+)*(editgrpo |accelerate launch )")
    commands = [line for line in comment if command.match(line)]
    assert commands, f"{path}: no `editgrpo ...` or `accelerate launch ...` line in its opening comment"
    # The recipe's own command names the recipe file itself.
    stem = path.relative_to(ROOT).as_posix()
    assert any(stem in line for line in comment), f"{path}: the opening comment does not name {stem}"


@pytest.mark.parametrize("path", ACCELERATE, ids=lambda p: p.name)
def test_accelerate_config_is_zero3_with_its_process_count(path: Path) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert data["distributed_type"] == "DEEPSPEED"
    assert data["deepspeed_config"]["zero_stage"] == 3
    assert data["mixed_precision"] == "bf16"
    nodes = re.search(r"(\d+)node", path.stem)
    gpus = re.search(r"(\d+)gpu", path.stem)
    assert gpus, f"{path.name}: name the GPU count (e.g. zero3_8gpu.yaml)"
    machines = int(nodes.group(1)) if nodes else 1
    assert data["num_machines"] == machines
    assert data["num_processes"] == machines * int(gpus.group(1))
    if machines > 1:
        assert {"machine_rank", "main_process_ip", "main_process_port"} <= set(data)
    assert _opening_comment(path), f"{path.name} must open with a comment saying how to use it"


@pytest.mark.parametrize("dataset", DATASETS)
def test_rl_variants_differ_only_in_their_defining_keys(dataset: str) -> None:
    folder = next(RECIPES_DIR.rglob(f"{dataset}_editgrpo.yaml")).parent
    configs = {}
    for variant, expected in VARIANTS.items():
        config = load_config(folder / f"{dataset}_{variant}.yaml")
        assert isinstance(config, RLConfig)
        flat = _flat(dataclasses.asdict(config))
        assert {key: flat[key] for key in expected} == expected, variant
        configs[variant] = flat
    base = configs["editgrpo"]
    for variant, flat in configs.items():
        differing = {key for key in base.keys() | flat.keys() if base.get(key) != flat.get(key)}
        assert differing <= VARIANT_KEYS, (
            f"{dataset}_{variant} also differs in {sorted(differing - VARIANT_KEYS)}"
        )
        assert flat["output_dir"] == base["output_dir"].replace("editgrpo", variant)


@pytest.mark.parametrize("dataset", DATASETS)
def test_rl_recipes_have_the_papers_settings(dataset: str) -> None:
    folder = next(RECIPES_DIR.rglob(f"{dataset}_editgrpo.yaml")).parent
    config = load_config(folder / f"{dataset}_editgrpo.yaml")
    assert isinstance(config, RLConfig)
    # EDITGRPO.md section 5.
    optim = config.optim
    assert (optim.learning_rate, optim.weight_decay, optim.lr_scheduler, optim.max_grad_norm) == (
        1e-6,
        0.01,
        "constant",
        1.0,
    )
    assert (config.prompts_per_step, config.rollout.temperature, config.rollout.group_size) == (32, 1.0, 8)
    assert config.num_edits() == 4
    assert (config.loss.kl_beta, config.loss.kl_estimator) == (0.01, "k3")
    assert config.model.freeze_vision
    assert (config.model.min_pixels, config.model.max_pixels, config.model.max_images) == (
        262_144,
        401_408,
        6,
    )
    assert config.data.target_section == "findings"
    assert config.reward.components == {"radgraph_partial": 1.0, "chexbert_micro14": 1.0, "ratescore": 1.0}
    assert (config.reward.labeler, config.reward.entities, config.reward.embedder) == (
        "chexbert",
        "rate",
        "biolord",
    )
    assert config.rollout.engine == "vllm_colocate"
    assert config.per_device_batch_size is not None
    sft = load_config(folder / f"{dataset}_sft.yaml")
    # RL starts from a checkpoint of this dataset's SFT run.
    assert config.model.name_or_path.startswith(sft.output_dir + "/")
