"""Group composition (training/groups.py): fill and overwrite layouts, seeded draws, limits."""

from __future__ import annotations

import numpy as np
import pytest

from editgrpo.training.groups import compose_groups


@pytest.mark.parametrize("group, k", [(4, 2), (8, 4), (8, 1), (6, 0)])
def test_fill_samples_g_minus_k_and_edits_distinct_sources_into_the_last_k_slots(group: int, k: int) -> None:
    layout = compose_groups(3, group, k, "fill", np.random.default_rng(0))
    assert layout.samples_per_group == group - k
    assert list(layout.sampled) == [g * group + i for g in range(3) for i in range(group - k)]
    assert len(layout.edits) == 3 * k
    for g in range(3):
        mine = [(s, t) for s, t in layout.edits if g * group <= t < (g + 1) * group]
        assert sorted(t for _, t in mine) == [g * group + group - k + j for j in range(k)]
        sources = [s for s, _ in mine]
        # Sources are distinct sampled rows of the same group.
        assert len(set(sources)) == k and all(g * group <= s < g * group + group - k for s in sources)
    # Every row is either sampled or an edit slot, never both.
    slots = {t for _, t in layout.edits}
    assert slots.isdisjoint(layout.sampled) and len(slots) + len(layout.sampled) == 3 * group


def test_overwrite_samples_everything_and_targets_are_not_sources() -> None:
    layout = compose_groups(50, 8, 4, "overwrite", np.random.default_rng(1))
    assert layout.samples_per_group == 8 and len(layout.sampled) == 400
    for g in range(50):
        mine = [(s, t) for s, t in layout.edits if g * 8 <= s < g * 8 + 8]
        sources, targets = {s for s, _ in mine}, {t for _, t in mine}
        assert len(sources) == len(targets) == 4 and sources.isdisjoint(targets)
        assert all(g * 8 <= t < g * 8 + 8 for t in targets)


def test_draws_are_seeded_and_cover_every_member() -> None:
    first = compose_groups(20, 8, 4, "fill", np.random.default_rng(7))
    assert first == compose_groups(20, 8, 4, "fill", np.random.default_rng(7))
    assert first != compose_groups(20, 8, 4, "fill", np.random.default_rng(8))
    # Uniform sources: over many groups every sampled position is a source sometimes.
    many = compose_groups(200, 8, 2, "fill", np.random.default_rng(0))
    positions = np.bincount([s % 8 for s, _ in many.edits], minlength=8)
    assert positions[:6].min() > 40 and positions[6:].sum() == 0  # 400 draws over 6 positions


def test_limits_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="own on-policy source"):
        compose_groups(1, 4, 3, "fill", np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"edit\.generation"):
        compose_groups(1, 4, 2, "replace", np.random.default_rng(0))
