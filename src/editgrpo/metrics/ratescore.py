"""RaTEScore: entity-aware similarity of two radiology reports (Zhao et al. 2024), scoring half.

Reference: the ``ratescore`` package, ``RaTEScore/utils.py`` (``compute``, ``topk_similarity``) and
``RaTEScore/scorer.py`` (``RaTEScore.compute_score``, ``DEFAULT_MATRIX_LONG`` / ``_SHORT``),
versions 0.5.0 and 0.6.0 (PyPI wheels; GitHub MAGIC-AI4Med/RaTEScore); METRICS.md, "RaTEScore". The
annotator half (sentences -> RaTE-NER entities -> BioLORD-2023-C [CLS] vectors) lives in
``annotators/``; this module scores its output (ARCHITECTURE.md house rule 4).

Input, one report: a sequence of entities ``(rate_type, vector)``; ``rate_type`` one of
``RATE_TYPES`` (the upper-case RaTE-NER names, e.g. ``NON-ABNORMALITY``, are accepted too),
``vector`` a 1-D array (D,). Vectors are L2-normalised here as ``torch.nn.functional.normalize``
does in ``topk_similarity`` (v / max(|v|, 1e-12)), so raw and normalised vectors score the same.

Shapes: A entities of the scored report, B of the other, D embedding size; cosines (A, B).

compute(A, B) = sum_i s_i w_i p_i / sum_i w_i (0 when sum_i w_i = 0), where for entity a_i,
j* = argmax_j cos(a_i, b_j), s_i = cos(a_i, b_j*), w_i = W[type(a_i), type(b_j*)] and p_i =
neg_weight when (type(a_i), type(b_j*)) is one of the present-vs-absent pairs in ``NEG_PAIRS``, else 1.
P = compute(ref, hyp), R = compute(hyp, ref); score = 2PR / (P + R), 0 when P + R = 0, and 0.5 when
either report has no entity (``compute_score``). Cosines are not clipped: a negative best cosine
counts as it is, as upstream.

Versions (``RATESCORE_VERSIONS``):
- ``"0.5"`` (default; EditGRPO parity): ratescore 0.5.0, the LONG matrix with ``neg_weight = 0.3612``,
  the literal hard-coded in 0.5.0's ``utils.compute`` (the SHORT matrix's 0.3611577852354489, rounded).
- ``"0.6"``: ratescore 0.6.0's default ``affinity_matrix="long"``, neg_weight 0.8716553966489615 read
  from the matrix.
- ``"0.6-short"``: ratescore 0.6.0 with ``affinity_matrix="short"``, neg_weight 0.3611577852354489.

Differences from upstream, all below float32 resolution or on exact ties: cosines are float64 here
(torch computes them in float32, so scores agree to about 1e-6); and among exactly tied best
matches the first is taken (``np.argmax``), where ``torch.topk`` picks one in an unspecified way
(torch 2.13 on CPU returns index 2 for [1, 0.2, 1, 1]). A tie only changes the score when tied
matches differ in type, e.g. the same entity text typed ABNORMALITY in one sentence and
NON-ABNORMALITY in another.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

Entity = tuple[str, Any]  # (rate_type, vector (D,))

RATE_TYPES: tuple[str, ...] = ("abnormality", "non-abnormality", "disease", "non-disease", "anatomy")
_TYPE_INDEX = {name: index for index, name in enumerate(RATE_TYPES)}

# Present-vs-absent pairs of the same kind, (type of scored entity, type of its best match): ratescore
# utils.compute's ``neg_class``, in both orders.
NEG_PAIRS: tuple[tuple[str, str], ...] = (
    ("non-disease", "disease"),
    ("non-abnormality", "abnormality"),
    ("disease", "non-disease"),
    ("abnormality", "non-abnormality"),
    ("non-disease", "abnormality"),
    ("non-abnormality", "disease"),
    ("disease", "non-abnormality"),
    ("abnormality", "non-disease"),
)

# Affinity matrices of ratescore 0.6.0 (``DEFAULT_MATRIX_LONG`` / ``DEFAULT_MATRIX_SHORT`` in
# scorer.py, without their neg_weight entries); key "x_y" = (type of the scored entity, type of its
# best match). 0.5.0's ``DEFAULT_MATRIX`` is LONG, value for value.
LONG: dict[str, float] = {
    "abnormality_abnormality": 0.4276119164393705,
    "abnormality_anatomy": 0.6240929990607657,
    "abnormality_disease": 0.0034478181112993847,
    "abnormality_non-abnormality": 0.5431049700217344,
    "abnormality_non-disease": 0.27005425386213877,
    "anatomy_abnormality": 0.7487824274337533,
    "anatomy_anatomy": 0.2856134859160784,
    "anatomy_disease": 0.4592143222158069,
    "anatomy_non-abnormality": 0.02097055139911715,
    "anatomy_non-disease": 0.00013736314126696204,
    "disease_abnormality": 0.8396510075734789,
    "disease_anatomy": 0.9950209388542061,
    "disease_disease": 0.8460555030578727,
    "disease_non-abnormality": 0.9820689020512646,
    "disease_non-disease": 0.3789136708096537,
    "non-abnormality_abnormality": 0.16546764653692908,
    "non-abnormality_anatomy": 0.018670610691852826,
    "non-abnormality_disease": 0.719397354576018,
    "non-abnormality_non-abnormality": 0.0009357166071730684,
    "non-abnormality_non-disease": 0.0927333564267591,
    "non-disease_abnormality": 0.7759420231214385,
    "non-disease_anatomy": 0.1839139293714062,
    "non-disease_disease": 0.10073046076318157,
    "non-disease_non-abnormality": 0.03860183811876373,
    "non-disease_non-disease": 0.34065681486566446,
}
SHORT: dict[str, float] = {
    "abnormality_abnormality": 0.4070293318365468,
    "abnormality_anatomy": 0.6952639610605605,
    "abnormality_disease": 0.28342529466226446,
    "abnormality_non-abnormality": 0.9479148658006686,
    "abnormality_non-disease": 0.23875064111146294,
    "anatomy_abnormality": 0.5829759950441763,
    "anatomy_anatomy": 0.7709590751917746,
    "anatomy_disease": 0.0006059634829551632,
    "anatomy_non-abnormality": 0.794672584951181,
    "anatomy_non-disease": 0.27982942400798977,
    "disease_abnormality": 0.8840397619834857,
    "disease_anatomy": 0.9637659445696822,
    "disease_disease": 0.19018958438059513,
    "disease_non-abnormality": 0.6962283914800402,
    "disease_non-disease": 0.943727057946997,
    "non-abnormality_abnormality": 0.1712744286898638,
    "non-abnormality_anatomy": 0.4485149671497294,
    "non-abnormality_disease": 0.00045065329822896076,
    "non-abnormality_non-abnormality": 0.0007887930317199857,
    "non-abnormality_non-disease": 0.8555432840895761,
    "non-disease_abnormality": 0.9555801066212176,
    "non-disease_anatomy": 0.13122106162635216,
    "non-disease_disease": 0.6072996585919443,
    "non-disease_non-abnormality": 0.05650711141169969,
    "non-disease_non-disease": 0.3214769399791204,
}
AFFINITY_MATRICES: dict[str, dict[str, float]] = {"long": LONG, "short": SHORT}

# version -> (affinity matrix name, neg_weight); see the module docstring.
RATESCORE_VERSIONS: dict[str, tuple[str, float]] = {
    "0.5": ("long", 0.3612),
    "0.6": ("long", 0.8716553966489615),
    "0.6-short": ("short", 0.3611577852354489),
}


def affinity_array(matrix: str) -> np.ndarray:
    """The named affinity matrix as a float array (5, 5), rows and columns in ``RATE_TYPES`` order."""
    if matrix not in AFFINITY_MATRICES:
        raise ValueError(
            f"unknown RaTEScore affinity matrix {matrix!r}; valid: {', '.join(AFFINITY_MATRICES)}"
        )
    weights = AFFINITY_MATRICES[matrix]
    return np.array([[weights[f"{row}_{col}"] for col in RATE_TYPES] for row in RATE_TYPES])


def _neg_mask() -> np.ndarray:
    """bool (5, 5): True where (scored type, matched type) is in ``NEG_PAIRS``."""
    mask = np.zeros((len(RATE_TYPES), len(RATE_TYPES)), dtype=bool)
    for scored, matched in NEG_PAIRS:
        mask[_TYPE_INDEX[scored], _TYPE_INDEX[matched]] = True
    return mask


_NEG_MASK = _neg_mask()


def resolve_version(version: str) -> tuple[np.ndarray, float]:
    """(affinity array (5, 5), neg_weight) of a named version."""
    if version not in RATESCORE_VERSIONS:
        raise ValueError(f"unknown RaTEScore version {version!r}; valid: {', '.join(RATESCORE_VERSIONS)}")
    matrix, neg_weight = RATESCORE_VERSIONS[version]
    return affinity_array(matrix), neg_weight


def _arrays(entities: Sequence[Entity], where: str) -> tuple[np.ndarray, np.ndarray]:
    """One report's entities -> (type indices (E,), unit vectors (E, D))."""
    types, vectors = [], []
    for k, entity in enumerate(entities):
        try:
            rate_type, vector = entity
        except (TypeError, ValueError):
            raise TypeError(f"{where}, entity {k}: expected a (rate_type, vector) pair") from None
        name = rate_type.lower() if isinstance(rate_type, str) else None
        if name not in _TYPE_INDEX:
            raise ValueError(
                f"{where}, entity {k}: unknown RaTE type {rate_type!r}; valid: {', '.join(RATE_TYPES)}"
            )
        types.append(_TYPE_INDEX[name])
        vectors.append(np.asarray(vector, dtype=np.float64))
    if not vectors:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0))
    if any(v.ndim != 1 or v.shape != vectors[0].shape for v in vectors):
        raise ValueError(
            f"{where}: entity vectors must be 1-D and of one size, got {[v.shape for v in vectors]}"
        )
    matrix = np.stack(vectors)  # (E, D)
    if not np.isfinite(matrix).all():
        raise ValueError(f"{where}: entity vectors contain NaN or inf")
    norms = np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)  # (E, 1), F.normalize's eps
    return np.asarray(types, dtype=np.int64), matrix / norms


