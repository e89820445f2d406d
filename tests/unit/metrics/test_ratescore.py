"""RaTEScore math (ratescore 0.5.0 / 0.6.0 ``utils.compute`` + ``scorer.compute_score``): hand-computed
pairs on 2-D unit vectors, the negation penalty, versions, edge cases, and equivalence with a plain
loop written after the upstream code."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from editgrpo.metrics.ratescore import (
    LONG,
    NEG_PAIRS,
    RATE_TYPES,
    RATESCORE_VERSIONS,
    SHORT,
    affinity_array,
    directional_score,
    ratescore_batch,
    ratescore_pair,
)

X, Y = np.array([1.0, 0.0]), np.array([0.0, 1.0])
DIAG = np.array([0.6, 0.8])  # cos with X 0.6, with Y 0.8


def f_score(p: float, r: float) -> float:
    return 2 * p * r / (p + r)


def test_hand_computed_pair_long_matrix() -> None:
    ref = [("abnormality", X), ("anatomy", Y)]
    hyp = [("abnormality", DIAG), ("anatomy", Y)]
    # P = compute(ref, hyp):
    #   ref abnormality X: cos(X, DIAG) = 0.6 > cos(X, Y) = 0 -> hyp abnormality, s = 0.6,
    #     w = W[abnormality, abnormality] = 0.4276119164393705
    #   ref anatomy Y: cos(Y, DIAG) = 0.8 < cos(Y, Y) = 1 -> hyp anatomy, s = 1, w = W[anatomy, anatomy]
    #     = 0.2856134859160784
    #   P = (0.6 * 0.42761 + 1 * 0.28561) / (0.42761 + 0.28561) = 0.54218 / 0.71323 = 0.760181
    # R = compute(hyp, ref):
    #   hyp abnormality DIAG: cos 0.6 with X, 0.8 with Y -> ref anatomy, s = 0.8,
    #     w = W[abnormality, anatomy] = 0.6240929990607657
    #   hyp anatomy Y -> ref anatomy, s = 1, w = 0.2856134859160784
    #   R = (0.8 * 0.62409 + 0.28561) / (0.62409 + 0.28561) = 0.78489 / 0.90971 = 0.862792
    # F = 2 P R / (P + R) = 0.808243
    p = (0.6 * 0.4276119164393705 + 0.2856134859160784) / (0.4276119164393705 + 0.2856134859160784)
    r = (0.8 * 0.6240929990607657 + 0.2856134859160784) / (0.6240929990607657 + 0.2856134859160784)
    assert p == pytest.approx(0.7601813311600124, abs=1e-12)
    assert r == pytest.approx(0.8627924480330266, abs=1e-12)
    assert directional_score(ref, hyp) == pytest.approx(p, abs=1e-12)
    assert directional_score(hyp, ref) == pytest.approx(r, abs=1e-12)
    assert ratescore_pair(hyp, ref) == pytest.approx(f_score(p, r), abs=1e-12)
    assert ratescore_pair(hyp, ref) == pytest.approx(0.8082431399312715, abs=1e-12)
    # the same geometry under the SHORT matrix (no negation pair, so only the weights differ):
    # P = (0.6 * 0.40703 + 0.77096) / (0.40703 + 0.77096) = 0.861788
    # R = (0.8 * 0.69526 + 0.77096) / (0.69526 + 0.77096) = 0.905163 -> F = 0.882943
    assert ratescore_pair(hyp, ref, version="0.6-short") == pytest.approx(0.8829431012167474, abs=1e-12)


def test_negated_match_is_scaled_by_neg_weight() -> None:
    ref = [("disease", X), ("anatomy", Y)]
    hyp = [("non-disease", np.array([0.8, 0.6])), ("anatomy", Y)]
    w_dn, w_nd, w_aa = 0.3789136708096537, 0.10073046076318157, 0.2856134859160784
    neg = 0.3612
    # P: ref disease X -> hyp non-disease (cos 0.8 > 0), s = 0.8, w = W[disease, non-disease], p = neg
    #    ref anatomy Y -> hyp anatomy, s = 1, w = W[anatomy, anatomy], p = 1
    #    P = (0.8 * 0.37891 * 0.3612 + 0.28561) / (0.37891 + 0.28561) = 0.39510 / 0.66453 = 0.594565
    # R: hyp non-disease (0.8, 0.6) -> ref disease (0.8 > 0.6), s = 0.8, w = W[non-disease, disease], p = neg
    #    hyp anatomy -> ref anatomy, s = 1
    #    R = (0.8 * 0.10073 * 0.3612 + 0.28561) / (0.10073 + 0.28561) = 0.31472 / 0.38634 = 0.814612
    # F = 2 P R / (P + R) = 0.687408
    p = (0.8 * w_dn * neg + w_aa) / (w_dn + w_aa)
    r = (0.8 * w_nd * neg + w_aa) / (w_nd + w_aa)
    assert ratescore_pair(hyp, ref) == pytest.approx(f_score(p, r), abs=1e-12)
    assert ratescore_pair(hyp, ref) == pytest.approx(0.6874079407812463, abs=1e-12)
    # without the negation (hyp says "disease" too) the weights change to W[disease, disease], and p = 1
    same_kind = [("disease", np.array([0.8, 0.6])), ("anatomy", Y)]
    w_dd = 0.8460555030578727
    p1 = r1 = (0.8 * w_dd + w_aa) / (w_dd + w_aa)  # 0.96246 / 1.13167 = 0.850477 = F
    assert ratescore_pair(same_kind, ref) == pytest.approx(f_score(p1, r1), abs=1e-12)
    assert ratescore_pair(same_kind, ref) == pytest.approx(0.8504765065931577, abs=1e-12)


@pytest.mark.parametrize(("scored", "matched"), NEG_PAIRS)
def test_every_present_vs_absent_pair_is_penalised(scored: str, matched: str) -> None:
    # one entity a side, same vector: s = 1, w cancels, P = R = neg_weight -> F = neg_weight
    assert ratescore_pair([(scored, X)], [(matched, X)]) == pytest.approx(0.3612, abs=1e-15)


def test_other_type_pairs_are_not_penalised() -> None:
    penalised = set(NEG_PAIRS)
    for a in RATE_TYPES:
        for b in RATE_TYPES:
            if (a, b) not in penalised:
                # s = 1, p = 1, w cancels -> P = R = 1
                assert ratescore_pair([(a, X)], [(b, X)]) == pytest.approx(1.0, abs=1e-15), (a, b)


def test_versions_switch_neg_weight_and_matrix() -> None:
    hyp, ref = [("non-abnormality", Y)], [("abnormality", Y)]
    assert ratescore_pair(hyp, ref, version="0.5") == pytest.approx(0.3612, abs=1e-15)
    assert ratescore_pair(hyp, ref, version="0.6") == pytest.approx(0.8716553966489615, abs=1e-15)
    assert ratescore_pair(hyp, ref, version="0.6-short") == pytest.approx(0.3611577852354489, abs=1e-15)
    assert ratescore_pair(hyp, ref) == ratescore_pair(hyp, ref, version="0.5")  # default: EditGRPO parity
    assert RATESCORE_VERSIONS["0.5"][0] == RATESCORE_VERSIONS["0.6"][0] == "long"


def test_matrices_are_the_shipped_values() -> None:
    assert len(LONG) == len(SHORT) == 25
    assert LONG["disease_anatomy"] == 0.9950209388542061
    assert SHORT["non-abnormality_disease"] == 0.00045065329822896076
    weights = affinity_array("long")  # (5, 5), rows = type of the scored entity
    assert weights.shape == (5, 5)
    assert weights[RATE_TYPES.index("anatomy"), RATE_TYPES.index("non-disease")] == 0.00013736314126696204


def test_empty_side_scores_one_half() -> None:
    full = [("abnormality", X)]
    assert ratescore_pair([], full) == 0.5
    assert ratescore_pair(full, []) == 0.5
    assert ratescore_pair([], []) == 0.5


def test_orthogonal_and_opposite_vectors() -> None:
    # best cosine 0 both ways: P = R = 0 -> P + R = 0 -> 0 (compute_score's rule)
    assert ratescore_pair([("abnormality", X)], [("abnormality", Y)]) == 0.0
    # cosines are not clipped: s = -1 both ways, P = R = -1 -> 2 * 1 / -2 = -1, as upstream
    assert ratescore_pair([("abnormality", -X)], [("abnormality", X)]) == pytest.approx(-1.0)


def test_vectors_are_normalised_and_upper_case_types_accepted() -> None:
    ref = [("ABNORMALITY", 5 * X), ("ANATOMY", 0.1 * Y)]
    hyp = [("Abnormality", np.array([3.0, 4.0])), ("anatomy", Y)]  # (3, 4) / 5 = DIAG
    assert ratescore_pair(hyp, ref) == pytest.approx(0.8082431399312715, abs=1e-12)


def test_best_match_ties_take_the_first() -> None:
    # the hyp entity is equally close to both ref entities: np.argmax takes ref 0 (abnormality), so
    # R = s = 1 with p = 1; P: ref abnormality -> hyp, s = 1; ref non-abnormality -> hyp abnormality,
    # s = 1, p = neg: P = (0.42761 + 0.16547 * 0.3612) / (0.42761 + 0.16547) = 0.821776;
    # F = 2 P / (P + 1) = 0.902170
    w_aa, w_na = 0.4276119164393705, 0.16546764653692908
    p = (w_aa + w_na * 0.3612) / (w_aa + w_na)
    score = ratescore_pair([("abnormality", X)], [("abnormality", X), ("non-abnormality", X)])
    assert score == pytest.approx(f_score(p, 1.0), abs=1e-12)
    assert score == pytest.approx(0.9021704738850987, abs=1e-12)


def test_errors_list_valid_names() -> None:
    with pytest.raises(
        ValueError, match=re.escape("unknown RaTEScore version '0.7'; valid: 0.5, 0.6, 0.6-short")
    ):
        ratescore_pair([("anatomy", X)], [("anatomy", X)], version="0.7")
    with pytest.raises(
        ValueError,
        match="hyp, entity 0: unknown RaTE type 'finding'; valid: abnormality, non-abnormality, disease, "
        "non-disease, anatomy",
    ):
        ratescore_pair([("finding", X)], [("anatomy", X)])
    with pytest.raises(ValueError, match="unknown RaTEScore affinity matrix 'medium'; valid: long, short"):
        affinity_array("medium")
    with pytest.raises(ValueError, match="differ in size: 2 and 3"):
        ratescore_pair([("anatomy", X)], [("anatomy", np.ones(3))])
    with pytest.raises(ValueError, match="NaN or inf"):
        ratescore_pair([("anatomy", np.array([np.nan, 1.0]))], [("anatomy", X)])
    with pytest.raises(ValueError, match="differ in length: 1 hyps, 0 refs"):
        ratescore_batch([[("anatomy", X)]], [])
    with pytest.raises(ValueError, match="needs an entity on each side"):
        directional_score([], [("anatomy", X)])
    with pytest.raises(TypeError, match=r"ref 1, entity 0: expected a \(rate_type, vector\) pair"):
        ratescore_batch([[], []], [[], ["anatomy"]])


class NearTie(Exception):
    """Two best matches of different types within float noise: which one wins is rounding."""


def reference_compute(scored: list, other: list, weights: dict[str, float], neg_weight: float) -> float:
    """A plain loop after ratescore's ``utils.compute`` (slow reference for the numpy path)."""
    negated = set(NEG_PAIRS)
    total_score = total_weight = 0.0
    for a_type, a in scored:
        a = np.asarray(a, float) / max(np.linalg.norm(a), 1e-12)
        cosines = [
            (float(np.dot(a, np.asarray(b, float) / max(np.linalg.norm(b), 1e-12))), b_type)
            for b_type, b in other
        ]
        best_cos, best = cosines[0]
        for cos, b_type in cosines[1:]:
            if cos > best_cos:
                best_cos, best = cos, b_type
        if any(abs(cos - best_cos) < 1e-9 and b_type != best for cos, b_type in cosines):
            raise NearTie
        weight = weights[f"{a_type}_{best}"]
        total_score += best_cos * weight * (neg_weight if (a_type, best) in negated else 1.0)
        total_weight += weight
    return total_score / total_weight if total_weight != 0 else 0.0


