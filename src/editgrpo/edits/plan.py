"""Edit rules: a rollout's and its reference's analyses -> an ``EditPlan`` (EDITGRPO.md section 3).

Pure: ``plan_edits(rollout, reference, rule, tau, max_ops, rng)`` reads two
``annotators.analysis.TextAnalysis`` objects and returns at most ``max_ops`` sentence operations:

- ``replace(i, j)``: rollout sentence x_i becomes reference sentence y_j;
- ``delete(i)``: x_i is removed;
- ``append(j)``: y_j is added after the last sentence.

Each op records the rule letter that fired (``a``..``e``, the letters of section 3; the ``release``
and ``radgraph`` rules reuse the letter of the paper rule they correspond to: b replace, c delete,
d append, a contradiction) and why, in words.

Definitions (``paper``): a rollout entity is *supported* when some reference entity has
cos >= tau and the same presence (both present or both NON-*); otherwise it is *spurious*. A
*contradiction* is a spurious rollout entity with a reference entity of cos >= tau and the opposite
presence (restricting (a) to unsupported entities keeps a rollout equal to its reference unedited
when the reference itself states a finding both ways, e.g. "no left effusion ... right effusion").
A reference entity is *missing* when no entity now in the text (live rollout sentences and inserted
reference sentences) supports it.

Several ops (``max_ops > 1``) apply the rules again on the planned text *without re-analysing*: the
original entities and vectors are reused; a replaced or deleted rollout sentence stops counting (its
entities are gone and it is never edited again); an inserted reference sentence counts as part of
the text (its entities support missing reference entities, it is never edited again and never
inserted twice); a reference sentence whose text equals a live rollout sentence is already in the
text and is not inserted. Planning stops early when no rule applies (rule e).

``paper`` and ``radgraph``: after the operation loop, a text left empty (an empty rollout, or one
whose only sentence (c) deleted) receives one reference sentence holding an entity, which is then a
missing one (rule (e) as EDITGRPO.md states it; the authors' release appends an unused
false-negative sentence after its loop in the same way), even when that is one op past ``max_ops``. A
reference without such a sentence drops the plan: the edit counts as unchanged, never as an empty
edited copy (an empty report ending at once would otherwise enter the group as an edit;
training-signal issue, measured 3/16 to 11/48 of edited rows). ``max_ops=0`` plans nothing.

Which sentence (c) deletes: section 3 says only "a sentence that still carries spurious entities";
here the candidates are the sentences with the largest share of spurious entities among their
entities (a sentence with one unmatched word beside supported findings is more likely a paraphrase
than a hallucination; on SynthCXR this cut the edits that lower label correctness from 2.6% to
0.6%, ``benchmarks/edit_effect.py``).

Choices among equals (conflicts, candidate sentences, tied best scores) are uniform draws from
``rng`` over candidates in index order, so a seeded generator gives the same plan every time.

``paper`` keeps the paper's text (EDITGRPO.md section 3) where the release disagrees, because the
rule is the paper's method and the release's departures read as implementation accidents:
- false positive: unsupported at cos >= tau with the same presence (release: affinity-weighted
  score < 0.6, which makes nearly every NON-* entity and most same-type pairs false positives);
- rule (a) contradiction replaces first (release: contradictions are computed but never applied);
- (b) scores a sentence by the mean over all its spurious entities (release: the single trigger);
- choices among equals are seeded uniform draws (release: the first in text order);
- (b) may pick the same text as the sentence it replaces only when it is not elsewhere, and no
  inserted sentence duplicates one in the text (release: it skips only the replaced sentence's own
  text, and may duplicate);
- (c) deletes one sentence with the largest share of spurious entities (release: every copy of the
  first false positive's sentence);
- (d)/(e) append a sentence with a missing entity, also to an empty rollout (release: a random
  false-negative entity's sentence, and an empty rollout is returned unchanged).

``release`` (taokz/EditGRPO@5decc57: the server's ``flask_server/RaTEscore_extractor.py``
``compare_entities_for_edits`` / ``analyze_text_pair`` and the client's
``verl/utils/RaTEscore_extractor.py`` ``process_text_with_server_analysis``) replays the release
operation by operation on an analysis in the ``release`` convention (``annotators.analysis``:
regex sentences, each entity in the first sentence containing its string; the edit engine converts
analyses for this rule):
- false positives: rollout entities whose best ``cos * affinity * penalty`` over reference entities
  is < tau (RaTEScore's LONG matrix, 0.3612 for a present/absent pair, 0 for an unknown type); false
  negatives: reference entities whose best such score over rollout entities is < tau, except those
  (same string and sentence) that are the best match of a contradiction (a present/absent best
  match at cos >= tau). No reference entity: every rollout entity is a false positive; no rollout
  entity: every reference entity is a false negative. Both lists in entity order.
- an empty rollout is left unchanged (early return);
- each operation, in order: replace the sentence of the first false positive (in entity order, its
  sentence not yet processed) whose best reference sentence reaches tau; a candidate is a reference
  sentence holding an entity (grouped by text, in order of first appearance among the reference
  entities), except one equal to the sentence being replaced; its score is max(0, max cos) with the
  trigger alone; ties go to the first; the first copy of the sentence is replaced, even when the
  new sentence is elsewhere in the text already. Else delete the first false positive's sentence
  still in the text, every copy. Else "add": a uniform draw among the unprocessed false-negative
  *entities* (``random.choice``; a sentence weighs by its number of them), appended unless the text
  already holds it, in which case nothing happens and the loop stops. A replaced, deleted, inserted
  or appended sentence text is processed: it triggers nothing and is not added again.
- after the loop a text left empty gets an unused false-negative sentence (rule letter e).

Remaining differences from the release, each deliberate:
- a text the release would leave empty (its only sentence deleted and no unused false-negative
  sentence) is left unchanged here: an empty report as an edited copy teaches the policy to stop at
  once (training-signal issue);
- the "add" draw comes from ``rng`` (numpy), not Python's ``random``: the same distribution, not
  the same stream (``benchmarks/release_differential.py`` feeds both sides one stream);
- the server's false-positive threshold is fixed at 0.6 and the client's tau is a parameter; here
  one ``tau`` serves both (0.6 in the paper's runs, ``extractor_similarity_threshold=0.6``);
- cosines are float64 here, float32 in the release: a score within ~1e-7 of tau or a tie decided by
  rounding can go the other way;
- kept sentences keep their inner whitespace and EOS strings are not stripped (the release collapses
  whitespace runs and removes ``<|im_end|>``-like strings from the edited text): edited tokens are
  aligned with the policy's own characters, and completions reach the editor decoded without
  special tokens;
- with ``max_ops > 1`` the release re-splits the joined text after each operation, so an inserted
  reference sentence without final punctuation merges with the next sentence; here planned
  sentences keep their boundaries (a plan is ops on the analysed sentences).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from editgrpo.annotators.analysis import TextAnalysis

OP_KINDS: tuple[str, ...] = ("replace", "delete", "append")


@dataclass(frozen=True)
class EditOp:
    """One sentence operation; ``rollout`` / ``reference`` are sentence indices (None when unused)."""

    kind: str
    rollout: int | None
    reference: int | None
    rule: str
    reason: str

    def __post_init__(self) -> None:
        if self.kind not in OP_KINDS:
            raise ValueError(f"unknown edit op {self.kind!r}; valid: {', '.join(OP_KINDS)}")


@dataclass(frozen=True)
class EditPlan:
    """The ops of one rollout, in the order they apply; empty when no rule applies."""

    rule: str
    ops: tuple[EditOp, ...] = field(default_factory=tuple)

    @property
    def empty(self) -> bool:
        return not self.ops


# --------------------------------------------------------------------------------------------
# Release rule constants
# --------------------------------------------------------------------------------------------

# RaTEScore's LONG affinity matrix and the 0.5.0 neg_weight (metrics/ratescore.py LONG,
# RATESCORE_VERSIONS["0.5"], NEG_PAIRS), as the authors' release weighs its false-positive test.
# Copied because `edits` may not import `metrics` (ARCHITECTURE.md layers);
# tests/unit/edits/test_plan.py checks that the two copies agree.
RATE_TYPE_ORDER: tuple[str, ...] = ("abnormality", "non-abnormality", "disease", "non-disease", "anatomy")
RELEASE_AFFINITY = np.array(
    [
        # row: type of the rollout entity; column: type of the reference entity (RATE_TYPE_ORDER)
        [
            0.4276119164393705,
            0.5431049700217344,
            0.0034478181112993847,
            0.27005425386213877,
            0.6240929990607657,
        ],
        [
            0.16546764653692908,
            0.0009357166071730684,
            0.719397354576018,
            0.0927333564267591,
            0.018670610691852826,
        ],
        [0.8396510075734789, 0.9820689020512646, 0.8460555030578727, 0.3789136708096537, 0.9950209388542061],
        [
            0.7759420231214385,
            0.03860183811876373,
            0.10073046076318157,
            0.34065681486566446,
            0.1839139293714062,
        ],
        [
            0.7487824274337533,
            0.02097055139911715,
            0.4592143222158069,
            0.00013736314126696204,
            0.2856134859160784,
        ],
    ]
)
RELEASE_NEG_WEIGHT = 0.3612
# Present-vs-absent pairs of the same kind (ratescore utils.compute's neg_class, both orders).
_NEG_PAIRS = {
    ("non-disease", "disease"),
    ("non-abnormality", "abnormality"),
    ("disease", "non-disease"),
    ("abnormality", "non-abnormality"),
    ("non-disease", "abnormality"),
    ("non-abnormality", "disease"),
    ("disease", "non-abnormality"),
    ("abnormality", "non-disease"),
}
_TYPE_INDEX = {name: k for k, name in enumerate(RATE_TYPE_ORDER)}
RELEASE_PENALTY = np.array(
    [[RELEASE_NEG_WEIGHT if (r, c) in _NEG_PAIRS else 1.0 for c in RATE_TYPE_ORDER] for r in RATE_TYPE_ORDER]
)


# --------------------------------------------------------------------------------------------
# Shared state of one planning run
# --------------------------------------------------------------------------------------------


def _norm(text: str) -> str:
    return " ".join(text.split())


class _State:
    """Which rollout sentences are still the policy's and which reference sentences are in the text."""

    def __init__(self, rollout: TextAnalysis, reference: TextAnalysis) -> None:
        self.rollout_texts = [_norm(s.text) for s in rollout.sentences]
        self.reference_texts = [_norm(s.text) for s in reference.sentences]
        self.live = [True] * len(rollout.sentences)
        self.inserted: set[int] = set()
        self.ops: list[EditOp] = []

    def available(self, j: int, replacing: int | None = None) -> bool:
        """Can y_j enter the text (its text not inserted yet, not equal to a live rollout sentence
        other than the one it replaces)?"""
        text = self.reference_texts[j]
        if j in self.inserted or any(self.reference_texts[k] == text for k in self.inserted):
            return False
        return not any(
            live and k != replacing and self.rollout_texts[k] == text for k, live in enumerate(self.live)
        )

    def replace(self, i: int, j: int, rule: str, reason: str) -> None:
        self.live[i] = False
        self.inserted.add(j)
        self.ops.append(EditOp("replace", i, j, rule, reason))

    def delete(self, i: int, rule: str, reason: str) -> None:
        self.live[i] = False
        self.ops.append(EditOp("delete", i, None, rule, reason))

    def append(self, j: int, rule: str, reason: str) -> None:
        self.inserted.add(j)
        self.ops.append(EditOp("append", None, j, rule, reason))

    def text_is_empty(self) -> bool:
        """No live rollout sentence with text and no inserted reference sentence."""
        return not self.inserted and not any(
            live and text for live, text in zip(self.live, self.rollout_texts, strict=True)
        )

    def finish(self, holds_entity: set[int], rng: np.random.Generator) -> list[EditOp]:
        """The ops of the plan, after the operation loop. A text left empty (an empty rollout, or
        one whose only sentence (c) deleted) gets one reference sentence holding an entity, which
        in an empty text is a missing one (rule (e); the authors' release appends an unused
        false-negative sentence after its loop the same way), even past ``max_ops``. When the
        reference has no such sentence, the plan is dropped: an empty edited copy would teach the
        policy to end the report at once, so the edit counts as unchanged instead."""
        if not self.text_is_empty():
            return self.ops
        candidates = [j for j in sorted(holds_entity) if self.available(j)]
        if not candidates:
            return []
        self.append(_pick(rng, candidates), "e", "a text left empty receives a missing reference sentence")
        return self.ops


