"""Runs in the f1chexbert venv: f1chexbert 0.0.2 unmodified, offline, on the files the harness put
in its places (HF_HUB_CACHE for bert-base-uncased, XDG_CACHE_HOME/chexbert/chexbert.pth).

Request (stdin JSON): {"texts": [...], "hyps": [...], "refs": [...]}. Reply (last stdout line):
the raw class indices of each text (F1CheXbert.model's argmax per head, as get_label computes
them), get_label's "rrg" vectors, forward(hyps, refs)'s scores and the seconds spent labelling."""

import json
import sys
import time

import torch
from f1chexbert import F1CheXbert
from f1chexbert.f1chexbert import generate_attention_masks, tokenize

torch.set_num_threads(1)
request = json.load(sys.stdin)
scorer = F1CheXbert(device="cpu")


def classes(report):
    # get_label's own steps (f1chexbert.py), stopping before the "rrg" mapping, for the raw indices.
    import pandas as pd

    out = tokenize(pd.Series([report]), scorer.tokenizer)
    batch = torch.LongTensor([o for o in out])
    mask = generate_attention_masks(batch, [b.shape[0] for b in batch], scorer.device)
    with torch.no_grad():
        logits = scorer.model(batch, mask)
    return [head.argmax(dim=1).item() for head in logits]


reply = {}
texts = request.get("texts", [])
with torch.no_grad():
    started = time.perf_counter()
    reply["rrg"] = [scorer.get_label(t.strip()) for t in texts]
    reply["seconds"] = time.perf_counter() - started
    reply["classes"] = [classes(t.strip()) for t in texts] if request.get("classes", True) else []
    if request.get("hyps"):
        accuracy, pe_accuracy, cr, cr_5 = scorer(hyps=request["hyps"], refs=request["refs"])
        reply["scores"] = {
            "accuracy": float(accuracy),
            "pe_accuracy": [float(x) for x in pe_accuracy],
            "cr": cr,
            "cr_5": cr_5,
        }
print(json.dumps(reply))
