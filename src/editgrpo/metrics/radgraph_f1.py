"""RadGraph F1: entity and relation F1 between two reports' RadGraph annotations (the EditGRPO reward).

Reference: radgraph 0.1.18 (Stanford-AIMI/radgraph, tag commit 35c64b9), ``radgraph/rewards.py``
(``exact_entity_token_match_reward``, ``exact_entity_token_if_rel_exists_reward``,
``exact_entity_token_if_all_match_reward``, ``compute_reward``) and ``F1RadGraph.forward`` in
``radgraph/radgraph.py``; METRICS.md, "RadGraph F1". This module is the scoring half of the metric
(ARCHITECTURE.md house rule 4); the annotator half (the RadGraph model, or the offline backend's
``ReportEntities.to_radgraph()``) produces the annotations.

Input, one report: the radgraph package's annotation dict,
``{"entities": {id: {"tokens": str, "label": str, "relations": [[relation, target id], ...], ...}}}``
(other keys, e.g. ``text``, ``start_ix``, ``end_ix``, are ignored). Labels are taken as given, so
RadGraph v1 (``OBS-DP``) and RadGraph-XL (``Observation::definitely present``) spellings both work;
tokens are compared as strings, so hyp and ref must come from the same tokenisation.

Per report, each side becomes a *set* of tuples (duplicates collapse), one per entity:

- ``simple``: ``(tokens, label)``;
- ``partial`` (the EditGRPO reward and the "RadGraph F1" of its tables): ``(tokens, label)`` if the
  entity has no outgoing relation, else ``(tokens, label, True)``;
- ``complete``: ``(tokens, label)`` if no relation, else one ``(tokens.lower(), label, relation,
  target_tokens.lower())`` per outgoing relation.

Only relation tuples of ``complete`` are lowercased: the other tuples keep their case, as in 0.1.18.
(Upstream commit b5ab8d0, after 0.1.18 and unreleased when this was written, lowercases the tokens of
every tuple at every level; we follow the released 0.1.18.)

P = |H ∩ R| / |H|, R = |H ∩ R| / |R| (0 for an empty side), F1 = 2PR / (P + R), 0 when P + R = 0;
0 when either report has no entity. Corpus score = ``np.mean`` of the per-report F1 (radgraph's
``mean_reward``), reports without entities counted as 0 (F1RadGraph scores an empty text 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

Annotation = Mapping[str, Any]

LEVELS: tuple[str, ...] = ("simple", "partial", "complete")


def _check_level(level: str) -> None:
    if level not in LEVELS:
        raise ValueError(f"unknown RadGraph F1 level {level!r}; valid: {', '.join(LEVELS)}")


def _entities(annotation: Annotation, where: str) -> Mapping[str, Mapping[str, Any]]:
    """The ``entities`` mapping of one annotation, with the fields the math reads checked."""
    if not isinstance(annotation, Mapping) or not isinstance(annotation.get("entities"), Mapping):
        raise TypeError(
            f"{where} is not a RadGraph annotation: expected a dict with an 'entities' dict "
            "(radgraph's per-report output or ReportEntities.to_radgraph())"
        )
    entities = annotation["entities"]
    for entity_id, entity in entities.items():
        if not isinstance(entity, Mapping) or not {"tokens", "label", "relations"} <= set(entity):
            raise ValueError(f"{where}, entity {entity_id!r}: needs 'tokens', 'label' and 'relations'")
        for relation in entity["relations"]:
            if len(relation) != 2 or relation[1] not in entities:
                raise ValueError(
                    f"{where}, entity {entity_id!r}: relation {relation!r} is not [kind, target id] "
                    f"with a target among the entity ids {sorted(entities)}"
                )
    return entities


def entity_set(annotation: Annotation, level: str = "partial") -> set[tuple]:
    """The set of tuples one report contributes at ``level`` (see the module docstring)."""
    _check_level(level)
    entities = _entities(annotation, "annotation")
    return _tuples(entities, level)


def _tuples(entities: Mapping[str, Mapping[str, Any]], level: str) -> set[tuple]:
    found: set[tuple] = set()
    for entity in entities.values():
        tokens, label, relations = entity["tokens"], entity["label"], entity["relations"]
        if level == "simple" or not relations:
            found.add((tokens, label))
        elif level == "partial":
            found.add((tokens, label, True))
        else:  # complete: one tuple per relation, tokens of both ends lowercased (rewards.py)
            found.update(
                (tokens.lower(), label, kind, entities[target]["tokens"].lower())
                for kind, target in relations
            )
    return found


def _f1(hyp: set[tuple], ref: set[tuple]) -> float:
    """F1 of two tuple sets, with rewards.py's arithmetic (2PR/(P+R), not 2|I|/(|H|+|R|), so the
    floats are the same bit for bit)."""
    common = len(hyp & ref)
    precision = common / len(hyp) if hyp else 0.0
    recall = common / len(ref) if ref else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def radgraph_f1_pair(hyp: Annotation, ref: Annotation, level: str = "partial") -> float:
    """RadGraph F1 of one (hyp, ref) pair at ``level``; 0.0 when either has no entity
    (``compute_reward`` of radgraph 0.1.18)."""
    _check_level(level)
    return _pair(hyp, ref, level, "hyp", "ref")


def _pair(hyp: Annotation, ref: Annotation, level: str, hyp_name: str, ref_name: str) -> float:
    hyp_entities, ref_entities = _entities(hyp, hyp_name), _entities(ref, ref_name)
    if not hyp_entities or not ref_entities:
        return 0.0
    return _f1(_tuples(hyp_entities, level), _tuples(ref_entities, level))


def radgraph_f1_all_levels(hyp: Annotation, ref: Annotation) -> tuple[float, float, float]:
    """(simple, partial, complete) F1 of one pair (radgraph's ``reward_level="all"``)."""
    hyp_entities, ref_entities = _entities(hyp, "hyp"), _entities(ref, "ref")
    if not hyp_entities or not ref_entities:
        return (0.0, 0.0, 0.0)
    simple, partial, complete = (_f1(_tuples(hyp_entities, lv), _tuples(ref_entities, lv)) for lv in LEVELS)
    return (simple, partial, complete)


def radgraph_f1_corpus(
    hyps: Sequence[Annotation], refs: Sequence[Annotation], level: str = "partial"
) -> dict[str, Any]:
    """Corpus RadGraph F1 at ``level``: ``{"mean": float, "per_report": [float] (N,)}``, the mean
    being ``np.mean`` of the per-report F1 as in ``F1RadGraph.forward`` (reports without entities
    count as 0)."""
    _check_level(level)
    if len(hyps) != len(refs):
        raise ValueError(f"hyps and refs differ in length: {len(hyps)} hyps, {len(refs)} refs")
    if not hyps:
        raise ValueError("no reports to score: hyps and refs are empty")
    per_report = [
        _pair(hyp, ref, level, f"hyp {i}", f"ref {i}")
        for i, (hyp, ref) in enumerate(zip(hyps, refs, strict=True))
    ]  # (N,)
    return {"mean": float(np.mean(per_report)), "per_report": per_report}