def _pick(rng: np.random.Generator, candidates: list):
    """A uniform draw among ``candidates`` (already in a deterministic order)."""
    return candidates[int(rng.integers(len(candidates)))] if len(candidates) > 1 else candidates[0]


class _Entities:
    """Arrays of one analysis: unit vectors (E, D), presence (E,), sentence index (E,), type (E,)."""

    def __init__(self, analysis: TextAnalysis, dim: int) -> None:
        entities = analysis.entities
        self.n = len(entities)
        if self.n:
            vectors = np.stack([np.asarray(e.vector, dtype=np.float64).reshape(-1) for e in entities])
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)  # (E, 1)
            self.vectors = vectors / np.maximum(norms, 1e-12)  # (E, D)
        else:
            self.vectors = np.zeros((0, dim))
        self.present = np.array([e.present for e in entities], dtype=bool)  # (E,)
        self.sentence = np.array([e.sentence for e in entities], dtype=np.int64)  # (E,)
        self.types = np.array([_TYPE_INDEX.get(e.rate_type.lower(), -1) for e in entities], dtype=np.int64)


def _prepare(rollout: TextAnalysis, reference: TextAnalysis) -> tuple[_Entities, _Entities, np.ndarray]:
    """Entity arrays of both sides and cosines (A, B): A rollout entities, B reference entities."""
    dims = {np.asarray(e.vector).size for e in (*rollout.entities, *reference.entities)}
    if len(dims) > 1:
        raise ValueError(f"entity vectors differ in size: {sorted(dims)}")
    dim = dims.pop() if dims else 0
    x, y = _Entities(rollout, dim), _Entities(reference, dim)
    cosines = x.vectors @ y.vectors.T  # (A, B)
    return x, y, cosines


