"""Token masks and masked reductions for the policy loss (EDITGRPO.md section 4).

Shapes: B sequences (prompts x group members, flattened), T completion tokens (padded width).
Every mask is a bool tensor of shape (B, T).
"""

from __future__ import annotations

import torch
from torch import Tensor

# Registry of how tokens inside inserted reference spans enter the loss (EDITGRPO.md section 4).
TOKEN_TREATMENTS: tuple[str, ...] = ("on_policy", "off_policy", "mask")


def check_choice(kind: str, name: str, valid: tuple[str, ...]) -> None:
    """Raise ``ValueError`` naming the valid choices when ``name`` is not one of them."""
    if name not in valid:
        raise ValueError(f"unknown {kind} {name!r}; valid names: {', '.join(valid)}")


def split_token_masks(
    completion_mask: Tensor, inserted_mask: Tensor, treatment: str
) -> tuple[Tensor, Tensor, Tensor]:
    """The tokens that enter the loss, split by how they enter it.

    Args:
        completion_mask: (B, T) bool, real completion tokens (False on padding).
        inserted_mask: (B, T) bool, tokens inside reference spans an edit inserted; only its
            positions inside ``completion_mask`` matter.
        treatment: one of ``TOKEN_TREATMENTS``.

    Returns:
        ``(loss_mask, on_policy_mask, off_policy_mask)``, each (B, T) bool, with
        ``on_policy_mask | off_policy_mask == loss_mask`` and the two disjoint:
        - ``on_policy``: every completion token is on-policy (edited tokens like sampled ones);
        - ``off_policy``: inserted tokens are off-policy, the rest on-policy;
        - ``mask``: inserted tokens leave the loss mask altogether.
    """
    check_choice("token treatment", treatment, TOKEN_TREATMENTS)
    if completion_mask.shape != inserted_mask.shape:
        raise ValueError(
            f"completion_mask {tuple(completion_mask.shape)} and inserted_mask "
            f"{tuple(inserted_mask.shape)} must have the same (B, T) shape"
        )
    completion = completion_mask.bool()
    inserted = inserted_mask.bool() & completion
    none = torch.zeros_like(completion)
    if treatment == "on_policy":
        return completion, completion, none
    if treatment == "off_policy":
        return completion, completion & ~inserted, inserted
    kept = completion & ~inserted  # "mask"
    return kept, kept, none


def masked_sum(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum of ``values`` where ``mask`` is True. ``torch.where`` rather than a product, so a NaN or
    inf on a padded position cannot leak into the sum."""
    selected = torch.where(mask, values, torch.zeros_like(values))
    return selected.sum() if dim is None else selected.sum(dim=dim)


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``values`` where ``mask`` is True; 0 where the mask selects nothing."""
    count = mask.sum() if dim is None else mask.sum(dim=dim)
    return masked_sum(values, mask, dim) / count.clamp(min=1).to(values.dtype)
