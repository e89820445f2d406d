"""The composite clinical reward: a weighted sum of named components (EDITGRPO.md section 2.4).

Default: ``radgraph_partial + chexbert_micro14 + ratescore``, weights 1, the paper's R in [0, 3]:

- ``chexbert_micro14``: micro-F1 over the 14 CheXpert labels of the (hyp, ref) pair, uncertain as
  positive (``metrics/chexbert_f1.pair_micro_f1``), labels from the configured labeler
  (``rules`` = ``chexpert-rules`` offline, or ``chexbert``);
- ``radgraph_partial``: RadGraph F1 at the partial level (``metrics/radgraph_f1``) on the graphs
  of the configured entity backend (``lexicon`` offline, or ``radgraph``);
- ``ratescore``: RaTEScore (``metrics/ratescore``, version ``0.5`` by default) on the RaTE
  entities of the entity backend (``lexicon`` or ``rate``) embedded by the configured embedder.
- ``chexpert_balanced`` (opt-in, the authors' release): class-balanced accuracy of the pair's 14
  labels weighted by the training positive frequencies (``metrics/chexpert_balanced``), read from
  ``label_freqs`` (``freqs.json`` of ``editgrpo label-stats``; ``rewards/label_freqs``). Building a
  reward with it and no frequencies file, or one made with another labeler or uncertain
  convention, fails at construction.

None policy (ARCHITECTURE.md rule 5): a component that cannot score a sample (its annotator
failed on that text) is None for it, never 0. The total of a sample is the weighted sum of the
components that scored, rescaled by (all weights / weights that scored) so it keeps the range of a
full score; a sample no component could score has total None and is counted in ``stats``.

Empty completions (``empty_completion``): ``floor`` (default) gives a completion that is empty after
the evaluation cleaner ``empty_clean`` (``text.clean``: ``none`` strips whitespace, ``editgrpo`` is
the authors' evaluation cleaning) the floor of the reward, 0.0 for the total and every component;
``score`` scores it like any text (the authors' release). A deliberate deviation from the release,
measured: with the offline backends ``""`` scored 1.5 of 3 against a normal reference (micro-F1-14
1.0 through No Finding, plus RaTEScore's floor) and 0.5 against an abnormal one, more than a real
but wrong one-sentence report (0.02-0.66), so every empty edited copy got a positive advantage in
small training runs: a push towards ending the report at once.

References are analysed once per distinct text (a cache keyed by the text): a group of G
rollouts shares one reference, so its labels, graph and entity vectors are computed once, not G
times. ``CompositeReward`` is also a TRL reward function:
``reward(prompts=..., completions=..., reference=[...], **kwargs) -> list[float | None]``.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from editgrpo.annotators.chexpert import build_labeler
from editgrpo.annotators.embeddings import build_embedder
from editgrpo.annotators.entities import ENTITY_OUTPUTS, build_entity_extractor
from editgrpo.metrics.chexbert_f1 import UNCERTAIN_AS, label_outcomes, pair_micro_f1
from editgrpo.metrics.chexpert_balanced import balanced_accuracy
from editgrpo.metrics.radgraph_f1 import radgraph_f1_pair
from editgrpo.metrics.ratescore import RATESCORE_VERSIONS, ratescore_pair
from editgrpo.rewards.label_freqs import FIX as LABEL_FREQS_FIX
from editgrpo.rewards.label_freqs import LabelFreqsError, load_label_freqs
from editgrpo.text.clean import EMPTY_REPORT, get_cleaner

# What an empty completion earns (module docstring): the floor, or the components' own values.
EMPTY_COMPLETION: tuple[str, ...] = ("floor", "score")
EMPTY_FLOOR = 0.0

DEFAULT_COMPONENTS: dict[str, float] = {"radgraph_partial": 1.0, "chexbert_micro14": 1.0, "ratescore": 1.0}


@dataclass
class Analysis:
    """What the components need from one text: labels, RadGraph layout, RaTE (type, vector) list.
    A field is None when its annotator failed on the text."""

    labels: dict[str, int | None] | None = None
    graph: dict[str, Any] | None = None
    rate: list[tuple[str, Any]] | None = None


@dataclass(frozen=True)
class RewardResult:
    """One (hyp, ref) pair's total, its components and, when a CheXpert labeler ran on both texts,
    each observation's outcome (``"tp"``, ``"fp"``, ``"fn"``, ``"tn"``; uncertain counted as the
    reward's ``uncertain_as``) for the per-label breakdown of the training log (issue: which labels
    the reward is rewarding)."""

    total: float | None
    components: dict[str, float | None]
    label_outcomes: dict[str, str] | None = None


@dataclass
class RewardStats:
    """Counters for the training log: samples scored, unscorable samples, partial scores."""

    samples: int = 0
    unscorable: int = 0
    partial: int = 0
    failures: Counter = field(default_factory=Counter)  # component -> samples it could not score

    def record(self, result: RewardResult) -> None:
        """Count one scored sample (the in-process reward and the server client count alike)."""
        self.samples += 1
        missing = [name for name, value in result.components.items() if value is None]
        for name in missing:
            self.failures[name] += 1
        if result.total is None:
            self.unscorable += 1
        elif missing:
            self.partial += 1


class CompositeReward:
    """Weighted clinical reward (module docstring). Annotators are built once, at construction."""

    COMPONENTS: tuple[str, ...] = (*DEFAULT_COMPONENTS, "chexpert_balanced")

    def __init__(
        self,
        components: Mapping[str, float] | None = None,
        *,
        labeler: str = "rules",
        labeler_options: Mapping[str, Any] | None = None,
        entities: str = "lexicon",
        entity_options: Mapping[str, Any] | None = None,
        graph_entities: str | None = None,
        graph_entity_options: Mapping[str, Any] | None = None,
        embedder: str = "lexical",
        embedder_options: Mapping[str, Any] | None = None,
        ratescore_version: str = "0.5",
        reference_cache_size: int = 10_000,
        label_freqs: str | Path | None = None,
        uncertain_as: str = "positive",
        empty_completion: str = "floor",
        empty_clean: str = "none",
    ) -> None:
        self.components = dict(DEFAULT_COMPONENTS if components is None else components)
        unknown = sorted(set(self.components) - set(self.COMPONENTS))
        if unknown:
            raise ValueError(f"unknown reward component(s) {unknown}; valid: {', '.join(self.COMPONENTS)}")
        if not self.components or any(w < 0 for w in self.components.values()):
            raise ValueError(
                f"reward weights must be a non-empty mapping of non-negative numbers: {self.components}"
            )
        if ratescore_version not in RATESCORE_VERSIONS:
            raise ValueError(
                f"unknown RaTEScore version {ratescore_version!r}; valid: {', '.join(RATESCORE_VERSIONS)}"
            )
        self.ratescore_version = ratescore_version
        if empty_completion not in EMPTY_COMPLETION:
            raise ValueError(
                f"unknown empty_completion {empty_completion!r}; valid: {', '.join(EMPTY_COMPLETION)}"
            )
        self.empty_completion = empty_completion
        self._empty_cleaner = get_cleaner(empty_clean)
        self.empty_clean = empty_clean
        need = set(self.components)
        if uncertain_as not in UNCERTAIN_AS:
            raise ValueError(f"unknown uncertain_as {uncertain_as!r}; valid: {', '.join(UNCERTAIN_AS)}")
        self.uncertain_as = uncertain_as
        # Training positive frequency per observation (chexpert_balanced); checked before any
        # annotator is built, so a missing or mismatched file fails fast.
        self.label_freqs: dict[str, float] | None = None
        if "chexpert_balanced" in need:
            if label_freqs is None:
                raise LabelFreqsError(
                    f"the chexpert_balanced reward component needs label_freqs (a freqs.json). Fix: {LABEL_FREQS_FIX}."
                )
            self.label_freqs = load_label_freqs(label_freqs, labeler=labeler, uncertain_as=uncertain_as)[
                "labels"
            ]
        self.labeler = (
            build_labeler(labeler, **dict(labeler_options or {}))
            if need & {"chexbert_micro14", "chexpert_balanced"}
            else None
        )
        # RaTE entities (ratescore) come from `entities`; RadGraph graphs (radgraph_partial) from
        # `graph_entities` (default: the same backend). One backend that fills both is built once.
        graph_backend = graph_entities or entities
        for component, backend, part, fix in (
            ("ratescore", entities, "rate", "entities=rate (RaTE-NER) or lexicon (offline)"),
            (
                "radgraph_partial",
                graph_backend,
                "graph",
                "graph_entities=radgraph (the RadGraph model) or lexicon (offline) as the graph backend",
            ),
        ):
            if component in need and part not in ENTITY_OUTPUTS.get(backend, frozenset({part})):
                raise ValueError(
                    f"the {component} component needs {'RaTE entities' if part == 'rate' else 'RadGraph graphs'}, "
                    f"which the {backend!r} entity backend does not produce (it would score 0 for every "
                    f"text). Fix: {fix}."
                )
        shared = graph_backend == entities and graph_entity_options is None
        needs_main = "ratescore" in need or ("radgraph_partial" in need and shared)
        self.extractor = (
            build_entity_extractor(entities, **dict(entity_options or {})) if needs_main else None
        )
        if "radgraph_partial" not in need:
            self.graph_extractor = None
        elif shared:
            self.graph_extractor = self.extractor
        else:
            self.graph_extractor = build_entity_extractor(graph_backend, **dict(graph_entity_options or {}))
        self.embedder = (
            build_embedder(embedder, **dict(embedder_options or {})) if "ratescore" in need else None
        )
        self.names = {
            "labeler": labeler,
            "entities": entities,
            "graph_entities": graph_backend,
            "embedder": embedder,
        }
        self.stats = RewardStats()
        self._references: OrderedDict[str, Analysis] = OrderedDict()
        self._reference_cache_size = reference_cache_size
        self.__name__ = "editgrpo_" + "_plus_".join(self.components)  # TRL logs rewards by __name__

    @classmethod
    def from_config(cls, config: Any) -> CompositeReward:
        """From a ``config.RewardConfig``."""
        return cls(
            config.components,
            labeler=config.labeler,
            labeler_options={"checkpoint": config.labeler_checkpoint} if config.labeler_checkpoint else None,
            entities=config.entities,
            entity_options={"model": config.entity_model} if config.entity_model else None,
            graph_entities=config.graph_entities,
            embedder=config.embedder,
            embedder_options={"model": config.embedder_model} if config.embedder_model else None,
            ratescore_version=config.ratescore_version,
            label_freqs=config.label_freqs,
            empty_completion=config.empty_completion,
            empty_clean=config.empty_clean,
        )

    # ---------------------------------------------------------------------------------------
    # Analysis
    # ---------------------------------------------------------------------------------------

    @staticmethod
    def _guarded(function: Callable[[list[str]], list[Any]], texts: list[str]) -> list[Any]:
        """Run an annotator on a batch; if the batch fails, retry text by text so one bad text
        costs only its own result (None), never the batch's."""
        try:
            return function(texts)
        except Exception:
            results = []
            for text in texts:
                try:
                    results.append(function([text])[0])
                except Exception:
                    results.append(None)
            return results

    def analyze(self, texts: Sequence[str]) -> list[Analysis]:
        """Labels, RadGraph layout and RaTE vectors of each text, as the components need them."""
        texts = [text if isinstance(text, str) else None for text in texts]
        valid = [t for t in texts if t is not None]
        labels = self._guarded(self.labeler.label, valid) if self.labeler is not None else [None] * len(valid)
        extracted = (
            self._guarded(self.extractor.extract, valid)
            if self.extractor is not None
            else [None] * len(valid)
        )
        if self.graph_extractor is None:
            graphs = [None] * len(valid)
        elif self.graph_extractor is self.extractor:
            graphs = extracted
        else:
            graphs = self._guarded(self.graph_extractor.extract, valid)
        rate: list[Any] = [None] * len(valid)
        if self.embedder is not None:
            names = [e.text for report in extracted if report is not None for e in report.rate]
            vectors = self._guarded(lambda batch: list(self.embedder.embed(batch)), names) if names else []
            cursor = 0
            for k, report in enumerate(extracted):
                if report is None:
                    continue
                chunk = vectors[cursor : cursor + len(report.rate)]
                cursor += len(report.rate)
                if all(v is not None for v in chunk):
                    rate[k] = [(e.rate_type, v) for e, v in zip(report.rate, chunk, strict=True)]
        per_valid = iter(zip(labels, graphs, rate, strict=True))
        analyses = []
        for text in texts:
            if text is None:  # not a string: nothing can score it
                analyses.append(Analysis())
                continue
            label, graph_report, rate_entities = next(per_valid)
            graph = graph_report.to_radgraph() if graph_report is not None else None
            analyses.append(Analysis(labels=label, graph=graph, rate=rate_entities))
        return analyses

    def _reference_analyses(self, references: Sequence[str]) -> list[Analysis]:
        missing = list(
            dict.fromkeys(r for r in references if isinstance(r, str) and r not in self._references)
        )
        for text, analysis in zip(missing, self.analyze(missing), strict=True):
            self._references[text] = analysis
            while len(self._references) > self._reference_cache_size:
                self._references.popitem(last=False)
        return [self._references.get(r, Analysis()) if isinstance(r, str) else Analysis() for r in references]

    # ---------------------------------------------------------------------------------------
    # Scoring
    # ---------------------------------------------------------------------------------------

    def _component(self, name: str, hyp: Analysis, ref: Analysis) -> float | None:
        if name == "chexbert_micro14":
            return (
                pair_micro_f1(hyp.labels, ref.labels)
                if hyp.labels is not None and ref.labels is not None
                else None
            )
        if name == "chexpert_balanced":
            if hyp.labels is None or ref.labels is None or self.label_freqs is None:
                return None
            return balanced_accuracy(hyp.labels, ref.labels, self.label_freqs, self.uncertain_as)
        if name == "radgraph_partial":
            if hyp.graph is None or ref.graph is None:
                return None
            return radgraph_f1_pair(hyp.graph, ref.graph, level="partial")
        if hyp.rate is None or ref.rate is None:
            return None
        return ratescore_pair(hyp.rate, ref.rate, version=self.ratescore_version)

    def is_empty(self, text: Any) -> bool:
        """Whether a completion is empty after the evaluation cleaner ``empty_clean`` (a non-string
        is not empty: it is unscorable)."""
        if not isinstance(text, str):
            return False
        cleaned = self._empty_cleaner(text).strip()
        return not cleaned or cleaned == EMPTY_REPORT

    def score(self, hyps: Sequence[str], refs: Sequence[str]) -> list[RewardResult]:
        """One result per (hyp, ref) pair, with every component's value."""
        if len(hyps) != len(refs):
            raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
        floored = [self.empty_completion == "floor" and self.is_empty(h) for h in hyps]
        # Floored completions are not analysed (their score does not depend on it).
        analysed = iter(self.analyze([h for h, skip in zip(hyps, floored, strict=True) if not skip]))
        hyp_analyses = [None if skip else next(analysed) for skip in floored]
        ref_analyses = self._reference_analyses(refs)
        total_weight = sum(self.components.values())
        results = []
        for hyp, ref in zip(hyp_analyses, ref_analyses, strict=True):
            if hyp is None:
                result = RewardResult(EMPTY_FLOOR, dict.fromkeys(self.components, EMPTY_FLOOR))
                self.stats.record(result)
                results.append(result)
                continue
            values = {name: self._component(name, hyp, ref) for name in self.components}
            scored = {name: v for name, v in values.items() if v is not None}
            total = None
            if scored:
                weight = sum(self.components[name] for name in scored)
                weighted = sum(self.components[name] * value for name, value in scored.items())
                total = weighted * (total_weight / weight) if weight > 0 else 0.0
            outcomes = (
                label_outcomes(hyp.labels, ref.labels, self.uncertain_as)
                if hyp.labels is not None and ref.labels is not None
                else None
            )
            result = RewardResult(total, values, outcomes)
            self.stats.record(result)
            results.append(result)
        return results

    def __call__(
        self,
        prompts: Sequence[Any] | None = None,
        completions: Sequence[Any] | None = None,
        reference: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        """TRL reward-function form: the ``reference`` column of the dataset arrives as a keyword
        argument; conversational completions (lists of messages) are reduced to their text."""
        return trl_totals(self.score, completions, reference)


def trl_totals(
    score: Callable[[list[Any], list[str]], list[RewardResult]],
    completions: Sequence[Any] | None,
    reference: Sequence[str] | None,
) -> list[float | None]:
    """The TRL reward-function result of a ``score(hyps, refs)`` function: one total per completion."""
    if completions is None or reference is None:
        raise ValueError("the reward needs `completions` and a `reference` column in the dataset")
    texts = [completion_text(c) for c in completions]
    return [result.total for result in score(texts, list(reference))]


def completion_text(completion: Any) -> Any:
    """A completion as text: a string, or the content of the last message of a conversation."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content")
        if isinstance(content, list):  # [{"type": "text", "text": ...}]
            return "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return content
    return None
