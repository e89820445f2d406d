"""The TRL internals EditGRPOTrainer overrides are pinned: an upgrade that changes them fails with a
message saying what changed and how to fix it. Plus ``select_rows`` on a real processor batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("trl")

from trl import GRPOTrainer

from editgrpo.training.trainer import TRL_CONTRACT, TRLContractError, check_trl_contract, select_rows


def test_installed_trl_matches_the_pinned_internals() -> None:
    check_trl_contract()
    import trl

    assert trl.__version__.startswith("1.16."), "pyproject pins trl>=1.16,<1.17"


def test_a_changed_signature_fails_with_the_fix() -> None:
    class Renamed(GRPOTrainer):
        def _compute_loss(self, model, batch):  # a parameter renamed upstream
            raise NotImplementedError

    with pytest.raises(TRLContractError) as error:
        check_trl_contract(Renamed)
    message = str(error.value)
    assert "GRPOTrainer._compute_loss('self', 'model', 'batch')" in message
    assert "trl>=1.16,<1.17" in message and "TRL_CONTRACT" in message


def test_a_removed_method_fails_by_name() -> None:
    class Bare:  # stands for a GRPOTrainer that lost every pinned method
        pass

    with pytest.raises(TRLContractError) as error:
        check_trl_contract(Bare)
    for name in TRL_CONTRACT:
        assert f"GRPOTrainer.{name} no longer exists" in str(error.value)


def test_select_rows_cuts_image_fields_by_row(tiny_model_dir: Path) -> None:
    from PIL import Image

    from editgrpo.models.qwen_vl import load_processor

    processor = load_processor(str(tiny_model_dir), min_pixels=3136, max_pixels=12544)
    # Rows with 2, 1 and 2 images of different sizes (so different patch counts per image).
    sizes = [[(56, 56), (112, 56)], [(56, 112)], [(112, 112), (56, 56)]]
    images = [[Image.new("RGB", size, color=(40 * r, 0, 0)) for size in row] for r, row in enumerate(sizes)]
    prompts = [
        [
            {
                "role": "user",
                "content": [*({"type": "image"} for _ in row), {"type": "text", "text": "Findings?"}],
            }
        ]
        for row in sizes
    ]
    texts = [processor.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
    batch = processor(images=images, text=texts, return_tensors="pt", padding=True)
    fields = {"pixel_values": batch["pixel_values"], "image_grid_thw": batch["image_grid_thw"]}
    fields["mm_token_type_ids"] = [[0, 1], [1], [0]]  # a row-level field as TRL hands it over

    picked = select_rows(fields, images, [2, 0], num_rows=3)
    alone = [processor(images=images[r], text=[texts[r]], return_tensors="pt") for r in (2, 0)]
    assert torch.equal(picked["image_grid_thw"], torch.cat([a["image_grid_thw"] for a in alone]))
    assert torch.equal(picked["pixel_values"], torch.cat([a["pixel_values"] for a in alone]))
    assert picked["mm_token_type_ids"] == [[0], [0, 1]]
    with pytest.raises(ValueError, match="multimodal field 'odd'"):
        select_rows({**fields, "odd": torch.zeros(7)}, images, [0], num_rows=3)