def _compute(
    scored_types: np.ndarray,
    scored: np.ndarray,
    other_types: np.ndarray,
    other: np.ndarray,
    weights: np.ndarray,
    neg_weight: float,
) -> float:
    """ratescore ``utils.compute``: scored (A, D) against other (B, D), A, B >= 1."""
    cosines = scored @ other.T  # (A, B)
    best = cosines.argmax(axis=1)  # (A,) j* of each scored entity; first index on ties
    similarity = cosines[np.arange(len(best)), best]  # (A,) s_i
    matched_types = other_types[best]  # (A,)
    weight = weights[scored_types, matched_types]  # (A,) w_i
    penalty = np.where(_NEG_MASK[scored_types, matched_types], neg_weight, 1.0)  # (A,) p_i
    total = weight.sum()
    return float((similarity * weight * penalty).sum() / total) if total != 0 else 0.0


def directional_score(scored: Sequence[Entity], other: Sequence[Entity], version: str = "0.5") -> float:
    """compute(scored, other) of the module docstring: how well ``scored``'s entities are matched in
    ``other``. ``directional_score(ref, hyp)`` is the precision, ``(hyp, ref)`` the recall. Both
    reports must have an entity."""
    weights, neg_weight = resolve_version(version)
    scored_types, scored_vectors = _arrays(scored, "scored")
    other_types, other_vectors = _arrays(other, "other")
    if not len(scored_types) or not len(other_types):
        raise ValueError("directional_score needs an entity on each side (ratescore_pair scores that 0.5)")
    _check_dims(scored_vectors, other_vectors)
    return _compute(scored_types, scored_vectors, other_types, other_vectors, weights, neg_weight)


