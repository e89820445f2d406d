"""Group advantages: hand-computed groups with and without unscorable (NaN) members, both scales,
degenerate groups, and equivalence with a plain per-group loop (statistics.mean / stdev)."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from editgrpo.core import ADVANTAGE_SCALES, group_advantages

NAN = float("nan")


def test_no_scale_subtracts_the_group_mean() -> None:
    # group 1: [1, 2, 3], mean 2 -> [-1, 0, 1]; group 2: [0, 0, 3], mean 1 -> [-1, -1, 2]
    rewards = torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0, 3.0])
    adv, metrics = group_advantages(rewards, group_size=3)
    torch.testing.assert_close(adv, torch.tensor([-1.0, 0.0, 1.0, -1.0, -1.0, 2.0]))
    assert metrics["num_unscorable"].item() == 0
    assert metrics["frac_zero_std_groups"].item() == 0.0


def test_group_std_uses_the_unbiased_std() -> None:
    # group 1: centred [-1, 0, 1], unbiased var (1 + 0 + 1) / 2 = 1 -> [-1, 0, 1] / (1 + eps)
    # group 2: centred [-1, -1, 2], unbiased var (1 + 1 + 4) / 2 = 3 -> [-1, -1, 2] / sqrt(3)
    #          = [-0.57735, -0.57735, 1.15470]  (the population std sqrt(2) would give 0.70711)
    rewards = torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0, 3.0], dtype=torch.float64)
    adv, _ = group_advantages(rewards, group_size=3, scale="group_std", eps=0.0)
    s3 = math.sqrt(3.0)
    expected = torch.tensor([-1.0, 0.0, 1.0, -1 / s3, -1 / s3, 2 / s3], dtype=torch.float64)
    torch.testing.assert_close(adv, expected)
    # eps is added to the std: 1 / (1 + 0.5) = 2/3
    adv, _ = group_advantages(rewards, group_size=3, scale="group_std", eps=0.5)
    assert adv[2].item() == pytest.approx(2 / 3)


def test_unscorable_members_are_left_out_and_get_zero() -> None:
    # scorable {1, 3, 2}: mean 2 -> [-1, 0 (NaN), 1, 0]; unbiased var (1 + 1 + 0) / 2 = 1
    rewards = torch.tensor([1.0, NAN, 3.0, 2.0])
    adv, metrics = group_advantages(rewards, group_size=4)
    torch.testing.assert_close(adv, torch.tensor([-1.0, 0.0, 1.0, 0.0]))
    assert metrics["num_unscorable"].item() == 1
    adv, _ = group_advantages(rewards, group_size=4, scale="group_std", eps=0.0)
    torch.testing.assert_close(adv, torch.tensor([-1.0, 0.0, 1.0, 0.0]))
    assert not torch.isnan(adv).any()


def test_degenerate_groups_get_zero_advantages() -> None:
    # group 1: one scorable member; group 2: none; group 3: all equal (std 0); group 4: [0, 1, 2]
    rewards = torch.tensor([NAN, 5.0, NAN, NAN, NAN, NAN, 2.0, 2.0, 2.0, 0.0, 1.0, 2.0])
    for scale in ADVANTAGE_SCALES:
        adv, metrics = group_advantages(rewards, group_size=3, scale=scale, eps=0.0)
        expected = torch.tensor([0.0] * 9 + [-1.0, 0.0, 1.0])  # last group: std 1
        torch.testing.assert_close(adv, expected)
        assert metrics["num_unscorable"].item() == 5  # 2 + 3
        assert metrics["frac_zero_std_groups"].item() == 0.75  # groups 1, 2, 3 of 4
        assert metrics["frac_underscored_groups"].item() == 0.5  # groups 1, 2 of 4


def test_equal_rewards_give_exact_zeros_despite_rounding() -> None:
    # mean([0.1, 0.1, 0.1]) is not exactly 0.1 in floating point; the group still gets exact zeros
    rewards = torch.tensor([0.1, 0.1, 0.1])
    for scale in ADVANTAGE_SCALES:
        adv, _ = group_advantages(rewards, group_size=3, scale=scale)
        assert torch.equal(adv, torch.zeros(3))


def test_bad_inputs_are_refused_with_the_valid_names() -> None:
    with pytest.raises(ValueError, match="valid names: none, group_std"):
        group_advantages(torch.zeros(4), group_size=2, scale="norm")
    with pytest.raises(ValueError, match="do not split into groups of 3"):
        group_advantages(torch.zeros(4), group_size=3)
    with pytest.raises(ValueError, match="must be flat"):
        group_advantages(torch.zeros(2, 2), group_size=2)


def _slow_advantages(rewards: list[float], group_size: int, scale: str, eps: float) -> list[float]:
    out: list[float] = []
    for start in range(0, len(rewards), group_size):
        group = rewards[start : start + group_size]
        scored = [r for r in group if not math.isnan(r)]
        if len(scored) < 2 or statistics.stdev(scored) <= eps:
            out += [0.0] * len(group)
            continue
        mean, std = statistics.mean(scored), statistics.stdev(scored)
        for r in group:
            if math.isnan(r):
                out.append(0.0)
            else:
                out.append((r - mean) / (std + eps) if scale == "group_std" else r - mean)
    return out


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("scale", ADVANTAGE_SCALES)
def test_matches_a_per_group_loop(seed: int, scale: str) -> None:
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.rand(8 * 6, generator=gen, dtype=torch.float64) * 3
    rewards[torch.rand(48, generator=gen) < 0.3] = NAN
    rewards[:6] = 1.5  # one all-equal group
    adv, _ = group_advantages(rewards, group_size=6, scale=scale)
    expected = _slow_advantages(rewards.tolist(), 6, scale, 1e-6)
    torch.testing.assert_close(adv, torch.tensor(expected, dtype=torch.float64))