def reference_pair(hyp: list, ref: list, version: str) -> float:
    if not hyp or not ref:
        return 0.5
    matrix, neg_weight = RATESCORE_VERSIONS[version]
    weights = {"long": LONG, "short": SHORT}[matrix]
    p = reference_compute(ref, hyp, weights, neg_weight)
    r = reference_compute(hyp, ref, weights, neg_weight)
    return 2 * p * r / (p + r) if p + r != 0 else 0.0


vectors = st.lists(st.floats(-1, 1, allow_nan=False), min_size=4, max_size=4).filter(
    lambda v: np.linalg.norm(v) > 0.1
)
reports = st.lists(st.tuples(st.sampled_from(RATE_TYPES), vectors.map(np.array)), min_size=0, max_size=6)


@settings(max_examples=200, deadline=None)
@given(reports, reports, st.sampled_from(sorted(RATESCORE_VERSIONS)))
def test_matches_the_reference_loop_and_is_symmetric(hyp: list, ref: list, version: str) -> None:
    try:
        expected = reference_pair(hyp, ref, version)
    except NearTie:  # the exact-tie rule has its own test; near ties are decided by rounding
        assume(False)
    score = ratescore_pair(hyp, ref, version)
    assert score == pytest.approx(expected, abs=1e-9)
    # swapping hyp and ref swaps P and R, and 2PR / (P + R) is symmetric
    assert ratescore_pair(ref, hyp, version) == pytest.approx(score, abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(reports, reports), max_size=5), st.sampled_from(sorted(RATESCORE_VERSIONS)))
def test_batch_equals_pairs(pairs: list, version: str) -> None:
    hyps, refs = [h for h, _ in pairs], [r for _, r in pairs]
    assert ratescore_batch(hyps, refs, version) == [ratescore_pair(h, r, version) for h, r in pairs]
