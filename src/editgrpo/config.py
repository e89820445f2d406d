"""Typed configuration: one dataclass per stage, loaded from a YAML recipe plus dotted overrides.

A recipe names its stage (``stage: sft | rl | generate | evaluate``); ``load_config`` reads the
YAML, applies ``key.sub=value`` overrides, checks every key against the stage's dataclass (an unknown
key fails naming the closest valid one), converts values through OmegaConf's structured configs
(type errors name the field), then runs each section's cross-field rules. All problems found are
reported together in one ``ConfigError``, each with its source (``file:line`` or the override),
field, value, rule and fix, so one edit-and-retry fixes a recipe.

Rules live in each section's ``problems()`` and run from ``__post_init__``, so configs built in
Python (``RLConfig(rollout=RolloutConfig(group_size=1))``) fail the same way as loaded ones. Model
for the messages: TRL's ``GRPOConfig.__post_init__``, which says what to change.

This module is a leaf: stdlib, PyYAML and OmegaConf only (OmegaConf is imported lazily so that
``editgrpo --help`` stays fast).
"""

from __future__ import annotations

import contextvars
import dataclasses
import difflib
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from editgrpo.errors import UserError

RESOLVED_CONFIG_NAME = "resolved_config.yaml"

# While load_config builds a tree it collects problems from every section before raising; a
# config built directly in Python raises from __post_init__ at once.
_DEFER_CHECKS: contextvars.ContextVar[bool] = contextvars.ContextVar("editgrpo_defer_checks", default=False)


@dataclass(frozen=True)
class Problem:
    """One configuration error: where, what, which rule, how to fix it."""

    field: str
    value: Any
    rule: str
    fix: str
    source: str = ""

    def render(self) -> str:
        where = f"{self.source}: " if self.source else ""
        end = "" if self.fix.endswith((".", "?", "!")) else "."
        return f"{where}{self.field} = {self.value!r}: {self.rule}. Fix: {self.fix}{end}"


class ConfigError(UserError, ValueError):
    """Raised with every problem found in a config; ``str()`` lists them one per line."""

    def __init__(self, problems: list[Problem], origin: str = "") -> None:
        self.problems = list(problems)
        self.origin = origin
        head = f"{len(self.problems)} problem(s) in config" + (f" {origin}" if origin else "")
        super().__init__(head + ":\n" + "\n".join(f"  - {p.render()}" for p in self.problems))


class Section:
    """Base of every config dataclass: ``problems()`` returns rule violations with field names
    relative to the section; ``__post_init__`` raises them unless a loader is collecting."""

    def problems(self) -> list[Problem]:
        return []

    def all_problems(self) -> list[Problem]:
        """Non-finite numbers in any float field (or mapping / list of floats), then the section's
        own rules. NaN passes every comparison-based rule (``nan < 0`` is False), so it is refused
        here once for all fields: a NaN reward weight made every reward 0.0 with exit 0."""
        out: list[Problem] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            items = (
                value.items()
                if isinstance(value, dict)
                else enumerate(value)
                if isinstance(value, list | tuple)
                else [(None, value)]
            )
            for key, item in items:
                if isinstance(item, float) and not math.isfinite(item):
                    name = (
                        f.name
                        if key is None
                        else f"{f.name}.{key}"
                        if isinstance(value, dict)
                        else f"{f.name}[{key}]"
                    )
                    out.append(Problem(name, item, "must be a finite number", "give a finite value"))
        return out + self.problems()

    def __post_init__(self) -> None:
        if not _DEFER_CHECKS.get():
            found = self.all_problems()
            if found:
                raise ConfigError(found)