# --------------------------------------------------------------------------------------------
# paper
# --------------------------------------------------------------------------------------------


def _plan_paper(
    rollout: TextAnalysis,
    reference: TextAnalysis,
    tau: float,
    max_ops: int,
    rng: np.random.Generator,
    contradiction_tau: float | None = None,
    anatomy_false_positives: bool = True,
) -> list[EditOp]:
    state = _State(rollout, reference)
    x, y, cos = _prepare(rollout, reference)  # cos (A, B)
    high = cos >= tau  # (A, B)
    same = x.present[:, None] == y.present[None, :]  # (A, B)
    supported = (high & same).any(axis=1) if y.n else np.zeros(x.n, dtype=bool)  # (A,)
    very_high = cos >= (tau if contradiction_tau is None else contradiction_tau)  # (A, B)
    can_be_spurious = np.full(x.n, anatomy_false_positives) | (x.types != _TYPE_INDEX["anatomy"])  # (A,)
    contradicts = very_high & ~same & ~supported[:, None]  # (A, B)
    yy = y.vectors @ y.vectors.T  # (B, B)
    supports_yy = (yy >= tau) & (y.present[:, None] == y.present[None, :])  # (B, B) y_k supports y_l
    supports_xy = high & same  # (A, B)
    n_ref = len(reference.sentences)
    # best[e, j] = max over entities e' of y_j of cos(e, e'); -inf where y_j has no entity.
    best = np.full((x.n, n_ref), -np.inf)  # (A, S_y)
    for j in range(n_ref):
        members = y.sentence == j
        if members.any():
            best[:, j] = cos[:, members].max(axis=1)

    while len(state.ops) < max_ops:
        live_x = np.array([state.live[s] for s in x.sentence], dtype=bool)  # (A,)
        # (a) contradiction: (x_i, y_j) sentence pairs holding a conflicting entity pair.
        pairs = sorted(
            {
                (int(x.sentence[a]), int(y.sentence[b]))
                for a, b in zip(*np.nonzero(contradicts & live_x[:, None]), strict=True)
            }
        )
        pairs = [(i, j) for i, j in pairs if state.available(j, replacing=i)]
        if pairs:
            i, j = _pick(rng, pairs)
            state.replace(i, j, "a", "contradiction: an entity of x_i has the opposite presence in y_j")
            continue
        spurious = live_x & ~supported & can_be_spurious  # (A,)
        fp_sentences = sorted({int(s) for s in x.sentence[spurious]})
        # (b) false-positive replacement: mean over E_fp of the best cosine in y_j.
        replacements = []
        for i in fp_sentences:
            rows = spurious & (x.sentence == i)
            scores = best[rows].mean(axis=0)  # (S_y,)
            allowed = [j for j in range(n_ref) if np.isfinite(scores[j]) and state.available(j, replacing=i)]
            if not allowed:
                continue
            top = max(scores[j] for j in allowed)
            if top >= tau:
                replacements.append((i, [j for j in allowed if scores[j] == top], float(top)))
        if replacements:
            i, choices, top = _pick(rng, replacements)
            state.replace(
                i, _pick(rng, choices), "b", f"false positives of x_i best matched by y_j ({top:.3f})"
            )
            continue
        # (c) false-positive deletion.
        if fp_sentences:
            # The sentences whose entities are most often spurious go first (a sentence with one
            # unmatched word among supported findings is the likelier paraphrase); ties uniform.
            share = {
                i: spurious[x.sentence == i].sum() / (live_x & (x.sentence == i)).sum() for i in fp_sentences
            }
            top = max(share.values())
            i = _pick(rng, [i for i in fp_sentences if share[i] == top])
            state.delete(i, "c", "x_i carries false positives no reference sentence matches")
            continue
        # (d) false-negative augmentation: a reference sentence holding a missing entity.
        inserted_y = np.isin(y.sentence, sorted(state.inserted))  # (B,)
        covered = (supports_xy & live_x[:, None]).any(axis=0) | (supports_yy & inserted_y[:, None]).any(
            axis=0
        )
        missing = ~covered  # (B,)
        candidates = sorted({int(j) for j in y.sentence[missing] if state.available(int(j))})
        if candidates:
            state.append(_pick(rng, candidates), "d", "y_j holds a reference entity missing from the rollout")
            continue
        # (e) termination (an empty text is refilled by state.finish).
        break
    return state.finish({int(j) for j in y.sentence}, rng)


