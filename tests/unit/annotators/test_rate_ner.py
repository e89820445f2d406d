"""The ``rate-ner`` backend on tiny random-weight RaTE-NER models saved in the published format.

The published model (``Angelakeke/RaTE-NER-Deberta``) is a ``DebertaV2ForTokenClassification`` with
IOB labels over the five RaTE types in ``config.id2label`` and a DeBERTa-v2 (SentencePiece Unigram)
fast tokenizer. The tests build both in miniature: the tokenizer from a small Unigram vocabulary
(``DebertaV2Tokenizer(vocab=...)``, no sentencepiece model needed), the model with random weights,
saved with ``save_pretrained`` and loaded back through ``RateNER(path)``. Expected entities come from
a forward pass of the saved module here, one sentence at a time, decoded by an independent copy of
the grouping rule (ratescore ``utils.py`` ``post_process``).
"""

from __future__ import annotations

import string
from pathlib import Path

import pytest
import torch
from transformers import DebertaV2Config, DebertaV2ForTokenClassification, DebertaV2Tokenizer

from editgrpo.annotators.entity_types import RATE_TYPES, RateEntity
from editgrpo.annotators.rate_ner import (
    RateNER,
    group_tags,
    group_tags_ratescore,
    parse_id2label,
    parse_label,
)
from editgrpo.errors import UserError
from editgrpo.text.sentences import split_sentences

# The label order of the published config (O last), so nothing can rely on O being class 0.
IOB_LABELS = [f"{p}-{t}" for t in RATE_TYPES for p in ("B", "I")] + ["O"]
IO_LABELS = ["O", *RATE_TYPES]

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [
    "▁Small", "▁small", "▁right", "▁left", "▁pleural", "▁effusion", "▁No", "▁no", "▁pneumo", "thorax",
    "▁Heart", "▁size", "▁is", "▁normal", "▁Mild", "▁cardio", "megaly", "▁with", "▁bi", "basilar",
    "▁atelectasis", "▁Lungs", "▁are", "▁otherwise", "▁clear", "▁Stable", "▁lower", "▁lobe", "▁opacity",
    "▁possibly", "▁pneumonia", "▁Tube", "▁in", "▁place", "▁FINDINGS",
]  # fmt: skip
CHARS = ["▁", *string.ascii_letters, *string.digits, *".,;:()-/%"]
VOCAB = [(t, 0.0) for t in SPECIAL] + [(w, -2.0) for w in WORDS] + [(c, -6.0) for c in CHARS]

TEXTS = [
    "FINDINGS:\nSmall right pleural effusion.  No pneumothorax.\nHeart size is normal.",
    "Mild cardiomegaly with bibasilar atelectasis. Lungs are otherwise clear",
    "",
    "No.",  # 3 characters: kept
    "Ok",  # under 3 characters: skipped, as ratescore's sentence_split does
    "Stable left lower lobe opacity, possibly pneumonia; no effusion. Tube in place.",
]


