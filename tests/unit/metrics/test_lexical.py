"""Lexical metrics (pycocoevalcap 1.2 convention, R2Gen tokenisation): hand-computed BLEU, ROUGE-L and
CIDEr-D cases, R2Gen's cleaner against a copy of the upstream lambda, the API, and equivalence with
pycocoevalcap's own Bleu / Rouge / Cider / Meteor classes (skipped when it is not installed; METEOR
also needs Java)."""

from __future__ import annotations

import math
import random
import re
import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from editgrpo.data.synth import SynthConfig, generate_studies
from editgrpo.metrics.lexical import (
    METEOR_UNAVAILABLE_JAVA,
    TOKENIZATIONS,
    bleu_from_stats,
    bleu_stats,
    cider_d,
    lcs_length,
    lexical_scores,
    meteor,
    rouge_l,
    tokenize_r2gen,
)

SMALL, TINY = 1e-9, 1e-15  # bleu_scorer.py constants


def toks(text: str) -> list[str]:
    return text.split()


# ---------------------------------------------------------------------------------------------- BLEU


def test_bleu_hand_computed_four_word_hypothesis() -> None:
    hyp = toks("the heart is normal")
    ref = toks("the heart size is normal")
    # unigrams: the, heart, is, normal all in ref -> 4/4; bigrams: "the heart", "is normal" of
    # "the heart", "heart is", "is normal" -> 2/3; trigrams 0/2; 4-grams 0/1.
    stats = bleu_stats(hyp, [ref])
    assert stats == [4, 5, 4, 2, 0, 0, 4, 3, 2, 1]
    # brevity penalty: c = 4 < r = 5 -> exp(1 - 5/4) = exp(-0.25) = 0.7788007830714049
    bp = math.exp(1 - (5 + SMALL) / (4 + TINY))
    assert bp == pytest.approx(0.7788007830714049, rel=1e-9)
    b1, b2, b3, b4 = bleu_from_stats(stats)
    assert b1 == pytest.approx(1.0 * 0.7788007830714049, rel=1e-8)
    assert b2 == pytest.approx(math.sqrt(2 / 3) * 0.7788007830714049, rel=1e-8)  # 0.6358838...
    # zero trigram matches: (1 * 2/3 * 1e-15/2)^(1/3) * bp, tiny but not 0 (the "tiny" constant)
    assert b3 == pytest.approx((2 / 3 * TINY / (2 + SMALL)) ** (1 / 3) * bp, rel=1e-6)
    assert 0 < b4 < b3 < 1e-4


def test_bleu_closest_reference_length_ties_go_to_the_shorter() -> None:
    hyp = toks("a b c d")
    # ref lengths 3 and 5 are both 1 away from 4 -> the shorter, 3: no brevity penalty.
    stats = bleu_stats(hyp, [toks("a b c"), toks("a b c d e")])
    assert stats[:2] == [4, 3]
    assert bleu_from_stats(stats)[0] == pytest.approx(4 / (4 + SMALL), rel=1e-12)
    # nearest wins over shorter: lengths 2 and 5 -> 5 (1 away) -> brevity penalty exp(1 - 5/4).
    assert bleu_stats(hyp, [toks("a b"), toks("a b c d e")])[1] == 5


def test_bleu_clips_counts_by_max_over_references() -> None:
    hyp = toks("no no no")
    # "no" appears at most twice in one reference -> 2 of 3 unigrams count.
    stats = bleu_stats(hyp, [toks("no effusion no pneumothorax"), toks("no change")])
    assert stats[2] == 2 and stats[6] == 3


def test_bleu_is_corpus_level_not_mean_of_samples() -> None:
    stats = [bleu_stats(toks("a b"), [toks("a b")]), bleu_stats(toks("c d e f"), [toks("x y z w")])]
    totals = [sum(c) for c in zip(*stats, strict=True)]
    # corpus unigram precision 2/6, lengths 6 vs 6
    assert bleu_from_stats(totals)[0] == pytest.approx(2 / 6, rel=1e-8)


