"""Radiology entities: the offline ``lexicon`` extractor (RaTE entities + a RadGraph graph).

Per sentence (``text.sentences``), on RadGraph's tokens (``radgraph_tokens``: nltk's
``wordpunct_tokenize`` rule, so RadGraph F1 compares the same token strings as RadGraph-XL):

1. lexicon matching (``annotators/data/entity_lexicon.txt``): longest match of findings, diseases,
   devices, normality words, anatomy heads / adjectives / positional words, and descriptors;
2. status of every observation from the scope engine the CheXpert labeler uses
   (``annotators/scope.py``, same cues): positive -> OBS-DP, negative -> OBS-DA (and NON-* RaTE
   types), uncertain -> OBS-U; a descriptor takes the status of the observation it modifies;
3. relations from clause-level rules:
   - modify: a descriptor -> the observation it precedes ("mild cardiomegaly") or follows after
     a copula ("the effusion is small"); a positional word -> its anatomy head ("left lower lobe");
   - located_at: an observation -> the anatomy adjective before it ("pleural effusion"), the
     anatomy span before it ("left lower lobe opacity"), or the anatomy span after a locative
     preposition ("opacity in the left lower lobe"); a normality word -> the anatomy it follows
     in its clause ("lungs are clear");
   - suggestive_of: an observation -> the first observation after a cue such as "may represent",
     "consistent with", "suggestive of" in the same sentence.

RaTE entities are phrases: an observation with the anatomy adjectives directly before it
("pleural effusion"), and anatomy spans ("left lower lobe"). Results are reported under the
backend's name (``lexicon``), an approximation of RaTE-NER and RadGraph-XL, not their numbers.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import regex

from editgrpo.annotators.entity_types import GraphEntity, RateEntity, Relation, ReportEntities
from editgrpo.annotators.scope import ScopeEngine, read_data_file
from editgrpo.errors import UserError
from editgrpo.text.sentences import split_sentences

CATEGORIES = ("finding", "disease", "device", "normal", "anatomy", "anatomy_adj", "anatomy_mod", "modifier")
OBSERVATIONS = ("finding", "disease", "device")
# nltk's wordpunct pattern, r"\w+|[^\w\s]+", compiled with the `regex` engine as nltk compiles it
# (nltk/redos.py): its \w and \s follow Unicode properties and differ from the stdlib `re` on
# characters such as superscript digits and U+001F, and RadGraph F1 compares token strings.
_TOKEN = regex.compile(r"\w+|[^\w\s]+")
_LOCATIVE = {
    "in",
    "at",
    "within",
    "of",
    "involving",
    "over",
    "along",
    "near",
    "overlying",
    "projecting",
    "to",
}
_COPULA = {"is", "are", "was", "were", "appears", "appear", "remains", "remain", "seems"}
_SKIPPABLE = {"the", "a", "an"}
_CLAUSE_BREAK = {",", ";", ":", "but", "however", "although", "which", "and", "with", "without"}
_SUGGESTIVE = re.compile(
    r"(?<!\w)(?:may|might|could|likely|probably|possibly)?\s*(?:represent\w*|reflect\w*|indicat\w*|suggest\w*)"
    r"|(?<!\w)(?:consistent|compatible|concerning|suspicious|worrisome)\s+(?:with|for)(?!\w)"
    r"|(?<!\w)suggestive\s+of(?!\w)|(?<!\w)due\s+to(?!\w)",
    re.IGNORECASE,
)
_RATE_TYPE = {
    ("finding", "positive"): "ABNORMALITY",
    ("finding", "uncertain"): "ABNORMALITY",
    ("finding", "negative"): "NON-ABNORMALITY",
    ("device", "positive"): "ABNORMALITY",
    ("device", "uncertain"): "ABNORMALITY",
    ("device", "negative"): "NON-ABNORMALITY",
    ("disease", "positive"): "DISEASE",
    ("disease", "uncertain"): "DISEASE",
    ("disease", "negative"): "NON-DISEASE",
}
_GRAPH_LABEL = {"positive": "OBS-DP", "negative": "OBS-DA", "uncertain": "OBS-U"}


def radgraph_tokens(text: str) -> list[tuple[str, int, int]]:
    """(token, start, end) by RadGraph-XL's tokenisation: nltk ``wordpunct_tokenize``, i.e. runs
    of word characters and runs of other non-space characters (METRICS.md). Whitespace, newlines
    included, only separates, so this equals tokenising the space-normalised text."""
    return [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


@dataclass(frozen=True)
class _Term:
    words: tuple[str, ...]
    category: str


@dataclass
class _Match:
    category: str
    first: int  # token indices, inclusive
    last: int
    status: str = "positive"


class Lexicon:
    """Terms by first word, longest first; ``*`` marks a prefix word."""

    def __init__(self, text: str, source: str) -> None:
        self.exact: dict[str, list[_Term]] = {}
        self.prefixed: list[_Term] = []
        category = None
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("[") and line.endswith("]"):
                category = line[1:-1].strip()
                if category not in CATEGORIES:
                    raise ValueError(
                        f"{source}:{number}: unknown category {category!r}; valid: {', '.join(CATEGORIES)}"
                    )
                continue
            if category is None:
                raise ValueError(f"{source}:{number}: term before any [category] header")
            # Tokenised like reports (so "air-fluid" is three words), keeping a trailing * on a word.
            term = _Term(tuple(re.findall(r"\w+\*?|[^\w\s*]+", line.lower())), category)
            if term.words[0].endswith("*"):
                self.prefixed.append(term)
            else:
                self.exact.setdefault(term.words[0], []).append(term)
        for terms in self.exact.values():
            terms.sort(key=lambda t: len(t.words), reverse=True)
        self.prefixed.sort(key=lambda t: len(t.words), reverse=True)

    @staticmethod
    def _word_matches(pattern: str, word: str) -> bool:
        return word.startswith(pattern[:-1]) if pattern.endswith("*") else word == pattern

    def match_at(self, words: list[str], i: int) -> _Term | None:
        candidates = self.exact.get(words[i], []) + [
            t for t in self.prefixed if words[i].startswith(t.words[0][:-1])
        ]
        best = None
        for term in candidates:
            n = len(term.words)
            fits = i + n <= len(words) and (best is None or n > len(best.words))
            if fits and all(
                self._word_matches(p, w) for p, w in zip(term.words, words[i : i + n], strict=True)
            ):
                best = term
        return best


class LexiconEntityExtractor:
    """The ``lexicon`` backend (see module docstring)."""

    name = "lexicon"

    def __init__(
        self, lexicon: str | Path | None = None, cues: str | Path | None = None, scope_words: int = 8
    ):
        text, source = read_data_file(lexicon, "entity_lexicon.txt")
        self.lexicon = Lexicon(text, source)
        cue_text, cue_source = read_data_file(cues, "chexpert_cues.txt")
        self.scope = ScopeEngine(cue_text, cue_source, scope_words=scope_words)
        self._cache: dict[str, tuple] = {}

    def extract(self, texts: Sequence[str]) -> list[ReportEntities]:
        return [self.extract_one(text) for text in texts]

    def extract_one(self, report: str) -> ReportEntities:
        result = ReportEntities(report)
        tokens = radgraph_tokens(report)
        starts = [start for _, start, _ in tokens]
        for sentence in split_sentences(report):
            # The sentence's tokens: those starting inside its span (bisect on the start offsets).
            offset = bisect.bisect_left(starts, sentence.start)
            stop = bisect.bisect_left(starts, sentence.end)
            sentence_tokens = [(t, s - sentence.start, e - sentence.start) for t, s, e in tokens[offset:stop]]
            if not sentence_tokens:
                continue
            rate, graph, relations = self._sentence(sentence.text, sentence_tokens)
            base = len(result.graph)
            result.rate += [
                RateEntity(e.text, e.start + sentence.start, e.end + sentence.start, e.rate_type)
                for e in rate
            ]
            result.graph += [
                GraphEntity(
                    g.tokens,
                    g.label,
                    g.start + sentence.start,
                    g.end + sentence.start,
                    g.token_start + offset,
                    g.token_end + offset,
                )
                for g in graph
            ]
            result.relations += [Relation(r.kind, r.source + base, r.target + base) for r in relations]
        return result

    def _sentence(self, text: str, tokens: list[tuple[str, int, int]]):
        key = text
        cached = self._cache.get(key)
        if cached is None:
            cached = self._analyse(text, tokens)
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[key] = cached
        return cached

    def _analyse(self, text: str, tokens: list[tuple[str, int, int]]):
        words = [t.lower() for t, _, _ in tokens]
        matches: list[_Match] = []
        i = 0
        while i < len(words):
            term = self.lexicon.match_at(words, i)
            if term is None:
                i += 1
                continue
            matches.append(_Match(term.category, i, i + len(term.words) - 1))
            i += len(term.words)
        if not matches:
            return [], [], []
        scope = self.scope.analyse(text)
        observation_spans = [
            (tokens[m.first][1], tokens[m.last][2]) for m in matches if m.category in OBSERVATIONS
        ]
        for m in matches:
            if m.category in OBSERVATIONS:
                start, end = tokens[m.first][1], tokens[m.last][2]
                m.status = scope.status(start, end, others=observation_spans) or "positive"

        def between(a: int, b: int) -> list[str]:
            return words[a + 1 : b]

        def clause_open(a: int, b: int) -> bool:
            return not any(w in _CLAUSE_BREAK or w == "." for w in between(a, b))

        relations: list[tuple[str, int, int]] = []  # (kind, source match, target match)
        # Descriptors and positional words: modify the next head they lead to.
        for k, m in enumerate(matches):
            if m.category == "modifier":
                target = self._next(
                    matches,
                    k,
                    ("finding", "disease", "device"),
                    ("modifier", "anatomy_adj", "anatomy_mod"),
                    3,
                )
                if target is None:
                    target = self._after_copula(matches, k, words)
                if target is not None:
                    relations.append(("modify", k, target))
                    m.status = matches[target].status
            elif m.category == "anatomy_mod":
                target = self._next(matches, k, ("anatomy",), ("anatomy_mod", "anatomy_adj"), 3)
                if target is not None:
                    relations.append(("modify", k, target))
        # Locations of observations.
        for k, m in enumerate(matches):
            if m.category not in OBSERVATIONS:
                continue
            previous = matches[k - 1] if k > 0 else None
            if (
                previous is not None
                and previous.last == m.first - 1
                and previous.category in ("anatomy_adj", "anatomy")
            ):
                relations.append(("located_at", k, k - 1))
            after = self._located_after(matches, k, words)
            if after is not None:
                relations.append(("located_at", k, after))
        for k, m in enumerate(matches):
            if m.category != "normal":
                continue
            for j in range(k - 1, -1, -1):
                if matches[j].category in ("anatomy", "anatomy_adj") and clause_open(
                    matches[j].last, m.first
                ):
                    relations.append(("located_at", k, j))
                    break
        # suggestive_of: observation -> first observation after a cue.
        for cue in _SUGGESTIVE.finditer(text):
            before = [
                k
                for k, m in enumerate(matches)
                if m.category in OBSERVATIONS and tokens[m.last][2] <= cue.start()
            ]
            after = [
                k
                for k, m in enumerate(matches)
                if m.category in OBSERVATIONS and tokens[m.first][1] >= cue.end()
            ]
            if before and after:
                relations.append(("suggestive_of", before[-1], after[0]))

        graph, graph_of = [], {}
        for k, m in enumerate(matches):
            label = "ANAT-DP" if m.category.startswith("anatomy") else _GRAPH_LABEL[m.status]
            graph_of[k] = len(graph)
            graph.append(
                GraphEntity(
                    " ".join(t for t, _, _ in tokens[m.first : m.last + 1]),
                    label,
                    tokens[m.first][1],
                    tokens[m.last][2],
                    m.first,
                    m.last,
                )
            )
        unique = list(dict.fromkeys(relations))
        graph_relations = [Relation(kind, graph_of[s], graph_of[t]) for kind, s, t in unique]
        return self._rate_entities(text, tokens, matches), graph, graph_relations

    @staticmethod
    def _next(
        matches: list[_Match], k: int, targets: tuple[str, ...], through: tuple[str, ...], max_gap: int
    ) -> int | None:
        last = matches[k].last
        for j in range(k + 1, len(matches)):
            if matches[j].first - last - 1 > max_gap:
                return None
            if matches[j].category in targets:
                return j
            if matches[j].category not in through:
                return None
            last = matches[j].last
        return None

    @staticmethod
    def _after_copula(matches: list[_Match], k: int, words: list[str]) -> int | None:
        """ "The effusion is small": a descriptor after a copula modifies the observation before."""
        m = matches[k]
        for j in range(k - 1, -1, -1):
            prev = matches[j]
            if prev.category in OBSERVATIONS:
                gap = words[prev.last + 1 : m.first]
                if gap and len(gap) <= 3 and any(w in _COPULA for w in gap) and all(w.isalpha() for w in gap):
                    return j
                return None
        return None

    @staticmethod
    def _located_after(matches: list[_Match], k: int, words: list[str]) -> int | None:
        """An anatomy span after a locative preposition: its head (the span's last anatomy)."""
        m = matches[k]
        j = k + 1
        if j >= len(matches):
            return None
        gap = words[m.last + 1 : matches[j].first]
        if (
            not gap
            or gap[0] not in _LOCATIVE
            or len(gap) > 3
            or any(w not in _LOCATIVE | _SKIPPABLE for w in gap)
        ):
            return None
        head = None
        while j < len(matches) and matches[j].category in ("anatomy", "anatomy_adj", "anatomy_mod"):
            if matches[j].category == "anatomy":
                head = j
            if j + 1 < len(matches) and matches[j + 1].first != matches[j].last + 1:
                break
            j += 1
        return head

    @staticmethod
    def _rate_entities(text: str, tokens, matches: list[_Match]) -> list[RateEntity]:
        out: list[RateEntity] = []
        k = 0
        while k < len(matches):
            m = matches[k]
            run_start = k
            # A run of adjacent anatomy words (positional, adjectives, heads).
            while (
                k + 1 < len(matches)
                and matches[k].category.startswith("anatomy")
                and matches[k + 1].first == matches[k].last + 1
                and matches[k + 1].category.startswith("anatomy")
            ):
                k += 1
            m = matches[k]
            if m.category.startswith("anatomy"):
                nxt = matches[k + 1] if k + 1 < len(matches) else None
                adjectives_only = all(matches[j].category == "anatomy_adj" for j in range(run_start, k + 1))
                if (
                    nxt is not None
                    and nxt.first == m.last + 1
                    and nxt.category in OBSERVATIONS
                    and adjectives_only
                ):
                    # "pleural effusion": the adjectives join the observation's phrase.
                    start, end = tokens[matches[run_start].first][1], tokens[nxt.last][2]
                    out.append(
                        RateEntity(text[start:end], start, end, _RATE_TYPE[(nxt.category, nxt.status)])
                    )
                    k += 2
                    continue
                if (
                    any(matches[j].category == "anatomy" for j in range(run_start, k + 1))
                    or not adjectives_only
                ):
                    start, end = tokens[matches[run_start].first][1], tokens[m.last][2]
                    out.append(RateEntity(text[start:end], start, end, "ANATOMY"))
                k += 1
                continue
            if m.category in OBSERVATIONS:
                start, end = tokens[m.first][1], tokens[m.last][2]
                out.append(RateEntity(text[start:end], start, end, _RATE_TYPE[(m.category, m.status)]))
            elif m.category == "normal":
                start, end = tokens[m.first][1], tokens[m.last][2]
                out.append(RateEntity(text[start:end], start, end, "NON-ABNORMALITY"))
            k += 1
        return out


# --------------------------------------------------------------------------------------------
# Model backends behind the same interface
# --------------------------------------------------------------------------------------------


class RateEntityExtractor:
    """``rate``: RaTE entities from the RaTE-NER model (``annotators/rate_ner.py``); the RadGraph
    graph stays empty (pair it with ``lexicon`` or ``radgraph`` for RadGraph F1)."""

    name = "rate"

    def __init__(
        self,
        model: str = "Angelakeke/RaTE-NER-Deberta",
        tokenizer: str | None = None,
        device: str | None = None,
        batch_size: int = 32,
    ) -> None:
        from editgrpo.annotators.rate_ner import RateNER

        self.ner = RateNER(model, tokenizer=tokenizer, device=device, batch_size=batch_size)

    def extract(self, texts: Sequence[str]) -> list[ReportEntities]:
        return [
            ReportEntities(text, rate=entities)
            for text, entities in zip(texts, self.ner.extract(texts), strict=True)
        ]


def from_radgraph_output(text: str, annotation: dict) -> ReportEntities:
    """Our annotation from one report of the ``radgraph`` package's output (``{"text", "entities":
    {id: {"tokens", "label", "start_ix", "end_ix", "relations"}}}``). Labels keep the package's own
    spelling (RadGraph-XL: "Observation::definitely present" ...), so RadGraph F1 compares exactly
    what the reference compares. Character spans come from our tokens, which equal RadGraph-XL's
    (-1 where the package's tokens differ, as the v1 model's may)."""
    tokens = radgraph_tokens(text)
    ids = list(annotation.get("entities", {}))
    index = {entity_id: k for k, entity_id in enumerate(ids)}
    graph, relations = [], []
    for k, entity_id in enumerate(ids):
        entity = annotation["entities"][entity_id]
        first, last = int(entity.get("start_ix", -1)), int(entity.get("end_ix", -1))
        aligned = (
            0 <= first <= last < len(tokens)
            and " ".join(t for t, _, _ in tokens[first : last + 1]) == entity["tokens"]
        )
        start, end = (tokens[first][1], tokens[last][2]) if aligned else (-1, -1)
        graph.append(GraphEntity(entity["tokens"], entity["label"], start, end, first, last))
        for kind, target in entity.get("relations", []):
            if str(target) in index:
                relations.append(Relation(kind, k, index[str(target)]))
    return ReportEntities(text, graph=graph, relations=relations)


class RadGraphPackageExtractor:
    """``radgraph``: the ``radgraph`` package (Stanford-AIMI) with its own weights; RaTE entities
    stay empty. Needs ``pip install radgraph`` and its model files (downloaded by the package from
    the hub, or already in its cache)."""

    name = "radgraph"

    def __init__(self, model_type: str = "radgraph-xl", **options: object) -> None:
        try:
            from radgraph import RadGraph  # optional: not a dependency of editgrpo
        except ImportError:
            raise UserError(
                "the radgraph entity backend needs the radgraph package and its weights: pip install radgraph"
            ) from None
        self.model_type = model_type
        self.model = RadGraph(model_type=model_type, **options)

    def extract(self, texts: Sequence[str]) -> list[ReportEntities]:
        output = self.model(list(texts))
        return [from_radgraph_output(text, output[str(k)]) for k, text in enumerate(texts)]


ENTITY_BACKENDS: dict[str, type] = {
    "lexicon": LexiconEntityExtractor,
    "rate": RateEntityExtractor,
    "radgraph": RadGraphPackageExtractor,
}

# What each backend fills in ``ReportEntities``: "rate" (RaTE entities: RaTEScore, the edits) and/or
# "graph" (RadGraph entities and relations: RadGraph F1). A component scored on a backend that
# leaves its part empty would read 0 for every text, so the reward refuses that pairing.
ENTITY_OUTPUTS: dict[str, frozenset[str]] = {
    "lexicon": frozenset({"rate", "graph"}),
    "rate": frozenset({"rate"}),
    "radgraph": frozenset({"graph"}),
}


def build_entity_extractor(name: str = "lexicon", **options: object):
    """The entity backend ``name`` (see ``ENTITY_BACKENDS``), built with ``options``."""
    if name not in ENTITY_BACKENDS:
        raise ValueError(f"unknown entity backend {name!r}; valid: {', '.join(ENTITY_BACKENDS)}")
    return ENTITY_BACKENDS[name](**options)
