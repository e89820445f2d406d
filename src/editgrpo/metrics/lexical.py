"""Lexical metrics: BLEU-1..4, ROUGE-L, CIDEr-D and METEOR in the pycocoevalcap convention of R2Gen.

Reference code (pycocoevalcap 1.2 on PyPI, github.com/salaniz/pycocoevalcap; R2Gen is
github.com/cuhksz-nlp/R2Gen):

- ``bleu/bleu_scorer.py`` (``BleuScorer.compute_score(option="closest")`` as ``bleu/bleu.py`` calls it):
  corpus BLEU from summed clipped n-gram counts; per hypothesis the effective reference length is the
  reference length closest to the hypothesis length (ties -> the shorter); precisions
  (correct + 1e-15) / (guess + 1e-9); BLEU-n = (p1 ... pn)^(1/n) times the corpus brevity penalty
  exp(1 - R/C) when C < R (C, R summed hypothesis / effective reference lengths, the ratio computed
  as (C + 1e-15) / (R + 1e-9)).
- ``rouge/rouge.py``: per sample, LCS against each reference; P = max_r LCS/|hyp|, R = max_r
  LCS/|ref| (each maximised on its own); F = (1 + b^2) P R / (R + b^2 P) with b = 1.2, 0 when P or R
  is 0; corpus ROUGE-L = mean over samples. Tokens are ``text.split(" ")``, so an empty text is one
  empty token (reproduced here: empty hypothesis vs empty reference scores 1).
- ``cider/cider_scorer.py`` (the ``Cider`` class is CIDEr-D: clipped tf-idf, Gaussian length
  penalty): n = 1..4, tf-idf vectors with idf = log(N) - log(max(1, df)), df = number of samples whose
  references contain the n-gram (idf from the reference corpus being scored, N samples); per n,
  sum_g min(h_g, r_g) r_g / (|h| |r|) (no division when a norm is 0) times
  exp(-(l_h - l_r)^2 / (2 sigma^2)), sigma = 6; mean over n, mean over references, times 10.
  Upstream's length l counts the *bigrams* of a text (``if n == 1: length += term_freq`` with n the
  0-based n-gram index), i.e. max(0, words - 1); reproduced as is.
- ``meteor/meteor.py``: METEOR 1.5 jar (``-l en -norm``) over stdin; ``meteor`` here speaks the same
  protocol to the jar shipped in the pycocoevalcap wheel, and returns None when pycocoevalcap or a
  Java runtime is missing.

Tokenisation (``TOKENIZATIONS``):

- ``"r2gen"`` (default): R2Gen ``modules/tokenizers.py`` ``Tokenizer.clean_report_mimic_cxr``,
  applied to predictions and references alike, then whitespace-split and re-joined (R2Gen scores
  texts decoded from its token ids, ``' '.join``). That cleaner lowercases, splits sentences on
  ". ", drops ``" / \\ '`` and every character of the regex class ``[.,?;*!%^&_+():-\\[\\]{}]`` --
  whose ``:-\\[`` is a *range* from ":" to "[", so "<=>@" go too (digits stay: "3.5" -> "35") -- and
  joins sentences with " . " plus a final " .": the sentence period survives as a token, other
  punctuation is stripped. R2Gen does not run
  pycocoevalcap's Java PTBTokenizer. Difference: R2Gen maps words below its vocabulary threshold
  (count < 3 in training reports) to ``<unk>``; no vocabulary is applied here.
- ``"none"``: the texts are already tokenised (space-separated tokens); they are only split.

Shapes: S samples; each with one prediction and K_s >= 1 references.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any

BLEU_MAX_N = 4
ROUGE_BETA = 1.2
CIDER_N = 4
CIDER_SIGMA = 6.0
BLEU_SMALL = 1e-9  # bleu_scorer.py ``small``
BLEU_TINY = 1e-15  # bleu_scorer.py ``tiny``
METEOR_UNAVAILABLE_JAVA = "METEOR needs a Java runtime (java not found on PATH)"
METEOR_UNAVAILABLE_JAR = "METEOR needs pycocoevalcap installed (its meteor-1.5.jar is the reference)"

# R2Gen modules/tokenizers.py, sent_cleaner's character class, verbatim (the ":-[" range is upstream's).
_R2GEN_STRIP = re.compile(r"[.,?;*!%^&_+():-\[\]{}]")


def _r2gen_clean(report: str) -> str:
    """R2Gen ``Tokenizer.clean_report_mimic_cxr``, step for step (the repeated replaces are upstream's)."""
    text = report.replace("\n", " ")
    for _ in range(7):
        text = text.replace("__", "_")
    for _ in range(6):
        text = text.replace("  ", " ")
    for _ in range(8):
        text = text.replace("..", ".")
    text = text.replace("1. ", "").replace(". 2. ", ". ").replace(". 3. ", ". ").replace(". 4. ", ". ")
    text = text.replace(". 5. ", ". ").replace(" 2. ", ". ").replace(" 3. ", ". ").replace(" 4. ", ". ")
    text = text.replace(" 5. ", ". ")
    sentences = text.strip().lower().split(". ")

    def sent_cleaner(sentence: str) -> str:
        sentence = sentence.replace('"', "").replace("/", "").replace("\\", "").replace("'", "")
        return _R2GEN_STRIP.sub("", sentence.strip().lower())

    # Upstream filters with ``sent_cleaner(sent) != []``, always true for a string: empty sentences stay.
    return " . ".join(sent_cleaner(s) for s in sentences) + " ."


def tokenize_r2gen(text: str) -> list[str]:
    """Tokens of ``text`` after R2Gen's MIMIC-CXR cleaner (see the module docstring)."""
    return _r2gen_clean(text).split()


def tokenize_none(text: str) -> list[str]:
    """Tokens of an already tokenised text (pycocoevalcap's ``str.split()``)."""
    return text.split()


TOKENIZATIONS: dict[str, Callable[[str], list[str]]] = {"r2gen": tokenize_r2gen, "none": tokenize_none}


def convention(tokenization: str = "r2gen") -> str:
    """One line naming the convention, for every table that reports these numbers."""
    return (
        f"pycocoevalcap 1.2 (R2Gen lineage): tokenization={tokenization}, BLEU corpus-level closest ref "
        f"length, ROUGE-L beta={ROUGE_BETA}, CIDEr-D n={CIDER_N} sigma={CIDER_SIGMA:g} idf from references "
        "x10, METEOR 1.5 jar -norm"
    )


def _ngrams(tokens: Sequence[str], n_max: int) -> Counter[tuple[str, ...]]:
    """Counts of all 1..n_max-grams (bleu_scorer.py / cider_scorer.py ``precook``)."""
    counts: Counter[tuple[str, ...]] = Counter()
    for k in range(1, n_max + 1):
        counts.update(tuple(tokens[i : i + k]) for i in range(len(tokens) - k + 1))
    return counts


def bleu_stats(hyp: Sequence[str], refs: Sequence[Sequence[str]], n_max: int = BLEU_MAX_N) -> list[int]:
    """Sufficient statistics of one sample: [hyp_len, eff_ref_len, correct_1..n, guess_1..n].

    Summing these over samples (or a bootstrap resample) and calling ``bleu_from_stats`` gives
    corpus BLEU exactly as bleu_scorer.py's ``compute_score(option="closest")``."""
    return _bleu_stats(
        len(hyp), _ngrams(hyp, n_max), [len(r) for r in refs], [_ngrams(r, n_max) for r in refs], n_max
    )


def _bleu_stats(
    testlen: int,
    counts: Counter[tuple[str, ...]],
    ref_lens: Sequence[int],
    ref_counts: Sequence[Counter[tuple[str, ...]]],
    n_max: int,
) -> list[int]:
    """``bleu_stats`` on precomputed n-gram counts (bleu_scorer.py ``cook_refs`` + ``cook_test``)."""
    max_ref: dict[tuple[str, ...], int] = {}
    for rc in ref_counts:
        for gram, c in rc.items():
            if c > max_ref.get(gram, 0):
                max_ref[gram] = c
    # cook_test "closest": min over (|l - testlen|, l) -> the nearest length, the shorter on a tie.
    reflen = min((abs(length - testlen), length) for length in ref_lens)[1]
    correct = [0] * n_max
    for gram, c in counts.items():
        if gram in max_ref:
            correct[len(gram) - 1] += min(max_ref[gram], c)
    guess = [max(0, testlen - k + 1) for k in range(1, n_max + 1)]
    return [testlen, reflen, *correct, *guess]


def bleu_from_stats(stats: Sequence[float], n_max: int = BLEU_MAX_N) -> list[float]:
    """BLEU-1..n_max from summed ``bleu_stats`` (bleu_scorer.py ``compute_score`` corpus part)."""
    testlen, reflen = stats[0], stats[1]
    correct, guess = stats[2 : 2 + n_max], stats[2 + n_max : 2 + 2 * n_max]
    bleus, product = [], 1.0
    for k in range(n_max):
        product *= (float(correct[k]) + BLEU_TINY) / (float(guess[k]) + BLEU_SMALL)
        bleus.append(product ** (1.0 / (k + 1)))
    ratio = (testlen + BLEU_TINY) / (reflen + BLEU_SMALL)
    if ratio < 1:
        bleus = [b * math.exp(1 - 1 / ratio) for b in bleus]
    return bleus


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (rouge.py ``my_lcs``).

    Bit-parallel (Allison & Dix 1986; Hyyro 2004): bit j of ``v`` is 0 where row |a| of the DP table
    steps up at column j; one big-int add per token of ``a`` instead of |b| cell updates. Tested
    equal to the upstream DP table."""
    if not a or not b:
        return 0
    match: dict[str, int] = {}
    for j, token in enumerate(b):
        match[token] = match.get(token, 0) | (1 << j)
    full = (1 << len(b)) - 1
    v = full
    for token in a:
        m = match.get(token)
        if m:
            u = v & m
            v = ((v + u) | (v - u)) & full
    return len(b) - v.bit_count()


def rouge_l(hyp: Sequence[str], refs: Sequence[Sequence[str]], beta: float = ROUGE_BETA) -> float:
    """ROUGE-L F of one sample (rouge.py ``calc_score``); an empty token list counts as one empty token,
    as upstream's ``"".split(" ") == [""]``."""
    hyp = list(hyp) or [""]
    prec, rec = [], []
    for ref in refs:
        ref = list(ref) or [""]
        lcs = lcs_length(ref, hyp)
        prec.append(lcs / len(hyp))
        rec.append(lcs / len(ref))
    p, r = max(prec), max(rec)
    if p == 0 or r == 0:
        return 0.0
    return (1 + beta**2) * p * r / (r + beta**2 * p)


def cider_d(
    hyps: Sequence[Sequence[str]],
    refs: Sequence[Sequence[Sequence[str]]],
    n_max: int = CIDER_N,
    sigma: float = CIDER_SIGMA,
) -> list[float]:
    """Per-sample CIDEr-D (cider_scorer.py ``compute_cider``), idf from ``refs`` (the corpus scored);
    the corpus score is the mean."""
    if len(hyps) != len(refs):
        raise ValueError(f"cider_d: {len(hyps)} hypotheses but {len(refs)} reference lists; give one each")
    return _cider_d(
        [_ngrams(h, n_max) for h in hyps], [[_ngrams(r, n_max) for r in rs] for rs in refs], n_max, sigma
    )


def _cider_d(
    hyp_counts: Sequence[Counter[tuple[str, ...]]],
    ref_counts: Sequence[Sequence[Counter[tuple[str, ...]]]],
    n_max: int,
    sigma: float,
) -> list[float]:
    """``cider_d`` on precomputed n-gram counts."""
    df: Counter[tuple[str, ...]] = Counter()
    for rcs in ref_counts:
        df.update({gram for rc in rcs for gram in rc})
    log_n = math.log(float(len(ref_counts))) if ref_counts else 0.0
    # idf = log N - log max(1, df); an n-gram absent from every reference has df 0 -> idf log N.
    idf = {gram: log_n - math.log(float(d)) for gram, d in df.items()}

    def vec(counts: Counter[tuple[str, ...]]) -> tuple[list[dict[tuple[str, ...], float]], list[float], int]:
        v: list[dict[tuple[str, ...], float]] = [{} for _ in range(n_max)]
        sq = [0.0] * n_max
        length = 0
        for gram, tf in counts.items():
            n = len(gram) - 1
            w = float(tf) * idf.get(gram, log_n)
            v[n][gram] = w
            sq[n] += w * w
            if n == 1:  # upstream counts bigrams as the "length"; see the module docstring
                length += tf
        return v, [math.sqrt(x) for x in sq], length

    denom = 2 * sigma**2
    scores = []
    for hc, rcs in zip(hyp_counts, ref_counts, strict=True):
        vh, nh, lh = vec(hc)
        total = 0.0
        for rc in rcs:
            vr, nr, lr = vec(rc)
            penalty = math.exp(-(float(lh - lr) ** 2) / denom)
            for n in range(n_max):
                val = 0.0
                ref_n = vr[n]
                for gram, w in vh[n].items():
                    wr = ref_n.get(gram)
                    if wr is not None:
                        val += min(w, wr) * wr
                if nh[n] != 0 and nr[n] != 0:
                    val /= nh[n] * nr[n]
                total += val * penalty
        scores.append(total / n_max / len(rcs) * 10.0)
    return scores


def meteor_jar() -> Path | None:
    """pycocoevalcap's meteor-1.5.jar, located without importing the package (None when absent)."""
    spec = find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        jar = Path(location) / "meteor" / "meteor-1.5.jar"
        if jar.is_file():
            return jar
    return None


def meteor_unavailable_reason() -> str | None:
    """Why ``meteor`` would return None here, or None when it can run."""
    if shutil.which("java") is None:
        return METEOR_UNAVAILABLE_JAVA
    if meteor_jar() is None:
        return METEOR_UNAVAILABLE_JAR
    return None


def meteor(
    predictions: Sequence[str], references: Sequence[Sequence[str]]
) -> tuple[float, list[float]] | None:
    """Corpus and per-sample METEOR 1.5 from the reference jar, on texts as given (tokenise first).

    Speaks pycocoevalcap ``meteor/meteor.py``'s stdio protocol: one ``SCORE ||| refs ||| hyp`` line per
    sample, then one ``EVAL ||| stats ...`` line; the jar answers S per-sample scores and the corpus
    score. Returns None when Java or the jar is missing (``meteor_unavailable_reason``)."""
    if meteor_unavailable_reason() is not None:
        return None
    jar = meteor_jar()
    assert jar is not None
    lines = []
    for hyp, refs in zip(predictions, references, strict=True):
        hyp = hyp.replace("|||", "").replace("  ", " ")
        lines.append(" ||| ".join(("SCORE", " ||| ".join(refs), hyp)))
    cmd = ["java", "-jar", "-Xmx2G", jar.name, "-", "-", "-stdio", "-l", "en", "-norm"]
    proc = subprocess.Popen(
        cmd, cwd=jar.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        stats = []
        for line in lines:
            proc.stdin.write((line + "\n").encode())
            proc.stdin.flush()
            stats.append(proc.stdout.readline().decode().strip())
        proc.stdin.write(("EVAL ||| " + " ||| ".join(stats) + "\n").encode())
        proc.stdin.flush()
        per_sample = [float(proc.stdout.readline().strip()) for _ in lines]
        score = float(proc.stdout.readline().strip())
    finally:
        proc.stdin.close()
        proc.kill()
        proc.wait()
    return score, per_sample


def lexical_scores(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]] | Sequence[str],
    *,
    tokenization: str = "r2gen",
    with_meteor: bool = True,
) -> dict[str, Any]:
    """BLEU-1..4, ROUGE-L, CIDEr (CIDEr-D) and METEOR of ``predictions`` against ``references``.

    ``references``: one string per prediction, or a list of strings per prediction. Returns
    {"BLEU-1".."BLEU-4", "ROUGE-L", "CIDEr", "METEOR" (None when unavailable), "METEOR_reason"
    (None or why), "convention", "n", "per_sample": {"ROUGE-L": [...], "CIDEr": [...],
    "METEOR": [...] or None, "BLEU_stats": [[...]] (``bleu_stats`` rows, to resample corpus BLEU)}}.

    ``with_meteor`` starts one Java process (10,000 SynthCXR pairs: 10-18 s on a 2-core CPU, against
    2 s for the rest); pass False where only BLEU / ROUGE-L / CIDEr are needed (then "METEOR_reason" is
    "not requested"). CIDEr's idf comes from the references given, so score a whole test set at once."""
    if tokenization not in TOKENIZATIONS:
        raise ValueError(
            f"lexical_scores: tokenization={tokenization!r} is not known; "
            f"choose one of {sorted(TOKENIZATIONS)}"
        )
    if len(predictions) != len(references):
        raise ValueError(
            f"lexical_scores: {len(predictions)} predictions but {len(references)} references; give one "
            "reference (or one list of references) per prediction"
        )
    if not predictions:
        raise ValueError("lexical_scores: no predictions; give at least one (prediction, reference) pair")
    ref_lists = [[r] if isinstance(r, str) else list(r) for r in references]
    for i, refs in enumerate(ref_lists):
        if not refs:
            raise ValueError(f"lexical_scores: sample {i} has no reference; give at least one per prediction")
    tok = TOKENIZATIONS[tokenization]
    hyp_tokens = [tok(p) for p in predictions]
    ref_tokens = [[tok(r) for r in refs] for refs in ref_lists]

    # n-gram counts once per text, shared by BLEU and CIDEr (both use n = 1..4).
    hyp_counts = [_ngrams(h, BLEU_MAX_N) for h in hyp_tokens]
    ref_counts = [[_ngrams(r, BLEU_MAX_N) for r in rs] for rs in ref_tokens]
    stats = [
        _bleu_stats(len(h), hc, [len(r) for r in rs], rcs, BLEU_MAX_N)
        for h, hc, rs, rcs in zip(hyp_tokens, hyp_counts, ref_tokens, ref_counts, strict=True)
    ]
    totals = [sum(column) for column in zip(*stats, strict=True)]
    bleus = bleu_from_stats(totals)
    rouge = [rouge_l(h, rs) for h, rs in zip(hyp_tokens, ref_tokens, strict=True)]
    cider = _cider_d(hyp_counts, ref_counts, CIDER_N, CIDER_SIGMA)

    meteor_result, reason = None, meteor_unavailable_reason() if with_meteor else "not requested"
    if with_meteor and reason is None:
        meteor_result = meteor(
            [" ".join(h) for h in hyp_tokens], [[" ".join(r) for r in rs] for rs in ref_tokens]
        )
    result: dict[str, Any] = {f"BLEU-{k + 1}": bleus[k] for k in range(BLEU_MAX_N)}
    result.update(
        {
            "ROUGE-L": sum(rouge) / len(rouge),
            "CIDEr": sum(cider) / len(cider),
            "METEOR": meteor_result[0] if meteor_result else None,
            "METEOR_reason": reason,
            "convention": convention(tokenization),
            "n": len(predictions),
            "per_sample": {
                "ROUGE-L": rouge,
                "CIDEr": cider,
                "METEOR": meteor_result[1] if meteor_result else None,
                "BLEU_stats": stats,
            },
        }
    )
    return result