def _choice(section: str, name: str, value: Any, choices: tuple[str, ...]) -> list[Problem]:
    if value in choices:
        return []
    close = difflib.get_close_matches(str(value), choices, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return [
        Problem(
            f"{section}{name}", value, f"must be one of {', '.join(choices)}", f"{hint}use one of those names"
        )
    ]


def _positive(
    prefix: str, name: str, value: float | int | None, *, allow_zero: bool = False
) -> list[Problem]:
    if value is None or value > 0 or (allow_zero and value == 0):
        return []
    bound = ">= 0" if allow_zero else "> 0"
    return [Problem(f"{prefix}{name}", value, f"must be {bound}", f"use a value {bound}")]


# ---------------------------------------------------------------------------------------------
# Sections shared by stages
# ---------------------------------------------------------------------------------------------


@dataclass
class ModelConfig(Section):
    """The policy checkpoint and how its images are processed."""

    name_or_path: str = "Qwen/Qwen2.5-VL-3B-Instruct"
    dtype: str = "bfloat16"
    attn_implementation: str = "sdpa"
    # Paper section 5: images resized to 262,144..401,408 pixels.
    min_pixels: int = 262_144
    max_pixels: int = 401_408
    max_images: int = 6
    freeze_vision: bool = False

    DTYPES: ClassVar[tuple[str, ...]] = ("float32", "bfloat16", "float16", "auto")
    ATTENTION: ClassVar[tuple[str, ...]] = ("eager", "sdpa", "flash_attention_2")

    def problems(self) -> list[Problem]:
        out = _choice("", "dtype", self.dtype, self.DTYPES)
        out += _choice("", "attn_implementation", self.attn_implementation, self.ATTENTION)
        if not self.name_or_path:
            out.append(
                Problem("name_or_path", self.name_or_path, "is empty", "give a hub id or a local path")
            )
        # One 28x28 pixel block (14 px patch, 2x2 merge) is the smallest image Qwen2.5-VL encodes.
        if self.min_pixels < 28 * 28:
            out.append(Problem("min_pixels", self.min_pixels, "must be >= 784 (one 28x28 block)", "raise it"))
        if self.max_pixels < self.min_pixels:
            out.append(
                Problem(
                    "max_pixels",
                    self.max_pixels,
                    f"is smaller than min_pixels ({self.min_pixels})",
                    "set max_pixels >= min_pixels",
                )
            )
        if self.max_images < 1:
            out.append(Problem("max_images", self.max_images, "must be >= 1", "allow at least one image"))
        return out


@dataclass
class DataConfig(Section):
    """Study manifests (JSONL, see ``editgrpo.data``) and what the model is asked to write."""

    train: str | None = None
    eval: str | None = None
    # Only the studies of this split are trained on (None: every study of `train`). A manifest of
    # `editgrpo prepare` holds every split; without the filter the test studies would be trained on.
    train_split: str | None = "train"
    # Only these studies of `eval` are evaluated (None: all; e.g. "validate").
    eval_split: str | None = None
    target_section: str = "findings"
    use_prior_images: bool = True
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    # Evaluating on test studies during training (choosing a checkpoint on them) is choosing on
    # test data: SFT and RL refuse eval studies of split "test" unless this is true.
    eval_on_test: bool = False

    SECTIONS: ClassVar[tuple[str, ...]] = ("findings", "impression", "findings_impression")
    SPLITS: ClassVar[tuple[str, ...]] = ("train", "validate", "test")  # data.schema.SPLITS (tested)

    def problems(self) -> list[Problem]:
        out = _choice("", "target_section", self.target_section, self.SECTIONS)
        for name in ("train_split", "eval_split"):
            if getattr(self, name) is not None:
                out += _choice("", name, getattr(self, name), self.SPLITS)
        out += _positive("", "max_train_samples", self.max_train_samples)
        out += _positive("", "max_eval_samples", self.max_eval_samples)
        return out


@dataclass
class OptimConfig(Section):
    """AdamW and its schedule. Defaults: the paper's RL run (section 5)."""

    learning_rate: float = 1e-6
    weight_decay: float = 0.01
    lr_scheduler: str = "constant"
    warmup_ratio: float = 0.0
    max_grad_norm: float = 1.0

    SCHEDULERS: ClassVar[tuple[str, ...]] = ("constant", "constant_with_warmup", "linear", "cosine")

    def problems(self) -> list[Problem]:
        out = _positive("", "learning_rate", self.learning_rate)
        out += _positive("", "weight_decay", self.weight_decay, allow_zero=True)
        out += _positive("", "max_grad_norm", self.max_grad_norm)
        out += _choice("", "lr_scheduler", self.lr_scheduler, self.SCHEDULERS)
        if not 0.0 <= self.warmup_ratio < 1.0:
            out.append(Problem("warmup_ratio", self.warmup_ratio, "must be in [0, 1)", "use e.g. 0.03"))
        return out


@dataclass
class RolloutConfig(Section):
    """Sampling of the on-policy group members."""

    group_size: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    max_completion_length: int = 256
    engine: str = "hf"
    vllm_server_url: str | None = None
    # vllm_colocate: share of each GPU's memory vLLM may take (the rest trains the policy).
    vllm_gpu_memory_utilization: float = 0.3
    # vLLM engines: reweight each sampled token by pi_train / pi_sampler (TRL's truncated importance
    # sampling); edited copies have no sampler probability and get weight 1.
    vllm_importance_sampling: bool = True

    ENGINES: ClassVar[tuple[str, ...]] = ("hf", "vllm_server", "vllm_colocate")

    def problems(self) -> list[Problem]:
        out = _choice("", "engine", self.engine, self.ENGINES)
        if self.group_size < 2:
            out.append(
                Problem(
                    "group_size",
                    self.group_size,
                    "must be >= 2: a group-relative advantage needs two members",
                    "use 8 (the paper's G)",
                )
            )
        out += _positive("", "temperature", self.temperature)
        out += _positive("", "max_completion_length", self.max_completion_length)
        if not 0.0 < self.top_p <= 1.0:
            out.append(Problem("top_p", self.top_p, "must be in (0, 1]", "use 1.0 for plain sampling"))
        if not 0.0 < self.vllm_gpu_memory_utilization < 1.0:
            out.append(
                Problem(
                    "vllm_gpu_memory_utilization",
                    self.vllm_gpu_memory_utilization,
                    "must be in (0, 1)",
                    "use 0.3 with vllm_colocate (the rest of the GPU trains the policy)",
                )
            )
        if self.engine == "vllm_server" and not self.vllm_server_url:
            out.append(
                Problem(
                    "vllm_server_url",
                    self.vllm_server_url,
                    "is required when engine is vllm_server",
                    "start `trl vllm-serve` and give its URL, or use engine=vllm_colocate",
                )
            )
        return out


@dataclass
class EditConfig(Section):
    """Post-rollout edits (EDITGRPO.md sections 2-4)."""

    enabled: bool = True
    rule: str = "paper"
    # k edited copies per group; None means G // 2 (the paper's default).
    num_edits: int | None = None
    max_ops: int = 1
    similarity_threshold: float = 0.6
    generation: str = "fill"
    token_treatment: str = "on_policy"
    off_policy_gamma: float = 0.1
    # paper rule (a)'s "high similarity" (edits/plan.py plan_edits); None means similarity_threshold.
    contradiction_threshold: float | None = None
    # paper rules (b)/(c): whether an unsupported ANATOMY entity makes its sentence a false positive.
    anatomy_false_positives: bool = True

    RULES: ClassVar[tuple[str, ...]] = ("paper", "release", "radgraph")
    GENERATION: ClassVar[tuple[str, ...]] = ("fill", "overwrite")
    TOKEN_TREATMENT: ClassVar[tuple[str, ...]] = ("on_policy", "off_policy", "mask")

    def problems(self) -> list[Problem]:
        out = _choice("", "rule", self.rule, self.RULES)
        out += _choice("", "generation", self.generation, self.GENERATION)
        out += _choice("", "token_treatment", self.token_treatment, self.TOKEN_TREATMENT)
        out += _positive("", "num_edits", self.num_edits)
        out += _positive("", "max_ops", self.max_ops)
        out += _positive("", "off_policy_gamma", self.off_policy_gamma)
        if self.contradiction_threshold is not None and not 0.0 < self.contradiction_threshold <= 1.0:
            out.append(
                Problem(
                    "contradiction_threshold",
                    self.contradiction_threshold,
                    "must be a cosine in (0, 1]",
                    "leave it unset to use similarity_threshold",
                )
            )
        if not 0.0 < self.similarity_threshold <= 1.0:
            out.append(
                Problem(
                    "similarity_threshold",
                    self.similarity_threshold,
                    "must be a cosine in (0, 1]",
                    "use 0.6 (the paper's tau)",
                )
            )
        return out


# Names the reward layer implements; rewards/composite.py keeps its registries equal to these
# tuples (tested), so a recipe fails at load, not mid-run.
REWARD_COMPONENTS: tuple[str, ...] = (
    "radgraph_partial",
    "chexbert_micro14",
    "ratescore",
    "chexpert_balanced",
)
LABELER_NAMES: tuple[str, ...] = ("rules", "chexbert")
ENTITY_NAMES: tuple[str, ...] = ("lexicon", "rate", "radgraph")
# What each entity backend produces (annotators/entities.py ENTITY_OUTPUTS; equality tested).
ENTITY_OUTPUTS: dict[str, tuple[str, ...]] = {
    "lexicon": ("rate", "graph"),
    "rate": ("rate",),
    "radgraph": ("graph",),
}
EMBEDDER_NAMES: tuple[str, ...] = ("lexical", "minilm", "biolord")
RATESCORE_VERSION_NAMES: tuple[str, ...] = ("0.5", "0.6", "0.6-short")


@dataclass
class RewardConfig(Section):
    """Composite clinical reward: weighted components (default: the paper's R in [0, 3]) and the
    annotator backend each uses (offline by default), scored in-process or by a reward server."""

    components: dict[str, float] = field(
        default_factory=lambda: {"radgraph_partial": 1.0, "chexbert_micro14": 1.0, "ratescore": 1.0}
    )
    labeler: str = "rules"
    labeler_checkpoint: str | None = None
    entities: str = "lexicon"
    entity_model: str | None = None
    # Backend of the RadGraph graphs for radgraph_partial; None: `entities` (which must then make
    # graphs: `rate` makes only RaTE entities, `radgraph` only graphs).
    graph_entities: str | None = None
    embedder: str = "lexical"
    embedder_model: str | None = None
    ratescore_version: str = "0.5"
    # freqs.json of `editgrpo label-stats` (training positive frequencies), for chexpert_balanced.
    label_freqs: str | None = None
    scoring: str = "inprocess"
    server_url: str | None = None
    server_token_env: str = "EDITGRPO_REWARD_TOKEN"
    timeout_s: float = 60.0
    retries: int = 3
    # What an empty completion earns: "floor" (0.0, default) or "score" (the components' own values,
    # the authors' release); rewards/composite.py says why. Emptiness is decided after the evaluation
    # cleaner `empty_clean` (text/clean.py: "none" strips whitespace, "editgrpo" the authors' cleaning).
    empty_completion: str = "floor"
    empty_clean: str = "none"

    SCORING: ClassVar[tuple[str, ...]] = ("inprocess", "server")
    EMPTY_COMPLETION: ClassVar[tuple[str, ...]] = ("floor", "score")  # rewards.composite (tested)
    CLEANERS: ClassVar[tuple[str, ...]] = ("none", "editgrpo")  # text.clean.CLEANERS (tested)

    def problems(self) -> list[Problem]:
        out = _choice("", "scoring", self.scoring, self.SCORING)
        out += _choice("", "empty_completion", self.empty_completion, self.EMPTY_COMPLETION)
        out += _choice("", "empty_clean", self.empty_clean, self.CLEANERS)
        out += _choice("", "labeler", self.labeler, LABELER_NAMES)
        out += _choice("", "entities", self.entities, ENTITY_NAMES)
        if self.graph_entities is not None:
            out += _choice("", "graph_entities", self.graph_entities, ENTITY_NAMES)
        graph_backend = self.graph_entities or self.entities
        if "ratescore" in self.components and "rate" not in ENTITY_OUTPUTS.get(self.entities, ("rate",)):
            out.append(
                Problem(
                    "entities",
                    self.entities,
                    "makes no RaTE entities, which the ratescore component needs",
                    "use entities=rate (RaTE-NER) or lexicon (offline)",
                )
            )
        if "radgraph_partial" in self.components and "graph" not in ENTITY_OUTPUTS.get(
            graph_backend, ("graph",)
        ):
            out.append(
                Problem(
                    "graph_entities",
                    self.graph_entities,
                    f"the {graph_backend!r} backend makes no RadGraph graphs, which radgraph_partial needs",
                    "set graph_entities=radgraph (the RadGraph model) or lexicon (offline)",
                )
            )
        out += _choice("", "embedder", self.embedder, EMBEDDER_NAMES)
        out += _choice("", "ratescore_version", self.ratescore_version, RATESCORE_VERSION_NAMES)
        out += _positive("", "timeout_s", self.timeout_s)
        out += _positive("", "retries", self.retries, allow_zero=True)
        if not self.components:
            out.append(Problem("components", {}, "is empty", "give at least one component with a weight"))
        for name, weight in self.components.items():
            if name not in REWARD_COMPONENTS:
                close = difflib.get_close_matches(str(name), REWARD_COMPONENTS, n=1)
                out.append(
                    Problem(
                        f"components.{name}",
                        weight,
                        f"{name!r} is not a reward component (known: {', '.join(REWARD_COMPONENTS)})",
                        f"did you mean {close[0]!r}?" if close else "use one of the known names",
                    )
                )
            if weight < 0:
                out.append(
                    Problem(f"components.{name}", weight, "weights must be >= 0", "use a non-negative weight")
                )
        if "chexpert_balanced" in self.components and not self.label_freqs:
            out.append(
                Problem(
                    "label_freqs",
                    self.label_freqs,
                    "is required when components include chexpert_balanced (its weights are the "
                    "training positive frequencies)",
                    "run `editgrpo label-stats MANIFEST --out freqs.json` on the training manifest and "
                    "set reward.label_freqs=freqs.json",
                )
            )
        if self.labeler == "chexbert" and not self.labeler_checkpoint:
            out.append(
                Problem(
                    "labeler_checkpoint",
                    None,
                    "is required when labeler is chexbert",
                    "give the path of chexbert.pth (or its hub id), or use labeler=rules",
                )
            )
        if self.scoring == "server" and not self.server_url:
            out.append(
                Problem(
                    "server_url",
                    self.server_url,
                    "is required when scoring is server",
                    "start `editgrpo serve-rewards` and give its URL",
                )
            )
        return out


@dataclass
class LossConfig(Section):
    """Policy loss (EDITGRPO.md section 2.6): PPO-clip, k3 KL to the reference, Dr. GRPO aggregation."""

    clip_eps_low: float = 0.2
    clip_eps_high: float = 0.2
    kl_beta: float = 0.01
    kl_estimator: str = "k3"
    # Per-token KL estimate clamped to [-kl_clamp, kl_clamp] (core/losses.py kl_penalty); 10 as the
    # authors' release (verl low_var_kl); null for no clamp.
    kl_clamp: float | None = 10.0
    advantage_scale: str = "none"
    aggregation: str = "dr_grpo"

    KL_ESTIMATORS: ClassVar[tuple[str, ...]] = ("k1", "k2", "k3")
    ADVANTAGE_SCALES: ClassVar[tuple[str, ...]] = ("none", "group_std")
    AGGREGATIONS: ClassVar[tuple[str, ...]] = ("dr_grpo", "token_mean", "sequence_mean")

    def problems(self) -> list[Problem]:
        out = _choice("", "kl_estimator", self.kl_estimator, self.KL_ESTIMATORS)
        out += _choice("", "advantage_scale", self.advantage_scale, self.ADVANTAGE_SCALES)
        out += _choice("", "aggregation", self.aggregation, self.AGGREGATIONS)
        out += _positive("", "clip_eps_low", self.clip_eps_low)
        out += _positive("", "clip_eps_high", self.clip_eps_high)
        out += _positive("", "kl_beta", self.kl_beta, allow_zero=True)
        out += _positive("", "kl_clamp", self.kl_clamp)
        return out


# transformers' `report_to` integrations (transformers/integrations/integration_utils.py
# INTEGRATION_TO_CALLBACK) -> the module each needs, and the pip command that installs it.
REPORT_TO: dict[str, tuple[str | None, str]] = {
    "none": (None, ""),
    "all": (None, ""),
    "tensorboard": ("tensorboard", "pip install -e '.[tensorboard]'"),
    "wandb": ("wandb", "pip install -e '.[wandb]'"),
    "mlflow": ("mlflow", "pip install mlflow"),
    "comet_ml": ("comet_ml", "pip install comet_ml"),
    "clearml": ("clearml", "pip install clearml"),
    "neptune": ("neptune", "pip install neptune"),
    "dvclive": ("dvclive", "pip install dvclive"),
    "trackio": ("trackio", "pip install trackio"),
    "swanlab": ("swanlab", "pip install swanlab"),
    "azure_ml": ("azureml", "pip install azureml-sdk"),
    "codecarbon": ("codecarbon", "pip install codecarbon"),
    "dagshub": ("dagshub", "pip install dagshub"),
    "flyte": ("flytekit", "pip install flytekit"),
}


def _eval_on_test_problems(data: DataConfig) -> list[Problem]:
    """Training-time evaluation on the test split is refused unless the recipe says so."""
    if data.eval and data.eval_split == "test" and not data.eval_on_test:
        return [
            Problem(
                "data.eval_split",
                "test",
                "evaluating on test studies during training chooses checkpoints on test data",
                "evaluate on the validate split (data.eval_split=validate), or set data.eval_on_test=true "
                "to do it on purpose",
            )
        ]
    return []


def _report_to_problems(report_to: list[str]) -> list[Problem]:
    """Unknown logging backends (with the closest name) and missing packages (with the pip
    command), found when the recipe loads instead of seconds into a run."""
    import importlib.util

    out = []
    for name in report_to:
        if name not in REPORT_TO:
            out += _choice("", "report_to", name, tuple(REPORT_TO))
            continue
        module, install = REPORT_TO[name]
        if module is not None and importlib.util.find_spec(module) is None:
            out.append(
                Problem("report_to", name, f"the {module!r} package is not installed", f"run `{install}`")
            )
    if len(report_to) > 1 and {"none", "all"} & set(report_to):
        out.append(
            Problem(
                "report_to",
                report_to,
                "'none' and 'all' stand alone",
                "give [none], [all] or a list of backends",
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------


@dataclass
class LoraConfig(Section):
    """LoRA adapters for SFT (peft). Off: full fine-tuning of every unfrozen parameter.

    ``target_modules`` are leaf module names matched inside the language model only (Qwen2.5-VL's
    vision blocks also have ``gate_proj``/``up_proj``/``down_proj``, which must not get adapters by
    accident); ``vision_target_modules`` are leaf names matched inside the vision tower (its blocks
    name them ``qkv``, ``proj``, ``gate_proj``, ``up_proj``, ``down_proj``), empty by default."""

    enabled: bool = False
    r: int = 16
    # LoRA scales the update by alpha / r (Hu et al. 2021, section 4.1); alpha = 2r is the common choice.
    alpha: int = 32
    dropout: float = 0.05
    # Attention + MLP projections of every Qwen2.5-VL decoder layer (the QLoRA recipe: all linear layers).
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    vision_target_modules: list[str] = field(default_factory=list)

    def problems(self) -> list[Problem]:
        out = _positive("", "r", self.r)
        out += _positive("", "alpha", self.alpha)
        if not 0.0 <= self.dropout < 1.0:
            out.append(
                Problem("dropout", self.dropout, "must be in [0, 1)", "use e.g. 0.05 (0 turns it off)")
            )
        if self.enabled and not self.target_modules and not self.vision_target_modules:
            out.append(
                Problem(
                    "target_modules",
                    self.target_modules,
                    "is empty (and so is vision_target_modules): LoRA would train nothing",
                    "name leaf modules, e.g. [q_proj, k_proj, v_proj, o_proj], or set lora.enabled=false",
                )
            )
        for name, modules in (
            ("target_modules", self.target_modules),
            ("vision_target_modules", self.vision_target_modules),
        ):
            dotted = [m for m in modules if not m or "." in m]
            if dotted:
                out.append(
                    Problem(
                        name,
                        modules,
                        f"entries must be leaf module names without dots, got {dotted}",
                        "give the last part of the module name, e.g. q_proj",
                    )
                )
        return out


@dataclass
class SFTConfig(Section):
    """Supervised fine-tuning on the target section (loss on answer tokens only)."""

    stage: str = "sft"
    seed: int = 0
    output_dir: str = "runs/sft"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(learning_rate=1e-5, lr_scheduler="cosine"))
    # LoRA adapters (final/ is then the merged full model); disabled = full fine-tuning.
    lora: LoraConfig = field(default_factory=LoraConfig)
    per_device_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    num_epochs: float = 3.0
    max_steps: int = -1
    max_length: int = 2048
    logging_steps: int = 10
    save_steps: int = 500
    # EDITGRPO.md section 1: RL starts from the checkpoint one epoch before SFT converges, so every
    # epoch is kept (false: every save_steps optimizer steps).
    save_each_epoch: bool = True
    gradient_checkpointing: bool = True
    # Clinical evaluation at each epoch end (and each save when save_each_epoch is false): greedy
    # reports for the first N studies of data.eval, scored with the offline metrics (chexpert-rules
    # F1, lexicon RadGraph F1). 0 turns it off.
    eval_clinical_samples: int = 64
    eval_clinical_max_new_tokens: int = 256
    # Logging backends as transformers' `report_to`: "none", "tensorboard", "wandb" (a list is fine).
    report_to: list[str] = field(default_factory=lambda: ["none"])
    use_cpu: bool = False
    # Passed verbatim to TRL's argument class (SFTConfig / GRPOConfig), e.g. run_name, push_to_hub,
    # log_completions; keys editgrpo sets itself are refused with the recipe key to use
    # (training/trl_args.py).
    trl: dict[str, Any] = field(default_factory=dict)

    def problems(self) -> list[Problem]:
        out = _positive("", "per_device_batch_size", self.per_device_batch_size)
        out += _positive("", "save_steps", self.save_steps)
        out += _positive("", "eval_clinical_samples", self.eval_clinical_samples, allow_zero=True)
        out += _positive("", "eval_clinical_max_new_tokens", self.eval_clinical_max_new_tokens)
        out += _positive("", "gradient_accumulation_steps", self.gradient_accumulation_steps)
        out += _positive("", "max_length", self.max_length)
        out += _positive("", "logging_steps", self.logging_steps)
        if self.max_steps <= 0 and self.num_epochs <= 0:
            out.append(
                Problem(
                    "num_epochs",
                    self.num_epochs,
                    "and max_steps <= 0 leave nothing to train",
                    "set num_epochs > 0 or max_steps > 0",
                )
            )
        out += _use_cpu_problems(self.use_cpu, self.model)
        out += _report_to_problems(self.report_to)
        out += _eval_on_test_problems(self.data)
        return out


@dataclass
class RLConfig(Section):
    """EditGRPO (or plain Dr. GRPO with ``edit.enabled=false``). Defaults: the paper's run."""

    stage: str = "rl"
    seed: int = 0
    output_dir: str = "runs/rl"
    model: ModelConfig = field(default_factory=lambda: ModelConfig(freeze_vision=True))
    # KL reference; None means the initial policy (the paper: the SFT checkpoint RL starts from).
    reference_model: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    edit: EditConfig = field(default_factory=EditConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    prompts_per_step: int = 32
    # Completions per forward/backward micro-batch on one device; None: a device's whole share of
    # the step (prompts_per_step * group_size / devices). Gradients accumulate over micro-batches
    # and the optimizer steps once per rollout batch (EDITGRPO.md section 5).
    per_device_batch_size: int | None = None
    max_steps: int = 1000
    logging_steps: int = 1
    save_steps: int = 100
    # Complete checkpoints kept (None: all); older ones are deleted after a new one is complete.
    save_total_limit: int | None = None
    gradient_checkpointing: bool = False
    # Logging backends as transformers' `report_to`: "none", "tensorboard", "wandb" (a list is fine).
    report_to: list[str] = field(default_factory=lambda: ["none"])
    # A rich progress bar with the step, the on-policy reward and the edit rate (false: plain logs).
    progress_bar: bool = True
    # Clinical validation during RL (as SFT's): every eval_steps optimizer steps (None: every
    # save_steps) and at the end, greedy reports for the first eval_clinical_samples studies of
    # data.eval scored with the offline metrics, logged and appended to clinical_eval.jsonl (0: off).
    eval_steps: int | None = None
    eval_clinical_samples: int = 64
    # None: rollout.max_completion_length.
    eval_clinical_max_new_tokens: int | None = None
    use_cpu: bool = False
    # Passed verbatim to TRL's argument class (SFTConfig / GRPOConfig), e.g. run_name, push_to_hub,
    # log_completions; keys editgrpo sets itself are refused with the recipe key to use
    # (training/trl_args.py).
    trl: dict[str, Any] = field(default_factory=dict)

    def num_edits(self) -> int:
        """k: edited copies per group (``edit.num_edits``, default G // 2); 0 when edits are off."""
        if not self.edit.enabled:
            return 0
        return self.edit.num_edits if self.edit.num_edits is not None else self.rollout.group_size // 2

    def problems(self) -> list[Problem]:
        out = _positive("", "prompts_per_step", self.prompts_per_step)
        out += _positive("", "max_steps", self.max_steps)
        out += _positive("", "logging_steps", self.logging_steps)
        out += _positive("", "save_steps", self.save_steps)
        out += _positive("", "save_total_limit", self.save_total_limit)
        out += _positive("", "per_device_batch_size", self.per_device_batch_size)
        out += _positive("", "eval_steps", self.eval_steps)
        out += _positive("", "eval_clinical_samples", self.eval_clinical_samples, allow_zero=True)
        out += _positive("", "eval_clinical_max_new_tokens", self.eval_clinical_max_new_tokens)
        k, group = self.num_edits(), self.rollout.group_size
        completions = self.prompts_per_step * group
        if (
            self.per_device_batch_size is not None
            and self.per_device_batch_size > 0
            and completions % self.per_device_batch_size
        ):
            out.append(
                Problem(
                    "per_device_batch_size",
                    self.per_device_batch_size,
                    f"must divide the completions of a step (prompts_per_step * rollout.group_size = {completions})",
                    f"use a divisor of {completions}, e.g. {group}",
                )
            )
        # Sources are on-policy members (fill: k <= G - k; overwrite: k sources + k distinct targets).
        if self.edit.enabled and group >= 2 and 2 * k > group:
            out.append(
                Problem(
                    "edit.num_edits",
                    k,
                    f"must be <= rollout.group_size // 2 ({group // 2}): each edited copy needs its own "
                    "on-policy source",
                    f"set edit.num_edits <= {group // 2} or raise rollout.group_size",
                )
            )
        out += _use_cpu_problems(self.use_cpu, self.model)
        out += _report_to_problems(self.report_to)
        out += _eval_on_test_problems(self.data)
        return out


@dataclass
class GenerateConfig(Section):
    """Write reports for a manifest's studies (validation and inference never edit)."""

    stage: str = "generate"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    output: str = "runs/generate/predictions.jsonl"
    batch_size: int = 8
    max_new_tokens: int = 256
    temperature: float = 0.0
    num_samples: int = 1
    # hf: transformers generate (CPU or GPU); vllm: vLLM's offline engine (CUDA GPUs, the `gpu` extra).
    engine: str = "hf"
    # vllm only: share of each GPU's memory vLLM may take (weights + KV cache), GPUs per model
    # copy, and the context length (None: the checkpoint's).
    vllm_gpu_memory_utilization: float = 0.9
    vllm_tensor_parallel_size: int = 1
    vllm_max_model_len: int | None = None

    ENGINES: ClassVar[tuple[str, ...]] = ("hf", "vllm")

    def problems(self) -> list[Problem]:
        out = _choice("", "engine", self.engine, self.ENGINES)
        out += _positive("", "batch_size", self.batch_size)
        out += _positive("", "max_new_tokens", self.max_new_tokens)
        out += _positive("", "temperature", self.temperature, allow_zero=True)
        out += _positive("", "num_samples", self.num_samples)
        if not 0.0 < self.vllm_gpu_memory_utilization <= 1.0:
            out.append(
                Problem(
                    "vllm_gpu_memory_utilization",
                    self.vllm_gpu_memory_utilization,
                    "must be in (0, 1]",
                    "use 0.9 (lower it when another process shares the GPU)",
                )
            )
        out += _positive("", "vllm_tensor_parallel_size", self.vllm_tensor_parallel_size)
        out += _positive("", "vllm_max_model_len", self.vllm_max_model_len)
        if self.vllm_max_model_len is not None and 0 < self.vllm_max_model_len <= self.max_new_tokens:
            out.append(
                Problem(
                    "vllm_max_model_len",
                    self.vllm_max_model_len,
                    f"leaves no room for the prompt: it must exceed max_new_tokens ({self.max_new_tokens})",
                    "raise it (prompt tokens, images included, + max_new_tokens) or leave it unset "
                    "for the checkpoint's",
                )
            )
        if self.num_samples > 1 and self.temperature == 0:
            out.append(
                Problem(
                    "num_samples",
                    self.num_samples,
                    "greedy decoding (temperature 0) gives identical samples",
                    "set temperature > 0 or num_samples=1",
                )
            )
        return out


@dataclass
class EvaluateConfig(Section):
    """What ``editgrpo evaluate --recipe`` scores and how: the fields are the command's options
    (``eval.evaluate.evaluate`` and the GREEN judge of ``annotators.green_judge``)."""

    stage: str = "evaluate"
    seed: int = 0
    # One predictions file, or several scored side by side into output_dir/<name>/.
    predictions: list[str] = field(default_factory=lambda: ["runs/generate/predictions.jsonl"])
    output_dir: str = "runs/evaluate"
    # Metric groups (eval.evaluate.METRIC_GROUPS); null: all of them.
    metrics: list[str] | None = None
    clean: str = "none"
    labeler: str = "rules"
    entities: str = "lexicon"
    graph_entities: str | None = None
    embedder: str = "lexical"
    ratescore_version: str = "0.5"
    # GREEN judge: a model folder / hub id (transformers) or an OpenAI-compatible /v1 URL; null: none.
    green_judge: str | None = None
    green_judge_model: str = "StanfordAIMI/GREEN-RadLlama2-7b"  # the served model name (URL judges)
    green_judge_endpoint: str = "completions"
    green_judge_key_env: str | None = None  # environment variable holding the API key (URL judges)
    green_judge_max_new_tokens: int = 1024
    green_judge_batch_size: int = 8
    bootstrap_samples: int = 1000
    confidence: float = 0.95
    meteor: bool = True
    on_error: str = "fail"
    report: bool = True
    progress: str = "auto"

    METRIC_GROUPS: ClassVar[tuple[str, ...]] = (
        "chexbert",
        "radgraph",
        "ratescore",
        "green",
        "lexical",
    )  # tested
    CLEANERS: ClassVar[tuple[str, ...]] = ("none", "editgrpo")
    ON_ERROR: ClassVar[tuple[str, ...]] = ("fail", "skip")
    PROGRESS: ClassVar[tuple[str, ...]] = ("auto", "on", "off")
    ENDPOINTS: ClassVar[tuple[str, ...]] = ("completions", "chat")

    def problems(self) -> list[Problem]:
        out = _positive("", "bootstrap_samples", self.bootstrap_samples)
        if not self.predictions:
            out.append(Problem("predictions", [], "is empty", "name at least one predictions .jsonl"))
        for name in self.metrics or []:
            out += _choice("", "metrics", name, self.METRIC_GROUPS)
        if self.metrics is not None and not self.metrics:
            out.append(Problem("metrics", [], "is empty", "name at least one metric group, or null for all"))
        out += _choice("", "clean", self.clean, self.CLEANERS)
        out += _choice("", "on_error", self.on_error, self.ON_ERROR)
        out += _choice("", "progress", self.progress, self.PROGRESS)
        out += _choice("", "green_judge_endpoint", self.green_judge_endpoint, self.ENDPOINTS)
        out += _positive("", "green_judge_max_new_tokens", self.green_judge_max_new_tokens)
        out += _positive("", "green_judge_batch_size", self.green_judge_batch_size)
        if not 0.0 < self.confidence < 1.0:
            out.append(Problem("confidence", self.confidence, "must be in (0, 1)", "use 0.95"))
        if self.green_judge is None and self.metrics is not None and "green" in self.metrics:
            out.append(
                Problem(
                    "metrics", self.metrics, "names green without a judge", "set green_judge or drop green"
                )
            )
        if self.green_judge is not None and self.metrics is not None and "green" not in self.metrics:
            out.append(
                Problem(
                    "green_judge",
                    self.green_judge,
                    "is set but metrics leaves out green",
                    "add green to metrics",
                )
            )
        return out


def _use_cpu_problems(use_cpu: bool, model: ModelConfig) -> list[Problem]:
    # TRL on CPU needs fp32: bf16 autocast is refused by its CPU path (TrainingArguments bf16=False).
    if use_cpu and model.dtype in ("bfloat16", "float16"):
        return [
            Problem(
                "model.dtype",
                model.dtype,
                "half precision is not supported with use_cpu=true",
                "set model.dtype=float32",
            )
        ]
    return []


STAGES: dict[str, type[Section]] = {
    "sft": SFTConfig,
    "rl": RLConfig,
    "generate": GenerateConfig,
    "evaluate": EvaluateConfig,
}

StageConfig = SFTConfig | RLConfig | GenerateConfig | EvaluateConfig


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def _yaml_key_lines(text: str) -> dict[str, int]:
    """Dotted key -> 1-based line in the YAML text, for messages that point at the recipe."""
    import yaml

    lines: dict[str, int] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = f"{prefix}{key_node.value}"
                lines[key] = key_node.start_mark.line + 1
                walk(value_node, key + ".")

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines
    walk(root, "")
    return lines


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _field_types(cls: type) -> dict[str, Any]:
    import typing

    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unknown_keys(cls: type, data: dict[str, Any], prefix: str, where) -> list[Problem]:
    """Every key of ``data`` that ``cls`` does not define, with the closest valid name."""
    out: list[Problem] = []
    types = _field_types(cls)
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in types:
            close = difflib.get_close_matches(str(key), list(types), n=1, cutoff=0.5)
            fix = f"did you mean '{prefix}{close[0]}'?" if close else f"valid keys here: {', '.join(types)}"
            out.append(Problem(path, value, f"is not a key of {cls.__name__}", fix, where(path)))
        elif _is_dataclass_type(types[key]):
            if isinstance(value, dict):
                out += _unknown_keys(types[key], value, path + ".", where)
            else:
                out.append(
                    Problem(
                        path,
                        value,
                        f"is a section ({types[key].__name__})",
                        "give a mapping of its keys",
                        where(path),
                    )
                )
    return out


def _leaves(cls: type, data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) pairs to set one at a time; a dict-typed field is one leaf (replaced,
    not merged, so ``reward.components: {ratescore: 1}`` means only RaTEScore)."""
    out: list[tuple[str, Any]] = []
    types = _field_types(cls)
    for key, value in data.items():
        if _is_dataclass_type(types.get(key)) and isinstance(value, dict):
            out += _leaves(types[key], value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _declared_type(cls: type, dotted: str) -> str:
    tp: Any = cls
    for part in dotted.split("."):
        if not _is_dataclass_type(tp):
            break
        tp = _field_types(tp).get(part, Any)
    return getattr(tp, "__name__", None) if isinstance(tp, type) else str(tp)


def _collect_problems(obj: Any, prefix: str = "") -> list[Problem]:
    out: list[Problem] = []
    for f in dataclasses.fields(obj):
        child = getattr(obj, f.name)
        if isinstance(child, Section):
            out += _collect_problems(child, f"{prefix}{f.name}.")
    for problem in obj.all_problems():
        name = problem.field if problem.field.startswith(prefix) else f"{prefix}{problem.field}"
        out.append(dataclasses.replace(problem, field=name))
    return out


def _parse_overrides(overrides: list[str]) -> tuple[dict[str, Any], dict[str, str], list[Problem]]:
    """``key.sub=value`` strings -> nested dict (values parsed as YAML scalars), their sources."""
    import yaml

    nested: dict[str, Any] = {}
    sources: dict[str, str] = {}
    problems: list[Problem] = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            problems.append(
                Problem(
                    item, None, "is not a key=value override", "write it as section.key=value", "override"
                )
            )
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                problems.append(
                    Problem(
                        key, value, "overrides inside a key that already has a value", "drop one", "override"
                    )
                )
                break
        else:
            node[parts[-1]] = value
            sources[key] = f"override '{item}'"
    return nested, sources, problems


def _merge_overrides(
    cls: type | None, base: dict[str, Any], extra: dict[str, Any], sources: dict[str, str], prefix: str = ""
) -> dict[str, Any]:
    """The recipe's data with the overrides applied. Sections merge key by key; a mapping-valued
    field (``reward.components``, ``trl``) given whole by an override (``reward.components={...}``)
    *replaces* the recipe's mapping, as the README says, while a dotted override into it
    (``reward.components.ratescore=2``) sets that one entry."""
    out = dict(base)
    types = _field_types(cls) if cls is not None and _is_dataclass_type(cls) else {}
    for key, value in extra.items():
        path = f"{prefix}{key}"
        field_type = types.get(key)
        section = _is_dataclass_type(field_type)
        if isinstance(value, dict) and isinstance(out.get(key), dict) and (section or path not in sources):
            out[key] = _merge_overrides(field_type if section else None, out[key], value, sources, path + ".")
        else:
            out[key] = value
    return out


# Bounds of a recipe: a recipe is a few KB; an alias bomb ("a: &a [x, x]", "b: &b [*a, *a]" ...)
# expands exponentially while its text stays tiny.
MAX_RECIPE_BYTES = 1_000_000
MAX_RECIPE_NODES = 100_000


class _RecipeShapeError(Exception):
    def __init__(self, reason: str, fix: str, at: str) -> None:
        super().__init__(reason)
        self.reason, self.fix, self.at = reason, fix, at


def _check_yaml_size(text: str, path: Path) -> None:
    """Refuse a recipe whose nodes, aliases expanded, exceed MAX_RECIPE_NODES (counted on the
    composed graph with one count per distinct node, so the check itself stays cheap)."""
    import yaml

    root = yaml.compose(text)
    if root is None:
        return
    sizes: dict[int, int] = {}

    def size(node: Any) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        sizes[key] = 1  # a cycle counts once (PyYAML refuses recursive objects later anyway)
        if isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(v) for v in node.value)
        else:
            total = 1
        sizes[key] = min(total, MAX_RECIPE_NODES + 1)
        return sizes[key]

    if size(root) > MAX_RECIPE_NODES:
        raise _RecipeShapeError(
            f"expands to more than {MAX_RECIPE_NODES:,} YAML nodes (aliases of aliases)",
            "write the values out; a recipe needs no nested aliases",
            str(path),
        )


@functools.cache
def _unique_key_loader() -> type:
    """The duplicate-refusing loader class, built on first use (PyYAML is imported lazily)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last)."""

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    hashable = hash(key) is not None
                except TypeError:
                    hashable = False
                if hashable and key in seen:
                    raise _RecipeShapeError(
                        f"gives the key {key!r} twice (lines {seen[key]} and {key_node.start_mark.line + 1}); "
                        "YAML would silently keep the last",
                        "keep one of them",
                        str(key_node.start_mark.line + 1),  # the caller adds the file
                    )
                if hashable:
                    seen[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def load_config(
    recipe: str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    stage: str | None = None,
) -> StageConfig:
    """Load a stage config from a YAML recipe (or only overrides, given ``stage``).

    Raises ``ConfigError`` listing every problem (unknown keys with the closest valid name, values
    of the wrong type, broken cross-field rules)."""
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides or [])
    origin = str(recipe) if recipe is not None else "(no recipe)"
    lines: dict[str, int] = {}
    data: dict[str, Any] = {}
    if recipe is not None:
        path = Path(recipe)
        if not path.is_file():
            raise ConfigError(
                [Problem("recipe", str(recipe), "file not found", "give the path of a YAML recipe")], origin
            )
        if path.stat().st_size > MAX_RECIPE_BYTES:
            raise ConfigError(
                [
                    Problem(
                        "recipe",
                        str(path),
                        f"is {path.stat().st_size:,} bytes, more than a recipe can be ({MAX_RECIPE_BYTES:,})",
                        "give a recipe file, not a data file",
                    )
                ],
                origin,
            )
        text = path.read_text(encoding="utf-8")
        lines = _yaml_key_lines(text)
        try:
            _check_yaml_size(text, path)
            loaded = yaml.load(text, Loader=_unique_key_loader())
        except _RecipeShapeError as err:
            at = f"{path}:{err.at}" if err.at.isdigit() else err.at
            raise ConfigError([Problem("recipe", str(path), err.reason, err.fix, at)], origin) from None
        except yaml.YAMLError as err:
            # context_mark is where the broken construct opened (an unclosed bracket), more useful
            # than problem_mark, which is often the end of the file.
            mark = getattr(err, "context_mark", None) or getattr(err, "problem_mark", None)
            at = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            reason = f"is not valid YAML ({getattr(err, 'problem', None) or err})"
            raise ConfigError(
                [Problem("recipe", str(path), reason, "correct the YAML syntax at that line", at)], origin
            ) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(
                [
                    Problem(
                        "recipe",
                        type(loaded).__name__,
                        "must be a mapping of keys",
                        "start with `stage: ...`",
                    )
                ],
                origin,
            )
        data = loaded

    override_data, override_sources, problems = _parse_overrides(overrides)
    stage_hint = STAGES.get((override_data.get("stage") or data.get("stage") or stage) or "")
    data = _merge_overrides(stage_hint, data, override_data, override_sources)

    def where(key: str) -> str:
        # The override that set the key or one of its parents, else the recipe line of the key
        # or of its closest parent that the recipe spells out.
        parts = key.split(".")
        for depth in range(len(parts), 0, -1):
            prefix = ".".join(parts[:depth])
            if prefix in override_sources:
                return override_sources[prefix]
        for depth in range(len(parts), 0, -1):
            prefix = ".".join(parts[:depth])
            if prefix in lines:
                return f"{recipe}:{lines[prefix]}"
        return str(recipe or "")

    stage_name = data.get("stage", stage)
    if stage is not None and stage_name != stage:
        problems.append(
            Problem("stage", stage_name, f"this command needs a {stage!r} recipe", "pick a matching recipe")
        )
    if stage_name not in STAGES:
        problems.append(
            Problem(
                "stage",
                stage_name,
                f"must be one of {', '.join(STAGES)}",
                "start the recipe with e.g. `stage: rl`",
                where("stage"),
            )
        )
        raise ConfigError(problems, origin)
    cls = STAGES[stage_name]
    data = {**data, "stage": stage_name}
    # Unknown keys are reported but skipped, so the tree can still be built and its rules checked:
    # one run shows every problem except rule violations hidden behind a value of the wrong type.
    unknown = _unknown_keys(cls, data, "", where)
    unknown_keys = {p.field for p in unknown}

    token = _DEFER_CHECKS.set(True)
    try:
        structured = OmegaConf.structured(cls)
        for key, value in _leaves(cls, data):
            if any(key == u or key.startswith(u + ".") for u in unknown_keys):
                continue
            try:
                OmegaConf.update(structured, key, value, merge=False)
            except OmegaConfBaseException as err:
                reason = str(err).split("\n")[0]
                fix = f"give a value of type {_declared_type(cls, key)}"
                problems.append(Problem(key, value, reason, fix, where(key)))
        if problems:
            raise ConfigError(unknown + problems, origin)
        config = OmegaConf.to_object(structured)
    finally:
        _DEFER_CHECKS.reset(token)
    problems = unknown + [
        dataclasses.replace(p, source=p.source or where(p.field)) for p in _collect_problems(config)
    ]
    if problems:
        raise ConfigError(problems, origin)
    return config


def to_yaml(config: Section) -> str:
    """The config as YAML, every field present (defaults resolved)."""
    import yaml

    return yaml.safe_dump(dataclasses.asdict(config), sort_keys=False)


def save_resolved_config(config: Section, output_dir: str | Path) -> Path:
    """Write the fully resolved config next to a run's outputs (``resolved_config.yaml``)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / RESOLVED_CONFIG_NAME
    target.write_text(to_yaml(config), encoding="utf-8")
    return target
