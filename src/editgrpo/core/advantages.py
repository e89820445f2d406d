"""Group-relative advantages (EDITGRPO.md section 2, step 5).

Shapes: B prompts, G group size (on-policy rollouts plus edited copies); rewards and advantages
are flat (B*G,), group members contiguous (the layout of TRL's GRPOTrainer and verl's
``compute_grpo_outcome_advantage``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .masks import check_choice

# Registry of advantage scalings: "none" is Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like
# Training"), the paper's default; "group_std" is the original GRPO (Shao et al. 2024), the paper's
# "norm" ablation.
ADVANTAGE_SCALES: tuple[str, ...] = ("none", "group_std")


def group_advantages(
    rewards: Tensor, group_size: int, scale: str = "none", eps: float = 1e-6
) -> tuple[Tensor, dict[str, Tensor]]:
    """A_i = R_i - mean of the group's scorable rewards, optionally divided by their std + eps.

    Args:
        rewards: (B*G,) float; NaN marks a rollout no reward could score (a ``None`` reward).
        group_size: G.
        scale: ``"none"`` or ``"group_std"``.
        eps: added to the std before dividing (verl's ``compute_grpo_outcome_advantage`` default;
            TRL adds 1e-4). Also the threshold at or below which a group's std counts as zero.

    Returns:
        ``(advantages, metrics)``: advantages (B*G,) with the dtype of ``rewards``, never NaN;
        metrics of 0-dim detached tensors (the caller decides when to synchronise):
        ``num_unscorable`` (NaN rewards), ``frac_zero_std_groups`` (groups whose scorable rewards
        all agree, or that have fewer than two of them: no learning signal),
        ``frac_underscored_groups`` (groups with fewer than two scorable members).

    Rules (ARCHITECTURE.md house rule 5):
    - unscorable members are left out of the mean and the std and get A = 0;
    - a group with fewer than two scorable members gets all-zero advantages: one reward has no
      baseline to compare with (its own mean would give A = 0 anyway) and no std;
    - a group whose scorable rewards have std <= eps gets exactly zero advantages (rather than
      rounding noise such as 0.1 - mean([0.1, 0.1, 0.1]) or, under ``group_std``, noise / eps);
    - the std is the unbiased (Bessel-corrected, n - 1) one, as TRL's GRPOTrainer
      (``rewards.view(-1, num_generations).std(dim=1)``, torch's default correction=1) and verl's
      ``torch.std`` compute it, so ``group_std`` matches those implementations.
    """
    check_choice("advantage scale", scale, ADVANTAGE_SCALES)
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be flat (B*G,), got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    grouped = rewards.reshape(-1, group_size)  # (B*G,) -> (B, G)
    scorable = ~torch.isnan(grouped)  # (B, G)
    count = scorable.sum(dim=1)  # (B,)
    filled = torch.where(scorable, grouped, torch.zeros_like(grouped))  # (B, G), NaN -> 0
    mean = filled.sum(dim=1) / count.clamp(min=1).to(rewards.dtype)  # (B,)
    centred = torch.where(scorable, grouped - mean[:, None], torch.zeros_like(grouped))  # (B, G)
    var = (centred**2).sum(dim=1) / (count - 1).clamp(min=1).to(rewards.dtype)  # (B,), unbiased
    std = var.sqrt()  # (B,)
    underscored = count < 2  # (B,)
    zero_std = underscored | (std <= eps)  # (B,)
    advantages = centred / (std[:, None] + eps) if scale == "group_std" else centred  # (B, G)
    advantages = torch.where(zero_std[:, None], torch.zeros_like(advantages), advantages)
    num_groups = max(grouped.shape[0], 1)
    metrics = {
        "num_unscorable": (~scorable).sum().detach(),
        "frac_zero_std_groups": (zero_std.sum() / num_groups).detach(),
        "frac_underscored_groups": (underscored.sum() / num_groups).detach(),
    }
    return advantages.reshape(-1), metrics  # (B, G) -> (B*G,)