def _check_dims(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"entity vectors of the two reports differ in size: {a.shape[1]} and {b.shape[1]}")


def _pair(
    hyp: Sequence[Entity], ref: Sequence[Entity], weights: np.ndarray, neg_weight: float, suffix: str = ""
) -> float:
    hyp_types, hyp_vectors = _arrays(hyp, f"hyp{suffix}")
    ref_types, ref_vectors = _arrays(ref, f"ref{suffix}")
    if not len(hyp_types) or not len(ref_types):
        return 0.5
    _check_dims(hyp_vectors, ref_vectors)
    precision = _compute(ref_types, ref_vectors, hyp_types, hyp_vectors, weights, neg_weight)
    recall = _compute(hyp_types, hyp_vectors, ref_types, ref_vectors, weights, neg_weight)
    return 2 * precision * recall / (precision + recall) if precision + recall != 0 else 0.0


def ratescore_pair(hyp: Sequence[Entity], ref: Sequence[Entity], version: str = "0.5") -> float:
    """RaTEScore of one (hyp, ref) pair: 2PR / (P + R) with P = compute(ref, hyp), R = compute(hyp,
    ref); 0.5 when either side has no entity, 0 when P + R = 0."""
    weights, neg_weight = resolve_version(version)
    return _pair(hyp, ref, weights, neg_weight)


def ratescore_batch(
    hyps: Sequence[Sequence[Entity]], refs: Sequence[Sequence[Entity]], version: str = "0.5"
) -> list[float]:
    """``ratescore_pair`` of each of the N (hyp, ref) pairs -> list (N,) (``compute_score``'s list)."""
    if len(hyps) != len(refs):
        raise ValueError(f"hyps and refs differ in length: {len(hyps)} hyps, {len(refs)} refs")
    weights, neg_weight = resolve_version(version)
    return [
        _pair(hyp, ref, weights, neg_weight, f" {i}")
        for i, (hyp, ref) in enumerate(zip(hyps, refs, strict=True))
    ]