# --------------------------------------------------------------------------------------------
# release
# --------------------------------------------------------------------------------------------


def _release_lists(
    x: _Entities, y: _Entities, cos: np.ndarray, tau: float, y_keys: list[tuple[str, str]]
) -> tuple[list[int], list[int]]:
    """The release server's false positives (rollout entities) and false negatives (reference
    entities), each in entity order (flask_server/RaTEscore_extractor.py
    compare_entities_for_edits). ``y_keys``: (entity string, sentence text) of each reference
    entity, which is how the server tells a contradiction's reference entity apart."""
    if not y.n:
        return list(range(x.n)), []  # no reference entity: every rollout entity is a false positive
    if not x.n:
        return [], list(range(y.n))  # no rollout entity: every reference entity is missing
    known = (x.types >= 0)[:, None] & (y.types >= 0)[None, :]  # (A, B)
    tx, ty = np.maximum(x.types, 0)[:, None], np.maximum(y.types, 0)[None, :]
    # cos * affinity * penalty in the server's order; an unknown type weighs 0 (affinity.get(.., 0)).
    effective = np.where(known, cos * RELEASE_AFFINITY[tx, ty] * RELEASE_PENALTY[tx, ty], 0.0)  # (A, B)
    negative = known & (RELEASE_PENALTY[tx, ty] != 1.0)  # (A, B) present/absent pairs
    best = effective.argmax(axis=1)  # (A,) first maximum, as the server's strict ">"
    rows = np.arange(x.n)
    contradiction = negative[rows, best] & (cos[rows, best] >= tau)  # (A,)
    contradicted = {y_keys[int(b)] for b in best[contradiction]}
    false_positives = [a for a in range(x.n) if effective[a].max() < tau]
    false_negatives = [b for b in range(y.n) if effective[:, b].max() < tau and y_keys[b] not in contradicted]
    return false_positives, false_negatives


