"""Shared parts of the parity harness: texts, Hugging Face cache layout, tiny and full-size
random-weight models in the published file layouts, and the subprocess that runs a reference.

Used by ``tests/parity/`` (tiny models) and ``benchmarks/backend_parity_speed.py`` (full-size).
The models are written with plain transformers / torch classes, never with our loaders, so a
misreading of a format on our side cannot hide in the fixture.
"""

from __future__ import annotations

import json
import os
import re
import string
import subprocess
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKERS = Path(__file__).resolve().parent / "workers"
# The team's shared data folder (read at test time, never copied into the repo).
IU_ARCHIVE = ROOT.parent / "shared" / "data" / "iu_xray" / "NLMCXR_reports.tgz"
SNAPSHOT = "0" * 40  # the revision folder name of every fixture snapshot

# Hand-written edge cases: empty and whitespace-only, newlines and tabs, list numbers,
# abbreviations, de-identification tokens, punctuation runs, non-ASCII, numbers and units.
EDGE_CASES = [
    "No acute cardiopulmonary abnormality.",
    "FINDINGS:\nSmall right pleural effusion.  No pneumothorax.\n\nIMPRESSION:\tMild cardiomegaly.",
    "1. Stable left lower lobe opacity, possibly pneumonia. 2. No effusion.",
    "Endotracheal tube terminates 2.5 cm above the carina; NG tube in place (side port at GE junction).",
    "XXXX XXXX. Heart size is normal... lungs are clear!!",
    "Possible tiny left apical pneumothorax vs. skin fold; recommend repeat film.",
    "Opacité basale droite, café-au-lait ±5 mm × 3 mm.",
    "No",
    "ok.",
    "cardiomegaly",
    "The heart is enlarged",
]


def synth_reports(n: int, seed: int) -> list[str]:
    """``n`` SynthCXR reports (findings + impression) of generator seed ``seed``."""
    from editgrpo.data.synth import SynthConfig, generate_studies

    out = []
    for generated in generate_studies(SynthConfig(n=n, seed=seed), render=False):
        study = generated.study
        out.append(" ".join(part for part in (study.findings, study.impression) if part))
    return out


def iu_reports(n: int) -> list[str] | None:
    """The first ``n`` IU X-Ray reports with text (findings + impression), or None when the shared
    archive is absent."""
    if not IU_ARCHIVE.is_file():
        return None
    from editgrpo.data.adapters.iu_xray import parse_openi

    out = []
    for report in parse_openi(IU_ARCHIVE):
        text = " ".join(p for p in (report.sections.findings, report.sections.impression) if p)
        if text:
            out.append(text)
        if len(out) == n:
            break
    return out


def corpus_words(texts: Sequence[str], lower: bool) -> list[str]:
    """Word and punctuation types of ``texts``, most frequent first (for the fixture vocabularies)."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(re.findall(r"\w+|[^\w\s]", text.lower() if lower else text))
    return [w for w, _ in counts.most_common()]


def put_in_hub_cache(cache: Path, repo_id: str, folder: Path) -> Path:
    """Copy the files of ``folder`` into ``cache`` in the HF_HUB_CACHE layout under ``repo_id``
    (``models--org--name/snapshots/<rev>/...`` and ``refs/main``), as ``huggingface_hub`` reads it
    offline; returns the snapshot folder."""
    import shutil

    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / SNAPSHOT
    snapshot.mkdir(parents=True, exist_ok=True)
    for item in folder.iterdir():
        if item.is_file():
            shutil.copy2(item, snapshot / item.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(SNAPSHOT)
    return snapshot


def offline_env(hub_cache: Path, xdg_cache: Path | None = None) -> dict[str, str]:
    """The environment of a reference run: offline hub, our caches, no GPU, one thread."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_CACHE=str(hub_cache),
        HF_HOME=str(hub_cache.parent / "hf-home"),
        CUDA_VISIBLE_DEVICES="",
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=str(ROOT / "src"),
    )
    env.setdefault("OMP_NUM_THREADS", "1")
    if xdg_cache is not None:
        env["XDG_CACHE_HOME"] = str(xdg_cache)  # appdirs.user_cache_dir (f1chexbert, radgraph)
    return env


