"""The ``chexbert`` labeler on a tiny random-weight CheXbert saved in the published checkpoint format.

The test builds CheXbert's ``bert_labeler`` in miniature (a BertModel named ``bert``, dropout, 14
``linear_heads``: 13 four-way + No Finding two-way), saves it as CheXbert's ``run_bert.py`` does
(``torch.save({"epoch", "model_state_dict", "optimizer_state_dict"})`` of an ``nn.DataParallel``
model, hence ``module.`` names), and writes a tiny WordPiece tokenizer. Expected labels come from a
forward pass of that module here, mapped by the published class meaning (CheXbert constants.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertModel, BertTokenizer

from editgrpo.annotators.chexbert_model import CheXbertLabeler
from editgrpo.annotators.chexpert import build_labeler
from editgrpo.errors import UserError
from editgrpo.text.observations import CHEXPERT_14

# CheXbert class index -> CheXpert value (CheXbert src/constants.py CLASS_MAPPING, label.py save_preds).
PUBLISHED_FOUR_WAY = {0: None, 1: 1, 2: 0, 3: -1}
PUBLISHED_NO_FINDING = {0: None, 1: 1}

VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "no", "heart", "size", "is", "normal",
    "enlarged", "mild", "pleural", "effusion", "##s", "right", "left", "lung", "lungs", "clear",
    "opacity", "tube", "in", "place", "possible", "pneumonia", "edema", "the", "and", "with", "there",
    "cardiomegaly", "stable", "small", "large", "base", "basilar", "atelectasis", "pneumothorax",
]  # fmt: skip
HIDDEN, HEADS, MAX_POSITIONS = 32, 2, 64

# Heads whose class is fixed by a large bias (weights zeroed): head index -> CheXbert class index.
FIXED = {0: 0, 1: 3, 4: 2, 9: 1, 13: 1}

TEXTS = [
    "Heart size is normal. Lungs are clear.",
    "Mild cardiomegaly.",
    "Small right pleural effusion with basilar atelectasis , possible pneumonia , and mild edema.",
    "No pneumothorax.",
    "",
    "Tube in place. Large left pleural effusion, stable.",
]


class MiniBertLabeler(nn.Module):
    """CheXbert's bert_labeler (src/models/bert_labeler.py) with a tiny BERT: same module names."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.bert = BertModel(config)
        self.dropout = nn.Dropout(0.1)
        self.linear_heads = nn.ModuleList([nn.Linear(config.hidden_size, 4) for _ in range(13)])
        self.linear_heads.append(nn.Linear(config.hidden_size, 2))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        cls = self.dropout(self.bert(input_ids, attention_mask=attention_mask)[0][:, 0, :])
        return [head(cls) for head in self.linear_heads]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("chexbert")
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(VOCAB)})
    tokenizer.save_pretrained(out / "tokenizer")

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        intermediate_size=37,
        max_position_embeddings=MAX_POSITIONS,
        initializer_range=0.5,  # large random weights, so [CLS] (and the labels) differ between texts
    )
    model = MiniBertLabeler(config)
    with torch.no_grad():
        for i, head in enumerate(model.linear_heads):
            if i in FIXED:
                head.weight.zero_()
                head.bias.fill_(-50.0)
                head.bias[FIXED[i]] = 50.0
            else:
                head.weight.normal_(0.0, 1.0)
    model.eval()

    parallel = nn.DataParallel(model)  # CheXbert trained and saved under DataParallel: "module." names
    checkpoint = out / "chexbert.pth"
    torch.save(
        {
            "epoch": 1,
            "model_state_dict": parallel.state_dict(),
            "optimizer_state_dict": torch.optim.Adam(parallel.parameters()).state_dict(),
        },
        checkpoint,
    )
    return {"checkpoint": checkpoint, "tokenizer": str(out / "tokenizer"), "model": model, "dir": out}


def load(tiny: dict, checkpoint: Path | None = None, **options: object) -> CheXbertLabeler:
    options = {"tokenizer": tiny["tokenizer"], "num_attention_heads": HEADS, "device": "cpu", **options}
    return CheXbertLabeler(checkpoint=str(checkpoint or tiny["checkpoint"]), **options)


