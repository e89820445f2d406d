"""Bootstrap intervals and paired randomisation: hand-computed cases, seeds, fast path == slow path."""

from __future__ import annotations

import numpy as np
import pytest

from editgrpo.eval.stats import bootstrap_ci, paired_randomization


def micro_f1(counts: np.ndarray) -> float:
    """Corpus micro-F1 from per-report (tp, fp, fn) rows: pooled counts, then F1 (0 when empty)."""
    tp, fp, fn = counts.sum(axis=0)
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


# --- bootstrap_ci ---------------------------------------------------------------------------------


def test_a_constant_metric_has_a_zero_width_interval() -> None:
    ci = bootstrap_ci([0.7] * 25, n_resamples=200)
    assert ci.low == ci.high == pytest.approx(0.7)
    assert ci.estimate == pytest.approx(0.7)


def test_two_values_give_the_hand_computed_interval() -> None:
    # N=2, values {0, 1}: a resample's mean is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4, so the
    # 2.5% and 97.5% quantiles of 1000 resamples are 0 and 1.
    ci = bootstrap_ci([0.0, 1.0], n_resamples=1000, seed=3)
    assert (ci.estimate, ci.low, ci.high) == (0.5, 0.0, 1.0)


def test_the_interval_of_a_known_mean_contains_it_with_the_normal_width() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(3.0, 1.0, size=400)
    ci = bootstrap_ci(values, n_resamples=2000, seed=1)
    assert ci.low < 3.0 < ci.high
    assert ci.estimate == pytest.approx(values.mean())
    # Normal theory: width ~ 2 * 1.96 * sd / sqrt(N) = 0.196.
    assert ci.high - ci.low == pytest.approx(2 * 1.96 * values.std() / np.sqrt(400), rel=0.15)


def test_a_lower_confidence_gives_a_narrower_interval() -> None:
    values = np.random.default_rng(2).random(100)
    wide = bootstrap_ci(values, confidence=0.99, seed=0)
    narrow = bootstrap_ci(values, confidence=0.5, seed=0)
    assert wide.low < narrow.low < narrow.high < wide.high


def test_bootstrap_is_deterministic_by_seed() -> None:
    values = np.random.default_rng(4).random(50)
    assert bootstrap_ci(values, seed=7) == bootstrap_ci(values, seed=7)
    assert bootstrap_ci(values, seed=7) != bootstrap_ci(values, seed=8)


def test_the_mean_fast_path_equals_the_statistic_path() -> None:
    # 2500 resamples: more than one chunk, so the chunked draws must line up too.
    values = np.random.default_rng(5).random(30)
    fast = bootstrap_ci(values, n_resamples=2500, seed=9)
    slow = bootstrap_ci(values, lambda rows: float(np.mean(rows)), n_resamples=2500, seed=9)
    assert fast.estimate == pytest.approx(slow.estimate)
    assert (fast.low, fast.high) == (pytest.approx(slow.low), pytest.approx(slow.high))


def test_a_corpus_statistic_is_recomputed_on_each_resample() -> None:
    # Pooled tp=3, fp=2, fn=1 -> micro-F1 = 6 / 9; the macro mean of per-report F1 would differ.
    counts = np.array([[2, 0, 1], [0, 1, 0], [1, 1, 0]])
    ci = bootstrap_ci(counts, micro_f1, n_resamples=500, seed=0)
    assert ci.estimate == pytest.approx(6 / 9)
    assert 0.0 <= ci.low < 6 / 9 < ci.high <= 1.0


def test_statistic_over_sample_indices() -> None:
    predictions = ["a", "b", "c", "d"]
    correct = {"a", "b"}

    def accuracy(idx: np.ndarray) -> float:
        return float(np.mean([predictions[i] in correct for i in idx]))

    ci = bootstrap_ci(np.arange(len(predictions)), accuracy, n_resamples=300)
    assert ci.estimate == 0.5 and 0.0 <= ci.low <= 0.5 <= ci.high <= 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"values": []}, "at least one sample"),
        ({"values": [[1, 2], [3, 4]]}, "needs one value per sample"),
        ({"values": [1.0], "n_resamples": 0}, "n_resamples must be >= 1"),
        ({"values": [1.0], "confidence": 1.0}, "confidence must be in"),
        ({"values": [1.0, 2.0], "statistic": lambda rows: float("nan")}, "returned nan"),
    ],
)
def test_bootstrap_rejects_bad_input(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bootstrap_ci(**kwargs)


# --- paired_randomization -------------------------------------------------------------------------


def test_identical_systems_give_p_equal_to_one() -> None:
    values = np.random.default_rng(6).random(40)
    result = paired_randomization(values, values.copy(), n_shuffles=500)
    assert (result.difference, result.p_value) == (0.0, 1.0)


def test_a_large_consistent_difference_is_significant() -> None:
    b = np.random.default_rng(7).random(50)
    result = paired_randomization(b + 0.5, b, n_shuffles=2000, seed=1)
    assert result.difference == pytest.approx(0.5)
    # Only the all-kept or all-swapped shuffles (probability 2**-49) reach |0.5|: p = 1 / 2001.
    assert result.p_value == pytest.approx(1 / 2001)
    assert result.p_value < 0.01


def test_one_sample_is_never_significant() -> None:
    # N=1: every shuffle gives +-diff, all as extreme as the observed one -> p = (n + 1) / (n + 1).
    assert paired_randomization([1.0], [0.0], n_shuffles=100).p_value == 1.0


def test_two_samples_give_p_near_one_half() -> None:
    # a=[1,1], b=[0,0]: |diff*| = 1 when both or neither swap (probability 1/2), else 0.
    result = paired_randomization([1.0, 1.0], [0.0, 0.0], n_shuffles=4000, seed=2)
    assert result.difference == 1.0
    assert result.p_value == pytest.approx(0.5, abs=0.03)


def test_randomization_is_deterministic_by_seed_and_symmetric() -> None:
    rng = np.random.default_rng(8)
    a, b = rng.random(30), rng.random(30)
    first = paired_randomization(a, b, n_shuffles=300, seed=3)
    assert first == paired_randomization(a, b, n_shuffles=300, seed=3)
    swapped = paired_randomization(b, a, n_shuffles=300, seed=3)
    assert swapped.difference == pytest.approx(-first.difference)
    assert swapped.p_value == pytest.approx(first.p_value)


def test_the_mean_fast_path_equals_the_statistic_path_for_randomization() -> None:
    rng = np.random.default_rng(9)
    a, b = rng.random(20), rng.random(20) + 0.1
    fast = paired_randomization(a, b, n_shuffles=1500, seed=4)
    slow = paired_randomization(a, b, lambda rows: float(np.mean(rows)), n_shuffles=1500, seed=4)
    assert fast.difference == pytest.approx(slow.difference)
    assert fast.p_value == slow.p_value


def test_randomization_with_a_corpus_statistic_swaps_whole_rows() -> None:
    # System A finds every positive; B misses all of them: micro-F1 1.0 vs 0.0 over 12 reports.
    a = np.tile([1, 0, 0], (12, 1))
    b = np.tile([0, 0, 1], (12, 1))
    result = paired_randomization(a, b, micro_f1, n_shuffles=1000, seed=0)
    assert result.difference == 1.0
    assert result.p_value < 0.01


def test_randomization_rejects_misaligned_systems() -> None:
    with pytest.raises(ValueError, match="aligned per sample"):
        paired_randomization([1.0, 2.0], [1.0])
