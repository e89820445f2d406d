"""The model card (``README.md``) of a final checkpoint: base model, method, settings.

TRL writes its own card into ``output_dir`` at each save, but it names a base model only when the
policy came from the hub (a local SFT folder gives "fine-tuned version of [None]"). Here the base is
followed back: a local base checkpoint that has an editgrpo card of its own contributes that card's
``base_model`` (so an RL model of an SFT model of Qwen2.5-VL-3B names Qwen2.5-VL-3B), and
``finetuned_from`` keeps the immediate parent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PAPER = (
    "Zhang, Malon, Sun, Min. EditGRPO: Reinforcement Learning with Post-Rollout Edits for Clinically "
    "Accurate Chest X-Ray Report Generation. AACL-IJCNLP 2025, arXiv:2509.22812."
)


def _card_field(path: Path, key: str) -> str | None:
    """A top-level ``key: value`` of a card's YAML front matter (None when absent)."""
    card = path / "README.md"
    if not card.is_file():
        return None
    lines = card.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0] != "---":
        return None
    for line in lines[1:]:
        if line == "---":
            break
        name, sep, value = line.partition(":")
        if sep and name.strip() == key and value.strip():
            return value.strip()
    return None


def base_model_of(name_or_path: str) -> str:
    """The base model a checkpoint descends from (module docstring)."""
    path = Path(name_or_path)
    if path.is_dir():
        return _card_field(path, "base_model") or name_or_path
    return name_or_path


def method_of(config: Any) -> str:
    """What a recipe trains, in the paper's names."""
    if getattr(config, "stage", None) == "sft":
        return "SFT"
    if config.edit.enabled:
        return "EditGRPO"
    return "GRPO" if config.loss.advantage_scale == "group_std" else "Dr. GRPO"


def write_model_card(directory: str | Path, config: Any, *, global_step: int) -> Path:
    """Write ``directory/README.md`` for a final checkpoint trained by ``config``."""
    directory = Path(directory)
    parent = config.model.name_or_path
    base = base_model_of(parent)
    method = method_of(config)
    settings = [f"- optimizer steps: {global_step}", f"- learning rate: {config.optim.learning_rate}"]
    if method != "SFT":
        reward = config.reward
        components = " + ".join(f"{w:g} x {name}" for name, w in reward.components.items())
        settings += [
            f"- reward: {components} (labeler `{reward.labeler}`, entities `{reward.entities}`, embedder "
            f"`{reward.embedder}`; `rules`, `lexicon` and `lexical` are offline approximations, not the "
            "published models)",
            f"- group size {config.rollout.group_size}, {config.prompts_per_step} prompts per step, KL beta "
            f"{config.loss.kl_beta} ({config.loss.kl_estimator})",
        ]
        if config.edit.enabled:
            settings.append(
                f"- edits: rule `{config.edit.rule}`, {config.num_edits()} edited copies per group "
                f"(`{config.edit.generation}`), edited tokens `{config.edit.token_treatment}`"
            )
    text = "\n".join(
        [
            "---",
            f"base_model: {base}",
            f"finetuned_from: {parent}",
            "library_name: transformers",
            "pipeline_tag: image-text-to-text",
            "tags:",
            "- editgrpo",
            f"- {method.lower().replace('. ', '-').replace(' ', '-')}",
            "- radiology",
            "- chest-x-ray",
            "- report-generation",
            "---",
            "",
            f"# {Path(config.output_dir).name}",  # (written before final.partial is renamed)
            "",
            f"A fine-tuned version of `{base}` (immediate parent: `{parent}`), trained with **{method}** "
            "by editgrpo to write the FINDINGS section of chest X-ray reports.",
            "",
            "## Training",
            "",
            *settings,
            "",
            "The resolved recipe is `resolved_config.yaml` in the run folder, one level up.",
            "",
            "## Citation",
            "",
            PAPER,
            "",
        ]
    )
    path = directory / "README.md"
    temporary = path.with_name("README.md.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
    return path
