"""The paper's prompt for a study: view labels, order, limits, optional lines, determinism."""

from __future__ import annotations

import pytest

from editgrpo.data.prompts import INSTRUCTION_HEAD, INSTRUCTION_TAIL, PromptOptions, build_prompt
from editgrpo.data.schema import Image, Prior, Study


def _study(**changes) -> Study:
    base = dict(
        study_id="s1",
        dataset="fixture",
        split="train",
        images=(Image("lat.png", "LATERAL"), Image("pa.png", "PA")),
        indication="Fever.",
        technique="PA and lateral.",
        comparison="Prior study.",
        findings="Lungs are clear.",
        impression="Normal.",
        prior=Prior("s0", (Image("prior_pa.png", "PA"),), "2019-01-01", "Old effusion.", "Effusion."),
    )
    base.update(changes)
    return Study(**base)


def test_paper_prompt_with_views_and_lines() -> None:
    prompt = build_prompt(_study())
    assert prompt.view_labels == ["current PA", "current lateral", "prior PA"]
    assert prompt.image_paths == ["pa.png", "lat.png", "prior_pa.png"]
    assert prompt.text == (
        f"{INSTRUCTION_HEAD} Given the current PA image, the current lateral image, and the prior PA image. "
        f"{INSTRUCTION_TAIL}\nINDICATION: Fever.\nTECHNIQUE: PA and lateral.\nCOMPARISON: Prior study."
    )
    content = prompt.messages[0]["content"]
    assert [item["type"] for item in content] == ["image", "image", "image", "text"]
    assert "Old effusion" not in prompt.text  # the prior report stays out by default


def test_two_images_match_the_papers_example() -> None:
    prompt = build_prompt(_study(images=(Image("a.png", "AP"),)), PromptOptions(include_indication=False))
    assert "Given the current AP image, and the prior PA image. Please provide" in prompt.text


def test_limit_keeps_current_images_first_and_counts_the_rest() -> None:
    images = tuple(Image(f"{i}.png", view) for i, view in enumerate(["LATERAL", "AP", "PA", "OTHER"]))
    prompt = build_prompt(_study(images=images), PromptOptions(max_images=3))
    assert prompt.image_paths == ["2.png", "1.png", "0.png"]
    assert prompt.dropped_images == 2
    assert build_prompt(_study(), PromptOptions(use_prior_images=False)).view_labels == [
        "current PA",
        "current lateral",
    ]


def test_unknown_views_and_no_images() -> None:
    prompt = build_prompt(_study(images=(Image("x.png", "UNKNOWN"),), prior=None))
    assert "Given the current image." in prompt.text
    text_only = build_prompt(_study(images=(), prior=None))
    assert "Given" not in text_only.text and text_only.messages[0]["content"][-1]["type"] == "text"


def test_options_change_the_lines_pixels_and_target(tmp_path) -> None:
    options = PromptOptions(
        include_indication=False,
        include_technique=False,
        include_comparison=False,
        include_prior_report=True,
        min_pixels=3136,
        max_pixels=12544,
    )
    prompt = build_prompt(_study(), options, image_root=tmp_path, target_section="findings")
    assert prompt.text.endswith("\nPRIOR REPORT: Old effusion. Effusion.")
    first = prompt.messages[0]["content"][0]
    assert first == {
        "type": "image",
        "image": str(tmp_path / "pa.png"),
        "min_pixels": 3136,
        "max_pixels": 12544,
    }
    assert prompt.messages[1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "Lungs are clear."}],
    }
    assert build_prompt(_study(), target_section="findings") == build_prompt(
        _study(), target_section="findings"
    )


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="max_images must be >= 1"):
        PromptOptions(max_images=0)
    with pytest.raises(ValueError, match="min_pixels 10 > max_pixels 5"):
        PromptOptions(min_pixels=10, max_pixels=5)
