"""The edit engine of the RL step: analyse rollouts and references, plan and apply sentence edits
(EDITGRPO.md section 3), one call per step (used by ``training.trainer``).

``RolloutEditor.edit(rollouts, references, rng)`` returns one ``edits.apply.EditedText`` per
(rollout, reference) pair. Analyses come from an *analyser*, ``texts -> list[TextAnalysis]``:

- in-process (``reward.scoring=inprocess``): the reward's entity backend and embedder
  (``annotators.analysis.analyse``); the trainer hands over the reward's own annotators, so a real
  RaTE-NER or BioLORD model is loaded once for scoring and editing;
- server (``reward.scoring=server``): ``POST /v1/analyze`` of the reward server with vectors, so
  the annotator models live on the reward GPU only. The server returns RaTE entities, not RadGraph
  graphs: the ``radgraph`` edit rule needs the in-process analyser (checked at construction).

Each rule reads analyses in its convention (``edits.plan.analysis_convention``): for ``release``
the editor re-cuts every analysis, local or from the server, into the release's sentences and
entity assignment (``annotators.analysis.with_convention``), so both paths edit the same sentences.

References are analysed once: a bounded LRU cache keyed by the text (a group of G rollouts shares
one reference, and a study comes back every epoch). A rollout whose analysis fails is left
unedited and counted in ``failures``; it never stops the step.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from editgrpo.annotators.analysis import AnalysedEntity, TextAnalysis, analyse, is_present, with_convention
from editgrpo.edits.apply import EditedText, apply_edits
from editgrpo.edits.plan import analysis_convention, plan_edits

Analyser = Callable[[list[str]], list[TextAnalysis]]


def local_analyser(extractor: Any, embedder: Any) -> Analyser:
    """Analyses by an entity extractor and an embedder in this process."""

    def run(texts: list[str]) -> list[TextAnalysis]:
        return analyse(texts, extractor, embedder)

    return run


def build_local_analyser(
    entities: str = "lexicon",
    entity_model: str | None = None,
    embedder: str = "lexical",
    embedder_model: str | None = None,
    *,
    extractor: Any = None,
    embedding: Any = None,
) -> Analyser:
    """An in-process analyser from backend names (``config.RewardConfig``'s ``entities`` and
    ``embedder``); ``extractor`` / ``embedding`` reuse annotators already built (the reward's)."""
    from editgrpo.annotators.embeddings import build_embedder
    from editgrpo.annotators.entities import build_entity_extractor

    if extractor is None:
        extractor = build_entity_extractor(entities, **({"model": entity_model} if entity_model else {}))
    if embedding is None:
        embedding = build_embedder(embedder, **({"model": embedder_model} if embedder_model else {}))
    return local_analyser(extractor, embedding)


def server_analyser(client: Any) -> Analyser:
    """Analyses by a reward server's ``/v1/analyze`` (``rewards.client.RewardClient``), converted to
    the edit engine's ``TextAnalysis``; a text the server could not analyse raises, so the editor
    leaves that rollout unedited."""

    def run(texts: list[str]) -> list[TextAnalysis]:
        out = []
        for text, answer in zip(texts, client.analyze(texts, vectors=True), strict=True):
            if answer.entities is None:
                raise RuntimeError("the reward server could not analyse a text")
            entities = [
                AnalysedEntity(
                    text=e.text,
                    start=e.start,
                    end=e.end,
                    sentence=e.sentence if e.sentence is not None else 0,
                    rate_type=e.type,
                    present=is_present(e.type),
                    vector=np.asarray(e.vector, dtype=np.float32),
                )
                for e in answer.entities
            ]
            out.append(TextAnalysis(text=text, sentences=list(answer.sentences), entities=entities))
        return out

    return run


class RolloutEditor:
    """Edits rollouts towards their references with one edit configuration (``config.EditConfig``)."""

    def __init__(
        self,
        analyser: Analyser,
        *,
        rule: str = "paper",
        similarity_threshold: float = 0.6,
        max_ops: int = 1,
        contradiction_threshold: float | None = None,
        anatomy_false_positives: bool = True,
        reference_cache_size: int = 10_000,
    ) -> None:
        self.analyser = analyser
        self.rule = rule
        self.convention = analysis_convention(rule)
        self.similarity_threshold = similarity_threshold
        self.max_ops = max_ops
        self.contradiction_threshold = contradiction_threshold
        self.anatomy_false_positives = anatomy_false_positives
        self.failures = 0
        self._references: OrderedDict[str, TextAnalysis | None] = OrderedDict()
        self._cache_size = reference_cache_size

    @classmethod
    def from_config(cls, edit: Any, analyser: Analyser) -> RolloutEditor:
        """From a ``config.EditConfig``."""
        return cls(
            analyser,
            rule=edit.rule,
            similarity_threshold=edit.similarity_threshold,
            max_ops=edit.max_ops,
            contradiction_threshold=edit.contradiction_threshold,
            anatomy_false_positives=edit.anatomy_false_positives,
        )

    def _analyse_guarded(self, texts: list[str]) -> list[TextAnalysis | None]:
        """Analyse a batch; when it fails, text by text, so one bad text costs only its own edit."""
        if not texts:
            return []
        try:
            analyses: list[TextAnalysis | None] = list(self.analyser(texts))
        except Exception:
            analyses = []
            for text in texts:
                try:
                    analyses.append(self.analyser([text])[0])
                except Exception:
                    analyses.append(None)
        return [None if a is None else with_convention(a, self.convention) for a in analyses]

    def references(self, texts: Sequence[str]) -> list[TextAnalysis | None]:
        """Analyses of reference texts, each distinct text analysed once (LRU cache)."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._references]
        for text, analysis in zip(missing, self._analyse_guarded(missing), strict=True):
            self._references[text] = analysis
            while len(self._references) > self._cache_size:
                self._references.popitem(last=False)
        for text in texts:
            self._references.move_to_end(text)
        return [self._references[t] for t in texts]

    def edit(
        self, rollouts: Sequence[str], references: Sequence[str], rng: np.random.Generator
    ) -> list[EditedText]:
        """One ``EditedText`` per pair; ``changed`` is False when no rule applied or an analysis
        failed (the latter counted in ``failures``). Plans draw their choices from ``rng`` in pair
        order, so a seeded generator gives the same edits every time."""
        if len(rollouts) != len(references):
            raise ValueError(f"{len(rollouts)} rollouts but {len(references)} references")
        reference_analyses = self.references(list(references))
        rollout_analyses = self._analyse_guarded(list(rollouts))
        out = []
        for text, rollout, reference in zip(rollouts, rollout_analyses, reference_analyses, strict=True):
            if rollout is None or reference is None:
                self.failures += 1
                out.append(
                    EditedText(
                        text=text, spans=((0, len(text), "policy"),) if text else (), ops=(), changed=False
                    )
                )
                continue
            plan = plan_edits(
                rollout,
                reference,
                rule=self.rule,
                tau=self.similarity_threshold,
                max_ops=self.max_ops,
                rng=rng,
                contradiction_tau=self.contradiction_threshold,
                anatomy_false_positives=self.anatomy_false_positives,
            )
            out.append(apply_edits(rollout.sentences, reference.sentences, plan))
        return out