# ------------------------------------------------------------------------------------------- ROUGE-L


def test_lcs_by_hand() -> None:
    assert lcs_length(toks("no acute cardiopulmonary process"), toks("no acute process seen here")) == 3
    assert lcs_length(toks("a b c"), toks("c b a")) == 1
    assert lcs_length([], toks("a")) == 0


def _lcs_upstream(string: list[str], sub: list[str]) -> int:
    """pycocoevalcap rouge.py ``my_lcs``: the full DP table, as the slow reference."""
    if len(string) < len(sub):
        sub, string = string, sub
    lengths = [[0] * (len(sub) + 1) for _ in range(len(string) + 1)]
    for j in range(1, len(sub) + 1):
        for i in range(1, len(string) + 1):
            if string[i - 1] == sub[j - 1]:
                lengths[i][j] = lengths[i - 1][j - 1] + 1
            else:
                lengths[i][j] = max(lengths[i - 1][j], lengths[i][j - 1])
    return lengths[len(string)][len(sub)]


_TOKEN_LISTS = st.lists(st.sampled_from(["a", "b", "c", "no", "."]), max_size=70)


@settings(max_examples=300, deadline=None)
@given(_TOKEN_LISTS, _TOKEN_LISTS)
def test_bit_parallel_lcs_equals_upstream_dp(a: list[str], b: list[str]) -> None:
    assert lcs_length(a, b) == _lcs_upstream(a, b) == lcs_length(b, a)


def test_rouge_l_hand_computed() -> None:
    hyp = toks("no acute cardiopulmonary process")
    ref = toks("no acute process seen here")
    # LCS "no acute process" = 3; P = 3/4, R = 3/5; F = (1 + 1.44) P R / (R + 1.44 P) = 1.098 / 1.68
    assert rouge_l(hyp, [ref]) == pytest.approx(1.098 / 1.68, rel=1e-12)  # 0.6535714...
    # two references: P and R maximised separately (P from ref 2 = 4/4, R from ref 1 = 3/5)
    f = rouge_l(hyp, [ref, toks("no acute cardiopulmonary process today")])
    p, r = 1.0, 4 / 5
    assert f == pytest.approx(2.44 * p * r / (r + 1.44 * p), rel=1e-12)


def test_rouge_l_empty_texts_follow_upstream_split() -> None:
    # "".split(" ") == [""]: empty vs empty is a perfect match, empty vs text is 0.
    assert rouge_l([], [[]]) == 1.0
    assert rouge_l([], [["a"]]) == 0.0


# ------------------------------------------------------------------------------------------- CIDEr-D


def test_cider_hand_computed() -> None:
    hyps = [["a", "b"], ["c"]]
    refs = [[["a", "b"]], [["d"]]]
    # N = 2 samples; a, b, (a b), d each in the references of 1 sample -> idf = log 2 - log 1.
    # sample 1: hyp and ref vectors equal -> cos 1 for n = 1 and 2, 0 (zero norms) for n = 3, 4;
    #   lengths (bigram counts) 1 and 1 -> no penalty; 10 * (1 + 1 + 0 + 0) / 4 = 5.
    # sample 2: "c" vs "d" share nothing -> 0.  Corpus CIDEr = 2.5.
    assert cider_d(hyps, refs) == pytest.approx([5.0, 0.0], abs=1e-12)


def test_cider_length_penalty_counts_bigrams() -> None:
    hyps = [["a", "b", "c"], ["x"]]
    refs = [[["a", "b"]], [["y"]]]
    # sample 1 hyp has 2 bigrams, ref 1 -> delta 1, penalty exp(-1 / 72). Unigrams: hyp (a, b, c) with
    # idf log 2 each (c not in references: df 0 -> log max(1, 0) = 0), ref (a, b):
    #   cos_1 = 2 (log 2)^2 / (sqrt(3) log 2 * sqrt(2) log 2) = 2 / sqrt(6);
    # bigrams: hyp (a b), (b c), ref (a b): cos_2 = 1 / sqrt(2).
    expected = 10 * (2 / math.sqrt(6) + 1 / math.sqrt(2)) / 4 * math.exp(-1 / 72)
    assert cider_d(hyps, refs)[0] == pytest.approx(expected, rel=1e-12)