def run_reference(
    python: Path, worker: str, request: dict, env: dict[str, str], timeout: float = 900
) -> dict:
    """Run ``workers/<worker>`` with ``python`` (a reference venv), JSON request on stdin, JSON reply
    as the last stdout line."""
    done = subprocess.run(
        [str(python), str(WORKERS / worker)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"reference worker {worker} failed ({done.returncode}):\n{done.stderr[-6000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# CheXbert (f1chexbert 0.0.2): ~/.cache/chexbert/chexbert.pth + the hub repo bert-base-uncased
# ---------------------------------------------------------------------------------------------

BERT_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def wordpiece_vocab(texts: Sequence[str], size: int | None = None, limit: int = 2000) -> list[str]:
    """A WordPiece vocabulary (uncased) from the words of ``texts``: specials, characters and their
    ``##`` forms (so every word splits into pieces), a few suffix pieces, then whole words; padded
    with ``[unused<i>]`` to ``size`` (bert-base-uncased has 30522)."""
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = BERT_SPECIAL + chars + ["##" + c for c in string.ascii_lowercase + string.digits]
    vocab += ["##s", "##es", "##ed", "##ing", "##al", "##ly", "##ation", "##ic"]
    words = [w for w in corpus_words(texts, lower=True) if w not in vocab and w.isascii()]
    # Hold back every fifth word, so WordPiece splits some words into several pieces.
    vocab += [w for k, w in enumerate(words[:limit]) if k % 5 != 4]
    if size is not None:
        vocab += [f"[unused{i}]" for i in range(size - len(vocab))]
    return vocab


def write_bert_tokenizer(folder: Path, vocab: Sequence[str]) -> None:
    """vocab.txt + tokenizer_config.json of an uncased BERT WordPiece tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    config = {"do_lower_case": True, "tokenizer_class": "BertTokenizer", "model_max_length": 512}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))


def chexbert_files(out: Path, texts: Sequence[str], size: str = "tiny", seed: int = 0) -> dict[str, Path]:
    """A random-weight CheXbert in f1chexbert's places: ``<out>/hub`` (bert-base-uncased: config.json,
    vocab.txt) and ``<out>/xdg/chexbert/chexbert.pth`` (run_bert.py's checkpoint: ``module.`` names
    under ``model_state_dict``)."""
    import torch
    from torch import nn
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    if size == "tiny":
        vocab = wordpiece_vocab(texts)
        config = BertConfig(
            vocab_size=len(vocab),
            hidden_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=96,
            max_position_embeddings=512,
            initializer_range=0.3,  # large random weights: labels differ from report to report
        )
    else:  # bert-base-uncased's shapes (its config.json)
        vocab = wordpiece_vocab(texts, size=30522)
        config = BertConfig(vocab_size=30522)
    folder = out / "bert-base-uncased"
    write_bert_tokenizer(folder, vocab)
    config.save_pretrained(folder)
    hub = out / "hub"
    snapshot = put_in_hub_cache(hub, "bert-base-uncased", folder)

    labeler = nn.Module()  # CheXbert src/models/bert_labeler.py: bert, dropout, linear_heads
    labeler.bert = BertModel(config)
    labeler.linear_heads = nn.ModuleList(
        [nn.Linear(config.hidden_size, 4) for _ in range(13)] + [nn.Linear(config.hidden_size, 2)]
    )
    with torch.no_grad():
        for head in labeler.linear_heads:
            head.weight.normal_(0.0, 0.5)
    state = {"module." + k: v for k, v in labeler.state_dict().items()}  # nn.DataParallel names
    checkpoint = out / "xdg" / "chexbert" / "chexbert.pth"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 1, "model_state_dict": state, "optimizer_state_dict": {}}, checkpoint)
    return {"hub": hub, "xdg": out / "xdg", "checkpoint": checkpoint, "tokenizer": snapshot}


# ---------------------------------------------------------------------------------------------
# RaTEScore: hub repos Angelakeke/RaTE-NER-Deberta and FremyCompany/BioLORD-2023-C
# ---------------------------------------------------------------------------------------------

RATE_TYPES = ("ABNORMALITY", "NON-ABNORMALITY", "DISEASE", "NON-DISEASE", "ANATOMY")
# The published config's label set (IOB over the five types); O last so nothing relies on O = 0.
RATE_IOB_LABELS = [f"{p}-{t}" for t in RATE_TYPES for p in ("B", "I")] + ["O"]


def unigram_vocab(texts: Sequence[str], size: int | None = None) -> list[tuple[str, float]]:
    """A SentencePiece Unigram vocabulary (DeBERTa-v3's kind): specials, ``▁word`` pieces of the
    corpus, bare characters as fallback; padded with ``▁<i>``-style fillers to ``size``."""
    special = [("[PAD]", 0.0), ("[CLS]", 0.0), ("[SEP]", 0.0), ("[UNK]", 0.0), ("[MASK]", 0.0)]
    words = corpus_words(texts, lower=False)
    # Every tenth word held back, so some words split into characters (and bare "▁" pieces).
    pieces = [("▁" + w, -2.0 - 0.001 * k) for k, w in enumerate(words[:3000]) if k % 10 != 9]
    chars = [(c, -8.0) for c in ["▁", *string.ascii_letters, *string.digits, *string.punctuation]]
    seen = {p for p, _ in special}
    vocab = []
    for piece, score in special + pieces + chars:
        if piece not in seen:
            seen.add(piece)
            vocab.append((piece, score))
    if size is not None:
        vocab += [(f"▁filler{i}", -20.0) for i in range(size - len(vocab))]
    return vocab


def rate_ner_folder(out: Path, texts: Sequence[str], size: str = "tiny", seed: int = 0) -> Path:
    """A random-weight RaTE-NER (``DebertaV2ForTokenClassification``, IOB labels in ``id2label``)
    with a DeBERTa-v2 fast tokenizer, saved with ``save_pretrained``."""
    import torch
    from transformers import DebertaV2Config, DebertaV2ForTokenClassification, DebertaV2Tokenizer

    torch.manual_seed(seed)
    tokenizer_vocab = unigram_vocab(texts, size=None if size == "tiny" else 128100)
    tokenizer = DebertaV2Tokenizer(vocab=tokenizer_vocab)
    labels = {
        "id2label": dict(enumerate(RATE_IOB_LABELS)),
        "label2id": {n: i for i, n in enumerate(RATE_IOB_LABELS)},
    }
    # DeBERTa-v3's attention layout (microsoft/deberta-v3-base config.json), shared by both sizes.
    v3 = {
        "max_position_embeddings": 512,
        "relative_attention": True,
        "position_buckets": 256,
        "max_relative_positions": -1,
        "norm_rel_ebd": "layer_norm",
        "share_att_key": True,
        "pos_att_type": ["p2c", "c2p"],
        "position_biased_input": False,
        "type_vocab_size": 0,
        "pad_token_id": 0,
        **labels,
    }
    if size == "tiny":
        config = DebertaV2Config(
            vocab_size=len(tokenizer),  # the tokenizer adds the specials it misses
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=96,
            initializer_range=0.3,
            **v3,
        )
    else:  # microsoft/deberta-v3-base's sizes (RaTE-NER-Deberta's base)
        config = DebertaV2Config(
            vocab_size=max(128100, len(tokenizer)),
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            **v3,
        )
    model = DebertaV2ForTokenClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.normal_(0.0, 1.0)
        model.classifier.bias.zero_()
        model.classifier.bias[RATE_IOB_LABELS.index("O")] = 1.0  # entities a minority, as in real output
    folder = out / "rate-ner"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def biolord_folder(out: Path, texts: Sequence[str], size: str = "tiny", seed: int = 1) -> Path:
    """A random-weight BioLORD-2023-C: an MPNet encoder (its config.json's ``MPNetModel``) with an
    uncased WordPiece tokenizer, saved with ``save_pretrained``."""
    import torch
    from transformers import MPNetConfig, MPNetModel, MPNetTokenizer

    torch.manual_seed(seed)
    # all-mpnet-base-v2's vocab.txt: <s> <pad> </s> <unk> first, BERT's [UNK] (the fast tokenizer's
    # unknown piece) inside, <mask> last.
    specials = ["<s>", "<pad>", "</s>", "<unk>", "[UNK]", "<mask>"]
    if size == "tiny":
        vocab = specials + wordpiece_vocab(texts)[len(BERT_SPECIAL) :]
        config = MPNetConfig(
            vocab_size=len(vocab),
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=96,
            max_position_embeddings=514,
            initializer_range=0.3,
            pad_token_id=1,
        )
    else:  # FremyCompany/BioLORD-2023-C's config.json (all-mpnet-base-v2 shapes)
        vocab = (
            specials
            + wordpiece_vocab(texts, size=30527 - len(specials) + len(BERT_SPECIAL))[len(BERT_SPECIAL) :]
        )
        config = MPNetConfig(vocab_size=30527, max_position_embeddings=514, pad_token_id=1)
    folder = out / "biolord"
    folder.mkdir(parents=True, exist_ok=True)
    MPNetTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True).save_pretrained(folder)
    MPNetModel(config).eval().save_pretrained(folder)
    return folder


def ratescore_files(out: Path, texts: Sequence[str], size: str = "tiny") -> dict[str, Path]:
    hub = out / "hub"
    ner = put_in_hub_cache(hub, "Angelakeke/RaTE-NER-Deberta", rate_ner_folder(out, texts, size))
    bio = put_in_hub_cache(hub, "FremyCompany/BioLORD-2023-C", biolord_folder(out, texts, size))
    return {"hub": hub, "ner": ner, "biolord": bio}


def python_of(name: str) -> Path:
    """The python of reference venv ``name`` (built on first use)."""
    from parity.refenvs import ensure

    return ensure(name)