def reference_labels(tiny: dict, text: str) -> dict[str, int | None]:
    """One text through the saved module, unpadded, mapped by the published class meaning."""
    tokenizer = BertTokenizer.from_pretrained(tiny["tokenizer"])
    ids = tokenizer(" ".join(text.split()), truncation=True, max_length=MAX_POSITIONS, return_tensors="pt")
    with torch.no_grad():
        logits = tiny["model"](ids["input_ids"], torch.ones_like(ids["input_ids"]))
    classes = [int(head.argmax(dim=-1)) for head in logits]
    return {
        name: (PUBLISHED_NO_FINDING if name == "No Finding" else PUBLISHED_FOUR_WAY)[c]
        for name, c in zip(CHEXPERT_14, classes, strict=True)
    }


def save_state(path: Path, state: dict) -> Path:
    torch.save(state, path)
    return path


def plain_state(tiny: dict) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in tiny["model"].state_dict().items()}


def test_labels_have_the_14_observations_in_order_and_chexpert_values(tiny: dict) -> None:
    labels = load(tiny).label(TEXTS)
    assert len(labels) == len(TEXTS)
    for vector in labels:
        assert tuple(vector) == CHEXPERT_14
        assert all(v in (1, 0, -1, None) for v in vector.values())
        assert vector["No Finding"] in (1, None)


def test_labels_equal_a_direct_forward_pass_of_the_saved_module(tiny: dict) -> None:
    labels = load(tiny).label(TEXTS)
    assert labels == [reference_labels(tiny, t) for t in TEXTS]


def test_class_indices_map_to_the_chexpert_convention(tiny: dict) -> None:
    """Fixed heads: class 0 -> blank, 3 -> uncertain, 2 -> negative, 1 -> positive, No Finding 1 -> 1."""
    for vector in load(tiny).label(TEXTS):
        assert vector["Enlarged Cardiomediastinum"] is None
        assert vector["Cardiomegaly"] == -1
        assert vector["Edema"] == 0
        assert vector["Pleural Effusion"] == 1
        assert vector["No Finding"] == 1


def test_batches_sorted_by_length_give_each_text_its_own_labels(tiny: dict) -> None:
    labeler = load(tiny, batch_size=2)
    batched = labeler.label(TEXTS)
    alone = [labeler.label([t])[0] for t in TEXTS]
    assert batched == alone
    assert len({tuple(v.values()) for v in batched}) > 1, "random heads should tell the texts apart"
    assert labeler.label(list(reversed(TEXTS))) == list(reversed(batched))


def test_long_text_is_cut_at_the_position_table(tiny: dict) -> None:
    labeler = load(tiny)  # max_length 512 asked, 64 positions in the model
    assert labeler.max_length == MAX_POSITIONS
    long_text = "small right pleural effusion , " * 200
    assert labeler.label([long_text, "no edema"]) == [
        reference_labels(tiny, long_text),
        reference_labels(tiny, "no edema"),
    ]
    assert (
        load(tiny, max_length=8).label([long_text])[0]
        == load(tiny, max_length=8).label(["small right pleural effusion , small right"])[0]
    )


def test_whitespace_is_cleaned_and_empty_input_gives_no_labels(tiny: dict) -> None:
    labeler = load(tiny)
    assert labeler.label(["  Mild\n\ncardiomegaly.\t"]) == labeler.label(["Mild cardiomegaly."])
    assert labeler.label([]) == []


def test_checkpoint_without_wrapper_or_prefix_loads(tiny: dict) -> None:
    state = plain_state(tiny)
    state["linear_heads.13.bias"] = torch.tensor([50.0, -50.0])  # No Finding class 0 -> blank
    for key in [k for k in state if k.startswith("bert.pooler.")]:
        del state[key]  # CheXbert never uses the pooler; a file without it loads too
    path = save_state(tiny["dir"] / "plain.pth", state)
    labels = load(tiny, checkpoint=path).label(TEXTS)
    assert all(v["No Finding"] is None for v in labels)
    expected = [{**reference_labels(tiny, t), "No Finding": None} for t in TEXTS]
    assert labels == expected


