"""Runs in a ratescore venv (0.5.0 or 0.6.0): RaTEScore unmodified, offline, its default hub ids
(Angelakeke/RaTE-NER-Deberta, FremyCompany/BioLORD-2023-C) read from HF_HUB_CACHE.

Request: {"texts": [...], "hyps": [...], "refs": [...], "batch_size": 1}. Reply: per text its
medspaCy sentences and run_ner entities [text, type]; compute_score(hyps, refs); seconds spent."""

import json
import sys
import time

import torch
from RaTEScore import RaTEScore
from RaTEScore.score import run_ner
from RaTEScore.utils import sentence_split

torch.set_num_threads(1)
try:  # PyRuSH logs every sentence at DEBUG through loguru; keep stderr readable
    from loguru import logger

    logger.remove()
except ImportError:
    pass
request = json.load(sys.stdin)
scorer = RaTEScore(use_gpu=False, batch_size=request.get("batch_size", 1))
reply = {"sentences": [], "entities": []}
started = time.perf_counter()
for text in request.get("texts", []):
    # One text per call: run_ner drops a report with no sentence from its output list, and with no
    # sentence at all it fails (tokenizer([])), so such a report has no entities without a call.
    if not sentence_split([text])[0]:
        reply["entities"].append([])
        continue
    pairs = run_ner(
        [text], scorer.idx2label, scorer.tokenizer, scorer.model, scorer.device, scorer.batch_size
    )
    reply["entities"].append([list(p) for p in pairs[0]] if pairs else [])
reply["ner_seconds"] = time.perf_counter() - started
reply["sentences"] = [sentence_split([t])[0] for t in request.get("texts", [])]
if request.get("hyps"):
    started = time.perf_counter()
    reply["scores"] = [float(s) for s in scorer.compute_score(request["hyps"], request["refs"])]
    reply["score_seconds"] = time.perf_counter() - started
print(json.dumps(reply))