def test_cider_single_sample_corpus_is_zero() -> None:
    # idf = log 1 - log 1 = 0 for every n-gram: pycocoevalcap gives 0 for a one-sample corpus.
    assert cider_d([["a", "b"]], [[["a", "b"]]]) == [0.0]


# ------------------------------------------------------------------------------------- tokenisation


def _r2gen_upstream(report: str) -> str:
    """R2Gen modules/tokenizers.py ``clean_report_mimic_cxr``, copied as a slow reference."""

    def report_cleaner(t: str) -> list[str]:
        return (
            t.replace("\n", " ")
            .replace("__", "_")
            .replace("__", "_")
            .replace("__", "_")
            .replace("__", "_")
            .replace("__", "_")
            .replace("__", "_")
            .replace("__", "_")
            .replace("  ", " ")
            .replace("  ", " ")
            .replace("  ", " ")
            .replace("  ", " ")
            .replace("  ", " ")
            .replace("  ", " ")
            .replace("..", ".")
            .replace("..", ".")
            .replace("..", ".")
            .replace("..", ".")
            .replace("..", ".")
            .replace("..", ".")
            .replace("..", ".")
            .replace("..", ".")
            .replace("1. ", "")
            .replace(". 2. ", ". ")
            .replace(". 3. ", ". ")
            .replace(". 4. ", ". ")
            .replace(". 5. ", ". ")
            .replace(" 2. ", ". ")
            .replace(" 3. ", ". ")
            .replace(" 4. ", ". ")
            .replace(" 5. ", ". ")
            .strip()
            .lower()
            .split(". ")
        )

    def sent_cleaner(t: str) -> str:
        t = t.replace('"', "").replace("/", "").replace("\\", "").replace("'", "").strip().lower()
        return re.sub(r"[.,?;*!%^&_+():-\[\]{}]", "", t)

    tokens = [sent_cleaner(sent) for sent in report_cleaner(report)]
    return " . ".join(tokens) + " ."


def test_r2gen_tokenisation_by_hand() -> None:
    text = "1. Heart size is normal.  No pleural effusion/pneumothorax, (left) 3.5 cm.\n2. Stable."
    assert tokenize_r2gen(text) == [
        *("heart", "size", "is", "normal", "."),
        *("no", "pleural", "effusionpneumothorax", "left", "35", "cm", "."),
        *("stable", "."),
    ]
    assert tokenize_r2gen("") == ["."]
    assert tokenize_r2gen("Size <5 mm @ base: OK") == ["size", "5", "mm", "base", "ok", "."]


def test_r2gen_tokenisation_matches_upstream_copy() -> None:
    rng = random.Random(7)
    alphabet = [*"abcXYZ019 .,;:-_()[]{}/\\'\"<>@#?!\n", ". ", "1. ", " 2. ", "..", "__", "  "]
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert tokenize_r2gen(text) == _r2gen_upstream(text).split(), text


# ---------------------------------------------------------------------------------------------- API