def test_folder_holding_chexbert_pth_and_the_registry(tiny: dict) -> None:
    labeler = build_labeler(
        "chexbert", checkpoint=str(tiny["dir"]), tokenizer=tiny["tokenizer"], num_attention_heads=HEADS
    )
    assert labeler.name == "chexbert"
    assert labeler.label(TEXTS[:2]) == [reference_labels(tiny, t) for t in TEXTS[:2]]


def test_missing_tensors_are_named(tiny: dict) -> None:
    state = plain_state(tiny)
    del state["linear_heads.13.weight"], state["bert.encoder.layer.1.output.dense.bias"]
    path = save_state(tiny["dir"] / "missing-head.pth", {"model_state_dict": state})
    with pytest.raises(UserError, match=r"missing 1 tensors: linear_heads\.13\.weight"):
        load(tiny, checkpoint=path)
    state = plain_state(tiny)
    del state["bert.encoder.layer.1.output.dense.bias"]
    path = save_state(tiny["dir"] / "missing-encoder.pth", {"model_state_dict": state})
    with pytest.raises(UserError, match=r"missing 1 tensors: bert\.encoder\.layer\.1\.output\.dense\.bias"):
        load(tiny, checkpoint=path)


def test_foreign_tensors_and_wrong_head_shapes_are_refused(tiny: dict) -> None:
    state = {**plain_state(tiny), "classifier.weight": torch.zeros(2, HIDDEN)}
    with pytest.raises(UserError, match=r"tensors CheXbert does not have: classifier\.weight"):
        load(tiny, checkpoint=save_state(tiny["dir"] / "extra.pth", state))
    state = {**plain_state(tiny), "linear_heads.13.weight": torch.zeros(4, HIDDEN)}
    with pytest.raises(
        UserError, match=r"head 13 \(No Finding\) has weight shape \(4, 32\), expected \(2, 32\)"
    ):
        load(tiny, checkpoint=save_state(tiny["dir"] / "four-way-no-finding.pth", state))


def test_unreadable_or_absent_checkpoints_fail_with_the_fix(tiny: dict, tmp_path: Path) -> None:
    garbage = tmp_path / "chexbert.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="cannot read CheXbert checkpoint"):
        load(tiny, checkpoint=garbage)
    with pytest.raises(UserError, match="holds no state dict"):
        load(tiny, checkpoint=save_state(tmp_path / "epoch-only.pth", {"epoch": 3}))
    with pytest.raises(UserError, match=r"not found: give the path to chexbert\.pth or a hub repo id"):
        load(tiny, checkpoint=tmp_path / "absent" / "chexbert.pth")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"folder .* has no chexbert\.pth"):
        load(tiny, checkpoint=tmp_path / "empty")


def test_head_count_is_needed_when_hidden_size_is_not_a_multiple_of_64(tiny: dict) -> None:
    with pytest.raises(UserError, match="pass num_attention_heads"):
        load(tiny, num_attention_heads=None)


def test_a_tokenizer_larger_than_the_embedding_is_refused(tiny: dict, tmp_path: Path) -> None:
    bigger = BertTokenizer(vocab={token: i for i, token in enumerate([*VOCAB, "pericardial", "aorta"])})
    bigger.save_pretrained(tmp_path / "bigger")
    with pytest.raises(UserError, match=r"has 43 tokens but the CheXbert checkpoint .* embeds 41"):
        load(tiny, tokenizer=str(tmp_path / "bigger"))


def test_one_string_is_not_a_batch(tiny: dict) -> None:
    with pytest.raises(TypeError, match="sequence of report texts"):
        load(tiny).label("Mild cardiomegaly.")


@pytest.mark.gpu
def test_cuda_labels_equal_cpu_labels(tiny: dict) -> None:
    assert load(tiny, device="cuda").label(TEXTS) == load(tiny, device="cpu").label(TEXTS)
