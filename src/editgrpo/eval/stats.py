"""Uncertainty for evaluation numbers: bootstrap confidence intervals and paired randomisation tests.

Pure numpy, no I/O. Both functions work on *per-sample* data: an array whose first axis is the
test study (N). The default statistic is the mean of a 1-D array (macro quantities: the mean of
per-report scores). A corpus-level metric that is not a mean of per-report values (micro-F1 over
pooled true/false positives, CIDEr's corpus document frequencies) passes ``statistic``: it receives
the per-sample rows of one resample, e.g. an (N, 3) array of per-report (tp, fp, fn) counts, and
returns one number; it is recomputed from scratch on every resample. To resample anything else,
pass ``values=np.arange(n)`` and let ``statistic`` index your own data with the indices it gets.

- ``bootstrap_ci``: nonparametric bootstrap over studies (Efron & Tibshirani 1993, ch. 13), with
  percentile intervals: the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the
  resampled statistic.
- ``paired_randomization``: approximate randomisation (Noreen 1989, "Computer-Intensive Methods
  for Testing Hypotheses", ch. 2; Yeh 2000, COLING, for NLP metrics): on each shuffle every study's
  pair of outputs (system A, system B) is swapped with probability 0.5 and the difference of the
  statistic recomputed. Two-sided p-value with the add-one correction,
  ``p = (#{|diff*| >= |diff|} + 1) / (n_shuffles + 1)``, the convention of Noreen (1989) and of
  sacreBLEU's paired approximate randomisation (``sacrebleu/significance.py``), so p is never 0.

Random draws come from ``numpy.random.default_rng(seed)`` in chunks of ``_CHUNK`` resamples; the
mean fast path and the general ``statistic`` path draw the same numbers, so they agree exactly
(tested).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

Statistic = Callable[[np.ndarray], float]

_CHUNK = 1000  # resamples drawn at once: bounds memory at _CHUNK * N indices


@dataclass(frozen=True)
class ConfidenceInterval:
    """``estimate`` is the statistic on the full sample; ``low``/``high`` the percentile interval."""

    estimate: float
    low: float
    high: float
    confidence: float
    n_resamples: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RandomizationResult:
    """``difference`` = statistic(A) - statistic(B); ``p_value`` two-sided, add-one corrected."""

    difference: float
    p_value: float
    n_shuffles: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_samples(name: str, values: Any) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim == 0 or array.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one sample (an array with a first axis), got {values!r}")
    return array


def _mean_1d(name: str, array: np.ndarray) -> np.ndarray:
    if array.ndim != 1:
        raise ValueError(
            f"{name} has shape {array.shape}; the default statistic (mean) needs one value per sample, "
            "or pass statistic= for multi-column per-sample data"
        )
    return array.astype(float)


def _checked(value: Any, where: str) -> float:
    number = float(value)
    if not np.isfinite(number):
        raise ValueError(
            f"the statistic returned {number} on {where}; make it finite for every resample "
            "(e.g. define F1 = 0 when there are no positives)"
        )
    return number


def _chunks(total: int) -> Iterator[int]:
    for start in range(0, total, _CHUNK):
        yield min(_CHUNK, total - start)


def bootstrap_ci(
    values: Any,
    statistic: Statistic | None = None,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int | None = 0,
) -> ConfidenceInterval:
    """Percentile bootstrap interval of ``statistic`` over the samples (first axis) of ``values``.

    ``statistic=None``: the mean of 1-D per-sample values (vectorised). Otherwise
    ``statistic(values[idx])`` is called for each resample ``idx`` (N indices drawn with
    replacement), so corpus-level metrics are recomputed per resample."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    data = _as_samples("values", values)
    n = data.shape[0]
    rng = np.random.default_rng(seed)
    replicates = np.empty(n_resamples)
    done = 0
    if statistic is None:
        column = _mean_1d("values", data)
        estimate = float(column.mean())
        for size in _chunks(n_resamples):
            idx = rng.integers(0, n, size=(size, n))  # (size, N) sample indices
            replicates[done : done + size] = column[idx].mean(axis=1)
            done += size
    else:
        estimate = _checked(statistic(data), "the full sample")
        for size in _chunks(n_resamples):
            idx = rng.integers(0, n, size=(size, n))
            for row in idx:
                replicates[done] = _checked(statistic(data[row]), f"resample {done}")
                done += 1
    alpha = 1.0 - confidence
    low, high = np.percentile(replicates, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    # Percentiles of identical floats can differ from them by rounding; clamp so a constant
    # statistic gives exactly a zero-width interval.
    low, high = min(float(low), float(replicates.max())), max(float(high), float(replicates.min()))
    return ConfidenceInterval(estimate, low, high, confidence, n_resamples)


def paired_randomization(
    a: Any,
    b: Any,
    statistic: Statistic | None = None,
    *,
    n_shuffles: int = 10_000,
    seed: int | None = 0,
) -> RandomizationResult:
    """Is system A's ``statistic`` different from system B's on the same studies?

    ``a`` and ``b`` hold per-sample data of the two systems, aligned on the first axis (same
    study order). Each shuffle swaps row i of A and B with probability 0.5 and recomputes
    ``statistic(A*) - statistic(B*)``; ``statistic=None`` is the mean of 1-D values (vectorised:
    the difference of means is the mean of signed per-sample differences)."""
    if n_shuffles < 1:
        raise ValueError(f"n_shuffles must be >= 1, got {n_shuffles}")
    first = _as_samples("a", a)
    second = _as_samples("b", b)
    if first.shape != second.shape:
        raise ValueError(f"a and b must be aligned per sample; shapes {first.shape} and {second.shape}")
    n = first.shape[0]
    rng = np.random.default_rng(seed)
    shuffled = np.empty(n_shuffles)
    done = 0
    if statistic is None:
        delta = _mean_1d("a", first) - _mean_1d("b", second)  # (N,) per-sample differences
        difference = float(delta.mean())
        for size in _chunks(n_shuffles):
            swap = rng.random((size, n)) < 0.5  # (size, N): True = swap this study's outputs
            shuffled[done : done + size] = np.where(swap, -delta, delta).mean(axis=1)
            done += size
    else:
        difference = _checked(statistic(first), "a") - _checked(statistic(second), "b")
        for size in _chunks(n_shuffles):
            swap = rng.random((size, n)) < 0.5
            for row in swap:
                mask = row.reshape((n,) + (1,) * (first.ndim - 1))  # broadcast over extra axes
                first_star = np.where(mask, second, first)
                second_star = np.where(mask, first, second)
                shuffled[done] = _checked(statistic(first_star), f"shuffle {done}") - _checked(
                    statistic(second_star), f"shuffle {done}"
                )
                done += 1
    # A relative tolerance so that shuffles equal to the observed difference up to rounding
    # (every shuffle when A == B) count as "at least as extreme".
    threshold = abs(difference) - 1e-9 * max(1.0, abs(difference))
    extreme = int(np.count_nonzero(np.abs(shuffled) >= threshold))
    return RandomizationResult(difference, (extreme + 1) / (n_shuffles + 1), n_shuffles)