def _plan_release(
    rollout: TextAnalysis,
    reference: TextAnalysis,
    tau: float,
    max_ops: int,
    rng: np.random.Generator,
    contradiction_tau: float | None = None,
    anatomy_false_positives: bool = True,
) -> list[EditOp]:
    """The authors' release, operation by operation (module docstring, ``release``): the server's
    lists (``_release_lists``), then the client's loop (verl/utils/RaTEscore_extractor.py
    process_text_with_server_analysis) on the text as a list of sentences. ``contradiction_tau``
    and ``anatomy_false_positives`` are unused (the release has no rule (a))."""
    del contradiction_tau, anatomy_false_positives
    x_texts = [s.text.strip() for s in rollout.sentences]
    y_texts = [s.text.strip() for s in reference.sentences]
    if not any(x_texts):
        return []  # release: `if not gen_text.strip(): return gen_text, False, []`
    x, y, cos = _prepare(rollout, reference)  # cos (A, B)
    x_sentence = [x_texts[int(s)] if 0 <= s < len(x_texts) else "" for s in x.sentence]  # (A,)
    y_sentence = [y_texts[int(s)] if 0 <= s < len(y_texts) else "" for s in y.sentence]  # (B,)
    y_keys = [(e.text, y_sentence[b]) for b, e in enumerate(reference.entities)]
    false_positives, false_negatives = _release_lists(x, y, cos, tau, y_keys)
    # Reference entities grouped by sentence text, groups in order of first appearance over the
    # reference entities (the server's dict); equal sentence texts share one group.
    groups: dict[str, list[int]] = {}
    first_index: dict[str, int] = {}
    for b, text in enumerate(y_sentence):
        if text:
            groups.setdefault(text, []).append(b)
            first_index.setdefault(text, int(y.sentence[b]))

    # The text as the client edits it: [sentence text, rollout slot (None: appended), reference
    # index (None: the policy's sentence), rule letter, reason].
    items: list[list] = [[text, i, None, "", ""] for i, text in enumerate(x_texts) if text]
    processed: set[str] = set()

    def replacement(a: int) -> tuple[str, float] | None:
        """replace_fp_sentence_complex_rs for trigger ``a``: the best group other than the
        trigger's own sentence by max(0, max cos) (first on ties), if it reaches tau."""
        best_score, best_text = -np.inf, None
        for text, members in groups.items():
            if text == x_sentence[a]:
                continue
            score = max(0.0, float(cos[a, members].max()))
            if score > best_score:
                best_score, best_text = score, text
        if best_text is None or best_score < tau:
            return None
        return best_text, best_score

    def add(entities: list[int], rule: str, reason: str) -> bool:
        """add_fn_sentence_rs on a uniform draw among the false-negative entities (random.choice)."""
        b = _pick(rng, entities)
        text = _norm(y_sentence[b])
        if not text or text in (item[0] for item in items):
            return False
        items.append([text, None, first_index[y_sentence[b]], rule, reason])
        processed.add(text)
        return True

    for _ in range(max_ops):
        done = False
        # replace_fp_complex: the first false positive (entity order) whose replacement succeeds.
        for a in false_positives:
            old = x_sentence[a]
            if old in processed:
                continue
            found = replacement(a)
            if found is None:
                continue
            new = _norm(found[0])
            position = next((k for k, item in enumerate(items) if item[0] == old), None)
            if position is None or not new or new == old:
                continue  # replace_sentence_in_text left the text as it was: the attempt failed
            slot = items[position][1]
            items[position] = [
                new,
                slot,
                first_index[found[0]],
                "b",
                f"release: first false positive with a reference match {found[1]:.3f} >= tau",
            ]
            processed.update((old, new))
            done = True
            break
        if not done:
            # delete: the first false positive whose sentence is still in the text, every copy.
            for a in false_positives:
                old = x_sentence[a]
                if old in processed or not any(item[0] == old for item in items):
                    continue
                items = [item for item in items if item[0] != old]
                processed.add(old)
                done = True
                break
        if not done:
            available = [b for b in false_negatives if y_sentence[b] not in processed]
            done = bool(available) and add(
                available, "d", "release: a false-negative sentence (random choice)"
            )
        if not done:
            break
    if not items:
        # After the loop, an emptied text gets an unused false-negative sentence (the release's
        # add_fn_empty_fallback). Without one the release returns an empty text; here the plan is
        # dropped instead (module docstring).
        available = [b for b in false_negatives if y_sentence[b] not in processed]
        if not available or not add(
            available, "e", "release: the emptied text gets a false-negative sentence"
        ):
            return []
    return _release_ops(items, [i for i, text in enumerate(x_texts) if text])


