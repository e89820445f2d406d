"""Model cards of final checkpoints: the base model followed back through local checkpoints."""

from __future__ import annotations

from pathlib import Path

from editgrpo.config import load_config
from editgrpo.training.model_card import base_model_of, method_of, write_model_card


def test_the_base_model_is_followed_back_through_local_checkpoints(tmp_path: Path) -> None:
    sft_final = tmp_path / "sft" / "final"
    sft_final.mkdir(parents=True)
    sft = load_config(None, ["model.name_or_path=Qwen/Qwen2.5-VL-3B-Instruct"], stage="sft")
    write_model_card(sft_final, sft, global_step=30)
    sft_card = (sft_final / "README.md").read_text()
    assert "base_model: Qwen/Qwen2.5-VL-3B-Instruct\n" in sft_card and "trained with **SFT**" in sft_card

    rl_final = tmp_path / "rl" / "final"
    rl_final.mkdir(parents=True)
    rl = load_config(None, [f"model.name_or_path={sft_final}", "edit.rule=release"], stage="rl")
    write_model_card(rl_final, rl, global_step=1000)
    card = (rl_final / "README.md").read_text()
    assert "base_model: Qwen/Qwen2.5-VL-3B-Instruct\n" in card
    assert f"finetuned_from: {sft_final}\n" in card
    assert "- editgrpo\n" in card and "trained with **EditGRPO**" in card
    assert "- edits: rule `release`, 4 edited copies per group (`fill`)" in card
    assert "offline approximations" in card and "- optimizer steps: 1000" in card
    assert base_model_of(str(rl_final)) == "Qwen/Qwen2.5-VL-3B-Instruct"
    # A local folder without a card is its own base; a hub id is itself.
    assert base_model_of(str(tmp_path)) == str(tmp_path)


def test_the_method_is_named_as_the_paper_does() -> None:
    rl = ["model.name_or_path=x"]
    assert method_of(load_config(None, rl, stage="rl")) == "EditGRPO"
    assert method_of(load_config(None, [*rl, "edit.enabled=false"], stage="rl")) == "Dr. GRPO"
    assert (
        method_of(
            load_config(None, [*rl, "edit.enabled=false", "loss.advantage_scale=group_std"], stage="rl")
        )
        == "GRPO"
    )