def build_model(
    labels: list[str], winner: str | None = None, seed: int = 0
) -> DebertaV2ForTokenClassification:
    """A tiny DeBERTa-v3-style token classifier (relative attention, no absolute positions, no token
    types). ``winner``: classifier weights zeroed and a bias that makes that label win on every token."""
    torch.manual_seed(seed)
    config = DebertaV2Config(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        relative_attention=True,
        position_buckets=16,
        max_relative_positions=-1,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        type_vocab_size=0,
        pad_token_id=0,
        initializer_range=0.5,  # large random weights, so the argmax label varies from token to token
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model = DebertaV2ForTokenClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.normal_(0.0, 1.0)
        model.classifier.bias.zero_()
        if winner is not None:
            model.classifier.weight.zero_()
            model.classifier.bias.fill_(-50.0)
            model.classifier.bias[labels.index(winner)] = 50.0
    return model


def save(out: Path, model: DebertaV2ForTokenClassification) -> Path:
    model.save_pretrained(out)
    DebertaV2Tokenizer(vocab=VOCAB).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("rate-ner")
    random_model = build_model(IOB_LABELS)
    return {
        "random": save(root / "random", random_model),
        "model": random_model,
        "all-b-anatomy": save(root / "all-b-anatomy", build_model(IOB_LABELS, winner="B-ANATOMY")),
        "all-i-disease": save(root / "all-i-disease", build_model(IOB_LABELS, winner="I-DISEASE")),
        "io-disease": save(root / "io-disease", build_model(IO_LABELS, winner="DISEASE")),
        "root": root,
    }


def kept_sentences(text: str) -> list:
    return [s for s in split_sentences(text) if len(s.text) >= 3]


def trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def bio_groups(labels: list[str | None]) -> list[tuple[int, int, str]]:
    """The rule, written out for IOB labels: B- opens, I- extends an open entity, O / special / end close."""
    spans: list[tuple[int, int, str]] = []
    current: tuple[int, str] | None = None
    for i, label in enumerate([*labels, None]):
        if label is None or label == "O" or label.startswith("B-"):
            if current is not None:
                spans.append((current[0], i, current[1]))
                current = None
            if label is not None and label.startswith("B-"):
                current = (i, label[2:])
    return spans


def reference_entities(model: DebertaV2ForTokenClassification, folder: Path, text: str) -> list[RateEntity]:
    """One report, one sentence at a time (unpadded) through the saved module, decoded by ``bio_groups``."""
    tokenizer = DebertaV2Tokenizer.from_pretrained(folder)
    id2label = model.config.id2label
    entities = []
    for sentence in kept_sentences(text):
        enc = tokenizer(sentence.text, return_offsets_mapping=True, return_tensors="pt")
        with torch.no_grad():
            classes = model(input_ids=enc["input_ids"]).logits[0].argmax(-1).tolist()
        ids = enc["input_ids"][0].tolist()
        labels = [
            None if i in (tokenizer.cls_token_id, tokenizer.sep_token_id) else id2label[c]
            for i, c in zip(ids, classes, strict=True)
        ]
        offsets = enc["offset_mapping"][0].tolist()
        for first, stop, rate_type in bio_groups(labels):
            start, end = trim(sentence.text, offsets[first][0], offsets[stop - 1][1])
            if start < end:
                a, b = sentence.start + start, sentence.start + end
                entities.append(RateEntity(text[a:b], a, b, rate_type))
    return entities


def content_token_spans(folder: Path, text: str, max_length: int = 512) -> list[list[tuple[int, int]]]:
    """Per kept sentence, the report spans of its non-special tokens (whitespace trimmed, empty dropped)."""
    tokenizer = DebertaV2Tokenizer.from_pretrained(folder)
    out = []
    for sentence in kept_sentences(text):
        enc = tokenizer(sentence.text, return_offsets_mapping=True, truncation=True, max_length=max_length)
        spans = []
        for (start, end), token_id in zip(enc["offset_mapping"], enc["input_ids"], strict=True):
            if token_id in (tokenizer.cls_token_id, tokenizer.sep_token_id):
                continue
            start, end = trim(sentence.text, start, end)
            if start < end:
                spans.append((sentence.start + start, sentence.start + end))
        out.append(spans)
    return out


# --- the pure half: label names and the grouping rule --------------------------------------------------------


def test_label_names_parse_to_tags() -> None:
    assert parse_label("B-ABNORMALITY") == ("B", "ABNORMALITY")
    assert parse_label("I-NON-ABNORMALITY") == ("I", "NON-ABNORMALITY")
    assert parse_label("b-non-disease") == ("B", "NON-DISEASE")
    assert parse_label("ANATOMY") == ("", "ANATOMY")
    assert parse_label("O") == ("O", None)
    assert parse_label("B-DRUG") == ("O", None)
    assert parse_id2label({"0": "O", "1": "B-ANATOMY"}) == {0: ("O", None), 1: ("B", "ANATOMY")}


def test_grouping_rule_by_hand() -> None:
    def groups(*labels: str | None) -> list[tuple[int, int, str]]:
        return group_tags([None if label is None else parse_label(label) for label in labels])

    # B opens, I extends, O closes; the end of the sentence closes too.
    assert groups("B-ANATOMY", "I-ANATOMY", "O", "B-DISEASE") == [(0, 2, "ANATOMY"), (3, 4, "DISEASE")]
    assert groups(None, "O", "B-ABNORMALITY", "I-ABNORMALITY", "I-ABNORMALITY", None) == [
        (2, 5, "ABNORMALITY")
    ]
    # B after B: two entities; an I of another type extends and the B's type is kept.
    assert groups("B-ANATOMY", "B-ANATOMY") == [(0, 1, "ANATOMY"), (1, 2, "ANATOMY")]
    assert groups("B-ABNORMALITY", "I-DISEASE", "O") == [(0, 2, "ABNORMALITY")]
    # A stray I (nothing open) is in no entity, as in ratescore's post_process.
    assert groups("I-DISEASE", "I-DISEASE", "O", "I-ANATOMY") == []
    assert groups("B-DISEASE", "O", "I-DISEASE", "B-ANATOMY") == [(0, 1, "DISEASE"), (3, 4, "ANATOMY")]
    # Sentence-final entity after an earlier B-B transition is kept (ratescore drops it: its bug).
    assert groups("B-ANATOMY", "B-DISEASE", "O", "B-ANATOMY", "I-ANATOMY") == [
        (0, 1, "ANATOMY"),
        (1, 2, "DISEASE"),
        (3, 5, "ANATOMY"),
    ]
    # Plain (IO) labels: a run of one type is one entity; a change of type starts another.
    assert groups("ANATOMY", "ANATOMY", "DISEASE", "O", "ANATOMY") == [
        (0, 2, "ANATOMY"),
        (2, 3, "DISEASE"),
        (4, 5, "ANATOMY"),
    ]
    assert groups() == []


def test_ratescore_grouping_by_hand() -> None:
    """ratescore post_process: [SEP]'s own label is the last "next" label; an entity left open at the
    end is kept only while no B-B / I-B transition happened since the last B-O / I-O."""

    def groups(*labels: str) -> list[tuple[int, int, str]]:
        tags = [parse_label(label) for label in labels]
        return group_tags_ratescore(tags, [i in (0, len(labels) - 1) for i in range(len(labels))])

    cls, sep = "O", "O"
    assert groups(cls, "B-ANATOMY", "I-ANATOMY", "O", sep) == [(1, 3, "ANATOMY")]
    # B-B set the flag, so the DISEASE entity still open at [SEP] (labelled I-) is lost.
    assert groups(cls, "B-ANATOMY", "B-DISEASE", "I-DISEASE", "I-DISEASE") == [(1, 2, "ANATOMY")]
    assert groups(cls, "B-ANATOMY", "O", "B-DISEASE", "I-DISEASE", "I-DISEASE") == [
        (1, 2, "ANATOMY"),
        (3, 5, "DISEASE"),
    ]  # B-O cleared the flag: the open entity is flushed up to the token before [SEP]
    assert groups(cls, "B-ANATOMY", "B-DISEASE", "I-DISEASE", "O") == [(1, 2, "ANATOMY"), (2, 4, "DISEASE")]
    assert groups(cls, "I-DISEASE", "B-ANATOMY", "O") == [(2, 3, "ANATOMY")]  # stray I, then B-O
    assert groups(cls, "I-DISEASE", "B-ANATOMY", "I-ANATOMY") == []  # stray I-B set the flag
    assert groups(cls, "DISEASE", "DISEASE", sep) == []  # IO labels: nothing


# --- the model half: tiny saved models through RateNER ---------------------------------------------------------


def test_entities_index_the_report_and_have_rate_types(saved: dict) -> None:
    ner = RateNER(str(saved["random"]), device="cpu", ratescore_quirks=False)
    assert ner.name == "rate-ner"
    results = ner.extract(TEXTS)
    assert len(results) == len(TEXTS)
    for text, entities in zip(TEXTS, results, strict=True):
        for entity in entities:
            assert text[entity.start : entity.end] == entity.text
            assert entity.text == entity.text.strip() and entity.text
            assert entity.rate_type in RATE_TYPES
        assert [e.start for e in entities] == sorted(e.start for e in entities)
    assert results[2] == [] and results[4] == []


def test_entities_equal_a_direct_forward_pass_and_the_rule(saved: dict) -> None:
    # The plain rule (ratescore's post_process quirks are compared in tests/parity).
    results = RateNER(str(saved["random"]), device="cpu", batch_size=4, ratescore_quirks=False).extract(TEXTS)
    expected = [reference_entities(saved["model"], saved["random"], t) for t in TEXTS]
    assert results == expected
    flat = [e for entities in expected for e in entities]
    assert len(flat) >= 5, "the random model should tag some entities"
    assert len({e.rate_type for e in flat}) >= 2
    assert any(" " in e.text for e in flat), "some entity should span several words"


def test_batches_equal_one_sentence_at_a_time(saved: dict) -> None:
    one = RateNER(str(saved["random"]), device="cpu", batch_size=1)
    many = RateNER(str(saved["random"]), device="cpu", batch_size=64)
    batched = many.extract(TEXTS)
    assert one.extract(TEXTS) == batched
    assert [one.extract([t])[0] for t in TEXTS] == batched
    assert many.extract(list(reversed(TEXTS))) == list(reversed(batched))
    assert many.extract([]) == []


def test_every_token_b_anatomy_gives_one_entity_per_token(saved: dict) -> None:
    folder = saved["all-b-anatomy"]
    results = RateNER(str(folder), device="cpu").extract(TEXTS)
    for text, entities in zip(TEXTS, results, strict=True):
        spans = [span for sentence in content_token_spans(folder, text) for span in sentence]
        assert [(e.start, e.end) for e in entities] == spans
        assert {e.rate_type for e in entities} <= {"ANATOMY"}
    assert [e.text for e in results[0][:4]] == ["FINDINGS", ":", "Small", "right"]


def test_every_token_i_disease_gives_no_entity(saved: dict) -> None:
    """A run of I- with no B- is no entity (ratescore post_process only opens on B-)."""
    assert RateNER(str(saved["all-i-disease"]), device="cpu").extract(TEXTS) == [[] for _ in TEXTS]


def test_plain_type_labels_merge_each_sentence_into_one_entity(saved: dict) -> None:
    # IO labels: ratescore's post_process finds no entity in them; the plain rule groups them.
    results = RateNER(str(saved["io-disease"]), device="cpu", ratescore_quirks=False).extract(TEXTS)
    expected = [[RateEntity(s.text, s.start, s.end, "DISEASE") for s in kept_sentences(t)] for t in TEXTS]
    assert results == expected
    assert [e.text for e in results[0]] == [
        "FINDINGS:",
        "Small right pleural effusion.",
        "No pneumothorax.",
        "Heart size is normal.",
    ]


def test_sentences_are_cut_at_max_length(saved: dict) -> None:
    folder = saved["all-b-anatomy"]
    results = RateNER(str(folder), device="cpu", max_length=6).extract(TEXTS)
    for text, entities in zip(TEXTS, results, strict=True):
        spans = [span for sentence in content_token_spans(folder, text, max_length=6) for span in sentence]
        assert [(e.start, e.end) for e in entities] == spans
    # [CLS] + 4 tokens + [SEP]: the 12-token first sentence loses its tail; "Tube in place." has 4.
    assert [len(s) for s in content_token_spans(folder, TEXTS[5])] == [12, 4]
    assert [len(s) for s in content_token_spans(folder, TEXTS[5], max_length=6)] == [4, 4]


def test_tokenizer_from_another_folder(saved: dict, tmp_path: Path) -> None:
    DebertaV2Tokenizer(vocab=VOCAB).save_pretrained(tmp_path / "tok")
    ner = RateNER(str(saved["random"]), tokenizer=str(tmp_path / "tok"), device="cpu")
    assert ner.extract(TEXTS) == RateNER(str(saved["random"]), device="cpu").extract(TEXTS)


def test_missing_path_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(
        UserError, match=r"RaTE-NER model .*absent.* not found: give a folder written by save_pretrained"
    ):
        RateNER(str(tmp_path / "absent"), device="cpu")


def test_folder_without_a_model_is_a_user_error(tmp_path: Path) -> None:
    DebertaV2Tokenizer(vocab=VOCAB).save_pretrained(tmp_path)
    with pytest.raises(UserError, match="cannot load RaTE-NER model"):
        RateNER(str(tmp_path), device="cpu")


def test_id2label_without_rate_types_is_a_user_error(tmp_path: Path) -> None:
    model = build_model(["LABEL_0", "LABEL_1", "LABEL_2"])
    save(tmp_path, model)
    with pytest.raises(UserError, match=r"config.id2label names no RaTE type \(LABEL_0, LABEL_1, LABEL_2\)"):
        RateNER(str(tmp_path), device="cpu")


def test_tokenizer_larger_than_the_embedding_is_a_user_error(saved: dict, tmp_path: Path) -> None:
    DebertaV2Tokenizer(vocab=[*VOCAB, ("▁extra", -1.0)]).save_pretrained(tmp_path)
    with pytest.raises(UserError, match=rf"has {len(VOCAB) + 1} tokens but the model .* embeds {len(VOCAB)}"):
        RateNER(str(saved["random"]), tokenizer=str(tmp_path), device="cpu")


def test_bad_arguments(saved: dict) -> None:
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        RateNER(str(saved["random"]), batch_size=0)
    with pytest.raises(TypeError, match="not one string"):
        RateNER(str(saved["random"]), device="cpu").extract("Small effusion.")