def _release_ops(items: list[list], slots: list[int]) -> list[EditOp]:
    """Ops that turn the rollout sentences ``slots`` into ``items``: a slot holding a reference
    sentence is a replace, a slot gone is a delete, appended items are appends in order."""
    ops: list[EditOp] = []
    held = {item[1]: item for item in items if item[1] is not None}
    for i in slots:
        item = held.get(i)
        if item is None:
            ops.append(EditOp("delete", i, None, "c", "release: the first false positive's sentence"))
        elif item[2] is not None:
            ops.append(EditOp("replace", i, item[2], item[3], item[4]))
    ops += [EditOp("append", None, item[2], item[3], item[4]) for item in items if item[1] is None]
    return ops


# --------------------------------------------------------------------------------------------
# radgraph
# --------------------------------------------------------------------------------------------

_DEFINITE = {"OBS-DP": "OBS-DA", "OBS-DA": "OBS-DP"}  # label -> its opposite


def _plan_radgraph(
    rollout: TextAnalysis,
    reference: TextAnalysis,
    tau: float,
    max_ops: int,
    rng: np.random.Generator,
    contradiction_tau: float | None = None,
    anatomy_false_positives: bool = True,
) -> list[EditOp]:
    """RadGraph-entity ablation: definitely-present (OBS-DP) and definitely-absent (OBS-DA)
    observations matched by exact lower-cased tokens (ANAT-DP and OBS-U entities are not used);
    the cosine options are unused. An entity is supported by the same (tokens, label) in the
    reference. (a) contradiction: an unsupported entity whose tokens the reference states with the
    opposite label -> replace; (b) a sentence with an unsupported entity -> replace by a reference
    sentence holding an OBS-DP entity missing from the text; (c) else delete it; (d) append a
    reference sentence holding a missing (tokens, label)."""
    del tau, contradiction_tau, anatomy_false_positives
    state = _State(rollout, reference)
    xs = [(g.tokens.lower(), g.label, g.sentence) for g in rollout.graph if g.label in _DEFINITE]
    ys = [(g.tokens.lower(), g.label, g.sentence) for g in reference.graph if g.label in _DEFINITE]
    ref_keys = {(t, label) for t, label, _ in ys}

    while len(state.ops) < max_ops:
        live = [(t, label, s) for t, label, s in xs if state.live[s]]
        unsupported = [(t, label, s) for t, label, s in live if (t, label) not in ref_keys]
        pairs = sorted(
            {
                (s, j)
                for t, label, s in unsupported
                for t2, label2, j in ys
                if t2 == t and label2 == _DEFINITE[label] and state.available(j, replacing=s)
            }
        )
        if pairs:
            i, j = _pick(rng, pairs)
            state.replace(i, j, "a", "contradiction: same tokens, opposite presence")
            continue
        now = {(t, label) for t, label, _ in live} | {(t, label) for t, label, j in ys if j in state.inserted}
        missing = [(t, label, j) for t, label, j in ys if (t, label) not in now]
        fp_sentences = sorted({s for _, _, s in unsupported})
        if fp_sentences:
            present_missing = sorted({j for _, label, j in missing if label == "OBS-DP"})
            pairs = [(i, j) for i in fp_sentences for j in present_missing if state.available(j, replacing=i)]
            if pairs:
                i, j = _pick(rng, pairs)
                state.replace(
                    i, j, "b", "false positive replaced by a sentence with a missing present entity"
                )
            else:
                state.delete(_pick(rng, fp_sentences), "c", "false positive with no replacement")
            continue
        candidates = sorted({j for _, _, j in missing if state.available(j)})
        if candidates:
            state.append(_pick(rng, candidates), "d", "y_j holds a reference entity missing from the rollout")
            continue
        break
    return state.finish({j for _, _, j in ys}, rng)