def test_lexical_scores_api_and_single_string_references() -> None:
    preds = ["The heart is normal.", "No effusion."]
    as_strings = lexical_scores(
        preds, ["The heart size is normal.", "No pleural effusion."], with_meteor=False
    )
    as_lists = lexical_scores(
        preds, [["The heart size is normal."], ["No pleural effusion."]], with_meteor=False
    )
    assert as_strings == as_lists
    keys = {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr", "METEOR", "METEOR_reason"}
    assert keys <= set(as_strings)
    assert as_strings["METEOR"] is None and as_strings["METEOR_reason"] == "not requested"
    assert "tokenization=r2gen" in as_strings["convention"] and "beta=1.2" in as_strings["convention"]
    per = as_strings["per_sample"]
    assert len(per["ROUGE-L"]) == len(per["CIDEr"]) == len(per["BLEU_stats"]) == 2
    assert as_strings["ROUGE-L"] == pytest.approx(sum(per["ROUGE-L"]) / 2)
    # corpus BLEU from the per-sample statistics (what a bootstrap resamples)
    totals = [sum(c) for c in zip(*per["BLEU_stats"], strict=True)]
    assert bleu_from_stats(totals)[3] == as_strings["BLEU-4"]


def test_identical_texts_score_one() -> None:
    texts = ["heart size is normal.", "no pleural effusion or pneumothorax.", "mild cardiomegaly."]
    out = lexical_scores(texts, texts, with_meteor=False)
    for k in range(1, 5):
        assert out[f"BLEU-{k}"] == pytest.approx(1.0, rel=1e-8)
    assert out["ROUGE-L"] == 1.0


def test_lexical_scores_user_errors() -> None:
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        lexical_scores(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="tokenization='ptb' is not known; choose one of"):
        lexical_scores(["a"], ["a"], tokenization="ptb")
    with pytest.raises(ValueError, match="sample 0 has no reference"):
        lexical_scores(["a"], [[]])
    with pytest.raises(ValueError, match="no predictions"):
        lexical_scores([], [])


def test_meteor_without_java_is_none_with_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    assert meteor(["a"], [["a"]]) is None
    out = lexical_scores(["a b"], ["a b"])
    assert out["METEOR"] is None and out["per_sample"]["METEOR"] is None
    assert out["METEOR_reason"] == METEOR_UNAVAILABLE_JAVA
    assert "Java" in METEOR_UNAVAILABLE_JAVA


# ---------------------------------------------------------------------- equivalence with pycocoevalcap

_WORDS = toks(
    "the lungs are clear there is no pleural effusion or pneumothorax heart size is normal mild "
    "cardiomegaly small left right basilar atelectasis unchanged from prior stable mediastinal "
    "contours within normal limits moderate pulmonary edema tube in standard position"
)


def _random_corpus(seed: int, size: int) -> tuple[list[str], list[list[str]]]:
    rng = random.Random(seed)

    def sentence() -> str:
        return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(0, 18)))

    preds = [sentence() for _ in range(size)]
    refs = [[sentence() for _ in range(rng.randint(1, 3))] for _ in range(size)]
    # near copies so that higher-order n-grams match too
    for i in range(0, size, 3):
        words = refs[i][0].split()
        preds[i] = " ".join(words[: max(0, len(words) - rng.randint(0, 3))])
    return preds, refs


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_equivalence_with_pycocoevalcap_bleu_rouge_cider(seed: int) -> None:
    pytest.importorskip("pycocoevalcap", reason="equivalence test needs pycocoevalcap (dev extra)")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    preds, refs = _random_corpus(seed, 40)
    gts = {i: r for i, r in enumerate(refs)}
    res = {i: [p] for i, p in enumerate(preds)}
    ours = lexical_scores(preds, refs, tokenization="none", with_meteor=False)

    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    for k in range(4):
        assert ours[f"BLEU-{k + 1}"] == pytest.approx(bleu[k], rel=1e-12, abs=1e-300)
    rouge, rouge_per = Rouge().compute_score(gts, res)
    assert ours["ROUGE-L"] == pytest.approx(float(rouge), rel=1e-12)
    assert ours["per_sample"]["ROUGE-L"] == pytest.approx(list(rouge_per), rel=1e-12, abs=1e-15)
    cider, cider_per = Cider().compute_score(gts, res)
    assert ours["CIDEr"] == pytest.approx(float(cider), rel=1e-12)
    assert ours["per_sample"]["CIDEr"] == pytest.approx(list(cider_per), rel=1e-12, abs=1e-12)


