"""The ``chexbert`` labeler backend: the published CheXbert model (Smit et al., EMNLP 2020).

Architecture (stanfordmlgroup/CheXbert ``src/models/bert_labeler.py``): a bert-base-uncased encoder;
the final hidden state of [CLS] goes through dropout (inactive at inference) into 14 linear heads,
13 four-way heads (the observations up to Support Devices) and one two-way head (No Finding), in
the order of ``text.observations.CHEXPERT_14`` (CheXbert ``src/constants.py`` CONDITIONS).

Checkpoint format (CheXbert ``src/run_bert.py``): ``torch.save({"epoch", "model_state_dict",
"optimizer_state_dict"})`` of a model wrapped in ``nn.DataParallel``, so the tensors are named
``module.bert.*`` and ``module.linear_heads.{0..13}.{weight,bias}``. CheXbert ``src/label.py``
strips ``module.``; f1chexbert loads the same file (``chexbert.pth`` in the hub repo
``StanfordAIMI/RRG_scorers``). We accept the file with or without the wrapper dict and the prefix,
and build the encoder from the tensor shapes (``BertConfig`` of the checkpoint, not a download), so
a tiny random-weight checkpoint in the same format loads through the same code.

Class indices (CheXbert ``src/constants.py`` CLASS_MAPPING and ``label.py`` ``save_preds``):
four-way heads 0 blank, 1 positive, 2 negative, 3 uncertain; the No Finding head 0 blank,
1 positive. They are mapped to the CheXpert convention of ``annotators.chexpert``:
1 positive, 0 negative, -1 uncertain, None blank.

Input (CheXbert ``src/bert_tokenizer.py``, f1chexbert ``_clean_text``): whitespace runs collapsed to
one space and the ends stripped; bert-base-uncased WordPiece with [CLS] ... [SEP], cut at 512
tokens ([CLS] + 510 tokens + [SEP]); padding id 0 with an attention mask; no token type ids.

Tensor shapes: N texts, B texts per batch, T tokens (longest in the batch), H hidden size.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from editgrpo.annotators import weights
from editgrpo.annotators.batching import padded_batches
from editgrpo.annotators.weights import local_or_hub
from editgrpo.errors import UserError
from editgrpo.text.observations import CHEXPERT_14

if TYPE_CHECKING:
    import torch

CHECKPOINT_FILE = "chexbert.pth"
# Where f1chexbert downloads the published weights from (a hub id for ``checkpoint``).
PUBLISHED_HUB_ID = "StanfordAIMI/RRG_scorers"

# CheXbert class index -> CheXpert value. Four-way heads (CLASS_MAPPING in CheXbert constants.py);
# the No Finding head is two-way, blank / positive (CheXbert utils.py compute_train_weights).
FOUR_WAY: dict[int, int | None] = {0: None, 1: 1, 2: 0, 3: -1}
NO_FINDING_TWO_WAY: dict[int, int | None] = {0: None, 1: 1}
HEAD_CLASSES: tuple[int, ...] = (4,) * 13 + (2,)

_PREFIX = "module."  # added by torch.nn.DataParallel, which CheXbert trained under
_HEAD_KEYS = tuple(f"linear_heads.{i}.{p}" for i in range(len(CHEXPERT_14)) for p in ("weight", "bias"))
# Tensors the encoder's shapes are read from (BertConfig fields in the comments of _bert_config).
_SHAPE_KEYS = (
    "bert.embeddings.word_embeddings.weight",
    "bert.embeddings.position_embeddings.weight",
    "bert.embeddings.token_type_embeddings.weight",
    "bert.encoder.layer.0.intermediate.dense.weight",
)
# Buffers, not weights: some transformers 3.x/4.x versions saved them, current ones build them; CheXbert's
# file (transformers 2.5.1) lacks them, which is why rgrg's copy of label.py needed strict=False.
_BUFFER_SUFFIXES = ("embeddings.position_ids", "embeddings.token_type_ids")
_LAYER_RE = re.compile(r"^bert\.encoder\.layer\.(\d+)\.")
_WHITESPACE_RE = re.compile(r"\s+")
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SHOW = 8  # names listed in an error message before "... and k more"


def clean_report(text: object) -> str:
    """A report as CheXbert reads it: whitespace runs (newlines included) -> one space, ends stripped;
    a non-string (a missing report) is the empty report."""
    if not isinstance(text, str):
        return ""
    return _WHITESPACE_RE.sub(" ", text).strip()


def classes_to_vector(classes: Sequence[int]) -> dict[str, int | None]:
    """14 CheXbert class indices (argmax per head, CHEXPERT_14 order) -> a label vector."""
    if len(classes) != len(CHEXPERT_14):
        raise ValueError(f"expected {len(CHEXPERT_14)} class indices, got {len(classes)}")
    vector: dict[str, int | None] = {}
    for i, (name, index) in enumerate(zip(CHEXPERT_14, classes, strict=True)):
        mapping = NO_FINDING_TWO_WAY if i == len(CHEXPERT_14) - 1 else FOUR_WAY
        if index not in mapping:
            raise ValueError(f"class index {index} is out of range for {name!r} (valid: {sorted(mapping)})")
        vector[name] = mapping[index]
    return vector


class CheXbertLabeler:
    """CheXbert from ``checkpoint`` (a path to ``chexbert.pth``, a folder holding it, or a hub id whose
    repo holds it, e.g. ``StanfordAIMI/RRG_scorers``) with the ``tokenizer`` (name or path).

    ``num_attention_heads`` cannot be read from tensor shapes; by default it is hidden size / 64
    (BERT's head width: 12 for bert-base). ``max_length`` is capped at the model's position table.
    ``device`` defaults to cuda when available, else cpu.
    """

    name = "chexbert"

    def __init__(
        self,
        checkpoint: str,
        tokenizer: str = "bert-base-uncased",
        device: str | None = None,
        batch_size: int = 32,
        max_length: int = 512,
        num_attention_heads: int | None = None,
    ) -> None:
        # The checkpoint first, before torch is imported: a missing .pth is named within a second.
        self.checkpoint_path = resolve_checkpoint(checkpoint)
        import torch
        from transformers import AutoTokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 ([CLS] and [SEP]), got {max_length}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = batch_size
        source, local = local_or_hub(tokenizer, "CheXbert tokenizer", "vocab.txt", "--tokenizer PATH")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
        except Exception as err:  # missing or unreadable files: one message naming the source
            raise UserError(
                f"cannot load the CheXbert tokenizer {tokenizer!r} from {source!r}: {err}"
            ) from err
        state_dict = load_state_dict(self.checkpoint_path)
        self.model = build_model(
            state_dict, num_attention_heads=num_attention_heads, source=str(self.checkpoint_path)
        )
        config = self.model.bert.config
        if len(self.tokenizer) > config.vocab_size:
            raise UserError(
                f"tokenizer {tokenizer!r} has {len(self.tokenizer)} tokens but the CheXbert checkpoint "
                f"{str(self.checkpoint_path)!r} embeds {config.vocab_size}: use the tokenizer it was trained "
                "with (bert-base-uncased for the published model)"
            )
        self.model.to(self.device).eval()
        self.max_length = min(max_length, config.max_position_embeddings)

    def label(self, texts: Sequence[str]) -> list[dict[str, int | None]]:
        """One label vector per text (CHEXPERT_14 keys; 1 / 0 / -1 / None), in input order."""
        return [classes_to_vector(classes) for classes in self.predict_classes(texts)]

    def predict_classes(self, texts: Sequence[str]) -> list[list[int]]:
        """CheXbert's raw output: per text, the argmax class index of each of the 14 heads."""
        import torch

        if isinstance(texts, str):
            raise TypeError("label() takes a sequence of report texts, not one string")
        if not texts:
            return []
        encoded = self.tokenizer(
            [clean_report(t) for t in texts],
            truncation=True,
            max_length=self.max_length,
            add_special_tokens=True,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        out: list[list[int]] = [[] for _ in texts]
        with torch.inference_mode():
            for rows, ids, mask in padded_batches(encoded, self.batch_size, pad_id):
                logits = forward(self.model, ids.to(self.device), mask.to(self.device))
                # 14 x (B, classes) -> (B, 14) argmax indices
                classes = torch.stack([head.argmax(dim=-1) for head in logits], dim=1).cpu().tolist()
                for r, i in enumerate(rows):
                    out[i] = classes[r]
        return out


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """A local ``chexbert.pth``: the path itself, ``<folder>/chexbert.pth``, or the file downloaded
    (once, to the Hugging Face cache) from the hub repo ``checkpoint``."""
    path = Path(checkpoint).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        if (path / CHECKPOINT_FILE).is_file():
            return path / CHECKPOINT_FILE
        raise UserError(f"CheXbert checkpoint folder {str(path)!r} has no {CHECKPOINT_FILE}")
    name = str(checkpoint)
    if not _HUB_ID_RE.match(name) or name.endswith((".pth", ".pt", ".bin")):
        raise UserError(
            f"CheXbert checkpoint {name!r} not found: give the path to {CHECKPOINT_FILE} or a hub repo id "
            f"holding it (e.g. {PUBLISHED_HUB_ID!r})"
        )
    from transformers.utils import cached_file

    cached = weights.cached_file(name, CHECKPOINT_FILE)
    if cached is not None:
        return cached
    if weights.hub_offline() or not weights.hub_reachable():
        raise UserError(
            weights.missing_message("CheXbert checkpoint", name, CHECKPOINT_FILE, "--checkpoint PATH")
        )
    try:
        downloaded = cached_file(name, CHECKPOINT_FILE)
    except Exception as err:  # network, auth, missing repo: one message that names both readings
        raise UserError(
            f"CheXbert checkpoint {name!r} is not a local file, and downloading {CHECKPOINT_FILE} from the "
            f"hub repo {name!r} failed: {err}"
        ) from err
    if downloaded is None:
        raise UserError(f"hub repo {name!r} has no {CHECKPOINT_FILE}")
    return Path(downloaded)


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The model tensors of a CheXbert checkpoint, names without the DataParallel ``module.`` prefix.

    Loaded with ``weights_only=True``: CheXbert's file holds only tensors, numbers and dicts."""
    import pickle

    import torch

    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise UserError(
            f"cannot read CheXbert checkpoint {str(path)!r} as a weights-only torch file ({err}); "
            "expected the chexbert.pth written by CheXbert's run_bert.py (torch.save of a dict)"
        ) from err
    state = raw.get("model_state_dict", raw) if isinstance(raw, Mapping) else None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(
            f"CheXbert checkpoint {str(path)!r} holds no state dict: expected a dict of tensors, "
            "optionally under the key 'model_state_dict'"
        )
    return {k.removeprefix(_PREFIX): v for k, v in state.items()}


def _bert_config(state: Mapping[str, torch.Tensor], num_attention_heads: int | None) -> Any:
    """The BertConfig whose BertModel has the shapes of ``state`` (bert-base-uncased for CheXbert)."""
    from transformers import BertConfig

    vocab_size, hidden = state["bert.embeddings.word_embeddings.weight"].shape  # (V, H)
    max_positions = state["bert.embeddings.position_embeddings.weight"].shape[0]  # (P, H)
    type_vocab = state["bert.embeddings.token_type_embeddings.weight"].shape[0]  # (2, H)
    intermediate = state["bert.encoder.layer.0.intermediate.dense.weight"].shape[0]  # (I, H)
    layers = 1 + max(int(m.group(1)) for k in state if (m := _LAYER_RE.match(k)))
    if num_attention_heads is None:
        if hidden % 64:
            raise UserError(
                f"CheXbert checkpoint has hidden size {hidden}, not a multiple of BERT's head width 64: "
                "pass num_attention_heads"
            )
        num_attention_heads = hidden // 64
    if hidden % num_attention_heads:
        raise UserError(f"num_attention_heads={num_attention_heads} does not divide the hidden size {hidden}")
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_positions,
        type_vocab_size=type_vocab,
    )


def _name_list(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    return shown + (f" ... and {len(names) - _SHOW} more" if len(names) > _SHOW else "")


def build_model(
    state: Mapping[str, torch.Tensor], num_attention_heads: int | None = None, source: str = "<state dict>"
) -> torch.nn.Module:
    """CheXbert's ``bert_labeler`` with the weights of ``state``: a module with ``bert`` (BertModel)
    and ``linear_heads`` (14 nn.Linear), the names of the published checkpoint."""
    from torch import nn
    from transformers import BertModel

    missing = [k for k in (*_SHAPE_KEYS, *_HEAD_KEYS) if k not in state]
    if missing:
        raise UserError(
            f"CheXbert checkpoint {source!r} is missing {len(missing)} tensors: {_name_list(missing)}; expected "
            "CheXbert's bert_labeler state dict (bert.* and linear_heads.0-13), optionally under "
            "'model_state_dict' with DataParallel's 'module.' prefix"
        )
    config = _bert_config(state, num_attention_heads)
    hidden = config.hidden_size
    for i, (name, classes) in enumerate(zip(CHEXPERT_14, HEAD_CLASSES, strict=True)):
        shape = tuple(state[f"linear_heads.{i}.weight"].shape)
        if shape != (classes, hidden):
            raise UserError(
                f"CheXbert checkpoint {source!r}: head {i} ({name}) has weight shape {shape}, expected "
                f"{(classes, hidden)}"
            )

    model = nn.Module()  # composition, no subclass: the parameter names are what matter
    model.bert = BertModel(config, add_pooling_layer="bert.pooler.dense.weight" in state)
    model.linear_heads = nn.ModuleList(nn.Linear(hidden, c, bias=True) for c in HEAD_CLASSES)
    weights = {k: v for k, v in state.items() if not k.endswith(_BUFFER_SUFFIXES)}
    expected = model.state_dict().keys()
    missing = sorted(set(expected) - weights.keys())
    unexpected = sorted(weights.keys() - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"is missing {len(missing)} tensors: {_name_list(missing)}")
        if unexpected:
            parts.append(f"has {len(unexpected)} tensors CheXbert does not have: {_name_list(unexpected)}")
        raise UserError(f"CheXbert checkpoint {source!r} " + "; ".join(parts))
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:  # shape mismatches inside the encoder
        raise UserError(f"CheXbert checkpoint {source!r} does not fit a BERT encoder: {err}") from err
    return model.eval()


def forward(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> list[torch.Tensor]:
    """bert_labeler.forward: (B, T) ids and mask -> 14 logit tensors, (B, 4) x 13 then (B, 2).
    Dropout on [CLS] is the identity in eval mode and is left out."""
    hidden = model.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
    cls = hidden[:, 0, :]  # (B, H)
    return [head(cls) for head in model.linear_heads]