# --------------------------------------------------------------------------------------------
# Registry and entry point
# --------------------------------------------------------------------------------------------

Planner = Callable[..., list[EditOp]]
EDIT_RULES: dict[str, Planner] = {"paper": _plan_paper, "release": _plan_release, "radgraph": _plan_radgraph}
# The analysis convention each rule reads (annotators.analysis.ANALYSIS_CONVENTIONS): the release's
# server cuts sentences and assigns entities its own way, and that decides which sentence it edits.
RULE_ANALYSIS: dict[str, str] = {"paper": "radiology", "release": "release", "radgraph": "radiology"}


def analysis_convention(rule: str) -> str:
    """The analysis convention that rule ``rule`` reads."""
    if rule not in RULE_ANALYSIS:
        raise ValueError(f"unknown edit rule {rule!r}; valid: {', '.join(EDIT_RULES)}")
    return RULE_ANALYSIS[rule]


def plan_edits(
    rollout: TextAnalysis,
    reference: TextAnalysis,
    rule: str = "paper",
    tau: float = 0.6,
    max_ops: int = 1,
    rng: np.random.Generator | None = None,
    contradiction_tau: float | None = None,
    anatomy_false_positives: bool = True,
) -> EditPlan:
    """At most ``max_ops`` sentence ops that move ``rollout`` towards ``reference`` (module
    docstring). ``rng`` draws the choices among equals (default: ``default_rng(0)``).

    ``contradiction_tau`` (``paper`` only; default ``tau``): the cosine rule (a) calls "high
    similarity". With the default, rule (b) can never fire: a spurious entity whose mean best cosine
    in y_j reaches tau has a match >= tau there, which has the opposite presence (else the entity
    would be supported), so (a) already applies to the same (x_i, y_j). A higher value hands the
    medium-similarity conflicts to (b), which picks the best-scoring y_j instead of a uniform one.

    ``anatomy_false_positives`` (``paper`` only; default True, section 3 as written): whether an
    unsupported ANATOMY entity makes its sentence a false positive. ANATOMY entities state no
    finding, so with a surface-level embedder a paraphrase ("stomach" for "below the diaphragm")
    gets a correct sentence deleted; False keeps anatomy out of (b) and (c) (it still counts as
    missing for (d))."""
    if rule not in EDIT_RULES:
        raise ValueError(f"unknown edit rule {rule!r}; valid: {', '.join(EDIT_RULES)}")
    if max_ops < 0:
        raise ValueError(f"max_ops must be >= 0, got {max_ops}")
    if not -1.0 <= tau <= 1.0:
        raise ValueError(f"tau is a cosine threshold in [-1, 1], got {tau}")
    if max_ops == 0:
        return EditPlan(rule=rule)
    generator = rng if rng is not None else np.random.default_rng(0)
    ops = EDIT_RULES[rule](
        rollout, reference, tau, max_ops, generator, contradiction_tau, anatomy_false_positives
    )
    return EditPlan(rule=rule, ops=tuple(ops))