def test_equivalence_with_pycocoevalcap_on_r2gen_cleaned_reports() -> None:
    pytest.importorskip("pycocoevalcap", reason="equivalence test needs pycocoevalcap (dev extra)")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    preds = [
        "Heart size is normal. No pleural effusion.",
        "1. Mild cardiomegaly. 2. Small left effusion (stable).",
        "The lungs are clear.",
    ]
    refs = [
        ["Heart size is normal.  No pleural effusion or pneumothorax."],
        ["Mild cardiomegaly, unchanged.", "Small left pleural effusion."],
        ["Lungs are clear. No focal consolidation."],
    ]
    # R2Gen's path: clean both sides, then hand the cleaned strings to pycocoevalcap (no PTBTokenizer).
    gts = {i: [_r2gen_upstream(r) for r in rs] for i, rs in enumerate(refs)}
    res = {i: [_r2gen_upstream(p)] for i, p in enumerate(preds)}
    ours = lexical_scores(preds, refs, with_meteor=False)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    assert [ours[f"BLEU-{k}"] for k in range(1, 5)] == pytest.approx(bleu, rel=1e-12)
    assert ours["ROUGE-L"] == pytest.approx(float(Rouge().compute_score(gts, res)[0]), rel=1e-12)
    assert ours["CIDEr"] == pytest.approx(float(Cider().compute_score(gts, res)[0]), rel=1e-12)


def test_equivalence_with_pycocoevalcap_on_synthcxr_reports() -> None:
    pytest.importorskip("pycocoevalcap", reason="equivalence test needs pycocoevalcap (dev extra)")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    # Two SynthCXR draws of 300 studies: same grammar, different findings (a report-generator stand-in).
    refs = [s.study.findings or "" for s in generate_studies(SynthConfig(n=300, seed=0), render=False)]
    preds = [s.study.findings or "" for s in generate_studies(SynthConfig(n=300, seed=1), render=False)]
    gts = {i: [_r2gen_upstream(r)] for i, r in enumerate(refs)}
    res = {i: [_r2gen_upstream(p)] for i, p in enumerate(preds)}
    ours = lexical_scores(preds, refs, with_meteor=False)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    assert [ours[f"BLEU-{k}"] for k in range(1, 5)] == pytest.approx(bleu, rel=1e-12)
    rouge, rouge_per = Rouge().compute_score(gts, res)
    assert ours["ROUGE-L"] == pytest.approx(float(rouge), rel=1e-12)
    assert ours["per_sample"]["ROUGE-L"] == pytest.approx(list(rouge_per), rel=1e-12, abs=1e-15)
    cider, cider_per = Cider().compute_score(gts, res)
    assert ours["per_sample"]["CIDEr"] == pytest.approx(list(cider_per), rel=1e-12, abs=1e-12)
    assert ours["CIDEr"] == pytest.approx(float(cider), rel=1e-12)


@pytest.mark.slow
def test_equivalence_with_pycocoevalcap_meteor() -> None:
    pytest.importorskip("pycocoevalcap", reason="equivalence test needs pycocoevalcap (dev extra)")
    if shutil.which("java") is None:
        pytest.skip("METEOR needs a Java runtime (java not found on PATH)")
    from pycocoevalcap.meteor.meteor import Meteor

    preds, refs = _random_corpus(11, 15)
    gts = {i: r for i, r in enumerate(refs)}
    res = {i: [p] for i, p in enumerate(preds)}
    theirs, theirs_per = Meteor().compute_score(gts, res)
    ours = lexical_scores(preds, refs, tokenization="none")
    assert ours["METEOR"] == theirs
    assert ours["per_sample"]["METEOR"] == theirs_per
    assert ours["METEOR_reason"] is None


def test_tokenizations_registry_names() -> None:
    assert sorted(TOKENIZATIONS) == ["none", "r2gen"]
