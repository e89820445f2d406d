"""Typed configs: defaults, recipes, overrides, and user errors tested by their messages."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from editgrpo.config import (
    RESOLVED_CONFIG_NAME,
    STAGES,
    ConfigError,
    EditConfig,
    ModelConfig,
    RLConfig,
    RolloutConfig,
    load_config,
    save_resolved_config,
    to_yaml,
)

# Stage recipes; recipes/accelerate/ holds launcher configs (tests/unit/test_recipes.py checks them).
RECIPES = sorted(
    p
    for p in (Path(__file__).resolve().parents[2] / "recipes").rglob("*.yaml")
    if "accelerate" not in p.parts
)


def _recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _messages(err: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return [p.render() for p in err.value.problems]


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_stage_has_valid_defaults(stage: str) -> None:
    config = load_config(None, stage=stage)
    assert type(config) is STAGES[stage] and config.stage == stage


def test_shipped_recipes_validate() -> None:
    assert RECIPES
    for path in RECIPES:
        load_config(path)


def test_paper_rl_recipe_has_the_papers_numbers() -> None:
    config = load_config(Path(__file__).resolve().parents[2] / "recipes/paper/rl.yaml")
    assert isinstance(config, RLConfig)
    assert (config.rollout.group_size, config.num_edits(), config.loss.kl_beta) == (8, 4, 0.01)
    assert config.reward.components == {"radgraph_partial": 1.0, "chexbert_micro14": 1.0, "ratescore": 1.0}
    assert config.optim.learning_rate == 1e-6 and config.model.freeze_vision


def test_overrides_are_typed_and_win_over_the_recipe(tmp_path: Path) -> None:
    path = _recipe(tmp_path, "stage: rl\nrollout:\n  group_size: 4\n")
    config = load_config(path, ["rollout.group_size=16", "edit.num_edits=8", "optim.learning_rate=3e-6"])
    assert config.rollout.group_size == 16 and config.num_edits() == 8
    assert config.optim.learning_rate == pytest.approx(3e-6)
    assert config.model.name_or_path == ModelConfig().name_or_path  # untouched default


def test_mapping_fields_are_replaced_not_merged(tmp_path: Path) -> None:
    config = load_config(None, ["reward.components={ratescore: 2.0}"], stage="rl")
    assert config.reward.components == {"ratescore": 2.0}


def test_num_edits_defaults_to_half_the_group_and_zero_without_edits() -> None:
    assert load_config(None, ["rollout.group_size=6"], stage="rl").num_edits() == 3
    assert load_config(None, ["edit.enabled=false"], stage="rl").num_edits() == 0


def test_unknown_key_names_the_closest_valid_one_and_its_line(tmp_path: Path) -> None:
    path = _recipe(tmp_path, "stage: rl\nrollout:\n  temperature: 1.0\n  grup_size: 8\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert _messages(err) == [
        f"{path}:4: rollout.grup_size = 8: is not a key of RolloutConfig. Fix: did you mean 'rollout.group_size'?"
    ]


def test_unknown_key_with_no_close_match_lists_the_valid_keys() -> None:
    with pytest.raises(ConfigError, match="valid keys here: enabled, rule, num_edits"):
        load_config(None, ["edit.zzzzzz=1"], stage="rl")


def test_wrong_type_names_field_value_and_declared_type(tmp_path: Path) -> None:
    path = _recipe(tmp_path, "stage: sft\noptim:\n  learning_rate: fast\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    (message,) = _messages(err)
    assert message.startswith(f"{path}:3: optim.learning_rate = 'fast': ")
    assert message.endswith("Fix: give a value of type float.")


def test_cross_field_rules_say_field_value_rule_and_fix() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["rollout.group_size=4", "edit.num_edits=3"], stage="rl")
    assert _messages(err) == [
        "override 'edit.num_edits=3': edit.num_edits = 3: must be <= rollout.group_size // 2 (2): each "
        "edited copy needs its own on-policy source. Fix: set edit.num_edits <= 2 or raise "
        "rollout.group_size."
    ]


def test_unknown_keys_and_rule_violations_come_together() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["bogus=1", "rollout.group_size=1", "edit.rule=papr"], stage="rl")
    assert [p.field for p in err.value.problems] == ["bogus", "rollout.group_size", "edit.rule"]
    assert str(err.value).startswith("3 problem(s) in config (no recipe):\n  - override 'bogus=1': ")


def test_rule_violations_in_several_sections_come_together(tmp_path: Path) -> None:
    path = _recipe(
        tmp_path,
        "stage: rl\nmodel:\n  dtype: fp8\n  min_pixels: 5000\n  max_pixels: 4000\n"
        "edit:\n  rule: papr\nreward:\n  components: {radgraph: 1.0}\n",
    )
    with pytest.raises(ConfigError) as err:
        load_config(path, ["loss.kl_beta=-1"])
    by_field = {p.field: p for p in err.value.problems}
    assert set(by_field) == {
        "model.dtype",
        "model.max_pixels",
        "edit.rule",
        "reward.components.radgraph",
        "loss.kl_beta",
    }
    assert by_field["edit.rule"].fix.startswith("did you mean 'paper'?")
    assert by_field["reward.components.radgraph"].fix == "did you mean 'radgraph_partial'?"
    assert by_field["model.max_pixels"].source == f"{path}:5"
    assert by_field["loss.kl_beta"].source == "override 'loss.kl_beta=-1'"


def test_unknown_keys_and_type_errors_come_together() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["bogus=1", "max_steps=many"], stage="rl")
    assert [p.field for p in err.value.problems] == ["bogus", "max_steps"]


def test_cpu_runs_need_float32() -> None:
    with pytest.raises(ConfigError, match="half precision is not supported with use_cpu=true"):
        load_config(None, ["use_cpu=true"], stage="sft")
    assert load_config(None, ["use_cpu=true", "model.dtype=float32"], stage="sft").use_cpu


def test_vllm_server_needs_a_url() -> None:
    with pytest.raises(ConfigError, match="vllm_server_url = None: is required when engine is vllm_server"):
        load_config(None, ["rollout.engine=vllm_server"], stage="rl")


def test_stage_must_be_known_and_match_the_command(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"stage = 'ppo': must be one of sft, rl, generate, evaluate"):
        load_config(_recipe(tmp_path, "stage: ppo\n"))
    with pytest.raises(ConfigError, match="this command needs a 'rl' recipe"):
        load_config(_recipe(tmp_path, "stage: sft\n"), stage="rl")


def test_bad_files_and_overrides_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(
        ConfigError,
        match=r"recipe\.yaml:3: recipe = .*is not valid YAML .*Fix: correct the YAML syntax at that line\.",
    ):
        load_config(_recipe(tmp_path, "stage: rl\nmodel:\n  dtype: [float32\n"))
    with pytest.raises(ConfigError, match="is not a key=value override"):
        load_config(None, ["rollout.group_size"], stage="rl")
    with pytest.raises(ConfigError, match="must be a mapping of keys"):
        load_config(_recipe(tmp_path, "- a\n- b\n"))


def test_configs_built_in_python_are_checked_at_once() -> None:
    with pytest.raises(ConfigError, match="group_size = 1: must be >= 2"):
        RolloutConfig(group_size=1)
    with pytest.raises(ConfigError, match=r"edit\.num_edits = 5: must be <= rollout\.group_size // 2"):
        RLConfig(edit=EditConfig(num_edits=5))


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    config = load_config(None, ["rollout.group_size=12", "edit.rule=release", "seed=7"], stage="rl")
    saved = save_resolved_config(config, tmp_path / "run")
    assert saved.name == RESOLVED_CONFIG_NAME
    assert load_config(saved) == config
    assert dataclasses.asdict(load_config(saved)) == dataclasses.asdict(config)
    assert "group_size: 12" in to_yaml(config)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("reward.components.ratescore=.nan", "reward.components.ratescore"),
        ("optim.learning_rate=.inf", "optim.learning_rate"),
        ("loss.kl_beta=-.inf", "loss.kl_beta"),
        ("rollout.temperature=.nan", "rollout.temperature"),
        ("edit.similarity_threshold=.nan", "edit.similarity_threshold"),
    ],
)
def test_non_finite_numbers_are_refused_wherever_a_float_is_taken(override: str, field: str) -> None:
    # NaN passes every comparison rule (nan < 0 is False); before this check a NaN reward weight
    # made every reward 0.0 and the run exited 0.
    with pytest.raises(ConfigError) as err:
        load_config(None, [override], stage="rl")
    assert field in [p.field for p in err.value.problems]
    message = next(m for m in _messages(err) if f"{field} = " in m)
    assert "must be a finite number. Fix: give a finite value." in message
    assert message.startswith(f"override '{override}': ")


def test_non_finite_numbers_are_refused_in_python_built_configs() -> None:
    from editgrpo.config import OptimConfig, RewardConfig

    with pytest.raises(ConfigError, match=r"components.chexbert_micro14 = nan: must be a finite number"):
        RewardConfig(components={"chexbert_micro14": float("nan")})
    with pytest.raises(ConfigError, match=r"max_grad_norm = inf: must be a finite number"):
        OptimConfig(max_grad_norm=float("inf"))


def test_report_to_is_checked_when_the_recipe_loads() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["report_to=[tensorbord]"], stage="rl")
    assert _messages(err) == [
        "override 'report_to=[tensorbord]': report_to = 'tensorbord': must be one of "
        + ", ".join(__import__("editgrpo.config", fromlist=["REPORT_TO"]).REPORT_TO)
        + ". Fix: did you mean 'tensorboard'? use one of those names."
    ]
    # A known backend whose package is missing names the pip command (mlflow is not installed here).
    pytest.importorskip("tensorboard")
    assert load_config(None, ["report_to=[tensorboard]"], stage="sft").report_to == ["tensorboard"]
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        with pytest.raises(
            ConfigError,
            match=r"report_to = 'mlflow': the 'mlflow' package is not installed. Fix: run `pip install mlflow`",
        ):
            load_config(None, ["report_to=[mlflow]"], stage="rl")
    with pytest.raises(ConfigError, match="'none' and 'all' stand alone"):
        load_config(None, ["report_to=[none,tensorboard]"], stage="rl")


def test_a_mapping_override_replaces_the_recipes_mapping(tmp_path: Path) -> None:
    recipe = _recipe(
        tmp_path,
        "stage: rl\nreward:\n  components: {ratescore: 1.0, radgraph_partial: 1.0}\ntrl:\n  run_name: a\n",
    )
    # Given whole, the mapping replaces the recipe's (before: merged, keeping both).
    config = load_config(recipe, ["reward.components={chexbert_micro14: 1}"])
    assert config.reward.components == {"chexbert_micro14": 1.0}
    # A dotted override into the mapping sets one entry.
    config = load_config(recipe, ["reward.components.ratescore=2"])
    assert config.reward.components == {"ratescore": 2.0, "radgraph_partial": 1.0}
    assert load_config(recipe, ["trl.seed_x=1"]).trl == {"run_name": "a", "seed_x": 1}
    # `{}` empties it (before: a no-op), which the rules then refuse.
    with pytest.raises(ConfigError, match=r"reward.components = \{\}: is empty"):
        load_config(recipe, ["reward.components={}"])


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, "stage: rl\noptim:\n  learning_rate: 1.0e-6\n  learning_rate: 1.0e-3\n")
    with pytest.raises(ConfigError) as err:
        load_config(recipe)
    (message,) = _messages(err)
    assert f"{recipe}:4: recipe = " in message
    assert (
        "gives the key 'learning_rate' twice (lines 3 and 4)" in message
        and "Fix: keep one of them." in message
    )


def test_a_yaml_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    import time

    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{k}: &a{k} [" + ", ".join([f"*a{k - 1}"] * 10) + "]" for k in range(1, 9)]
    recipe = _recipe(tmp_path, "stage: rl\n" + "\n".join(levels) + "\n")
    assert recipe.stat().st_size < 600  # 10^9 nodes from a few hundred bytes
    started = time.monotonic()
    with pytest.raises(ConfigError) as err:
        load_config(recipe)
    assert time.monotonic() - started < 5
    assert "expands to more than 100,000 YAML nodes" in str(err.value) and len(str(err.value)) < 1000
    big = tmp_path / "big.yaml"
    big.write_text("stage: rl\n# " + "x" * 1_000_001 + "\n")
    with pytest.raises(ConfigError, match="more than a recipe can be"):
        load_config(big)
