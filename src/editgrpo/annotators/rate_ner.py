"""The ``rate`` entity backend, NER half: RaTE-NER token classification (Zhao et al., EMNLP 2024).

Model (hub ``Angelakeke/RaTE-NER-Deberta``): a DeBERTa ``...ForTokenClassification`` fine-tuned on
the RaTE-NER dataset, tagging each sub-word token with an IOB label over the five RaTE types
(``entity_types.RATE_TYPES``): ``B-ABNORMALITY``, ``I-ABNORMALITY``, ... ``B-ANATOMY``,
``I-ANATOMY`` and ``O``. Label names are read from the model's ``config.id2label``, as the
``ratescore`` scorer does (``RaTEScore/scorer.py``: ``AutoConfig(...).id2label``), never assumed
by index. Plain type names without a B-/I- prefix (an IO-tagged model) are accepted too; labels
that name no RaTE type count as outside.

How ``ratescore`` runs it (0.6.0 on PyPI; GitHub Angelakeke/RaTEScore HEAD has the same NER code), and
what we keep:

- Sentences (``utils.py`` ``sentence_split``): medspaCy PyRuSH sentences, stripped; sentences
  with no word or under 3 characters are skipped. We split with ``text.sentences.split_sentences``
  (character offsets, no spaCy) and keep the same "at least 3 characters" filter.
- Tokens (``score.py`` ``run_ner``): each sentence alone, ``[CLS] ... [SEP]``, truncated at
  ``max_length=512`` tokens, sentences batched across reports; the label of a token is the argmax
  over its logits. Same here (batches sorted by length, results in input order).
- Entities (``utils.py`` ``post_process``): consecutive sub-word tokens grouped by their tags; the
  entity text is ``convert_tokens_to_string`` of its tokens. We keep character spans instead, from
  the fast tokenizer's offsets, so ``entity.text == report[entity.start:entity.end]`` (the same
  words; ``convert_tokens_to_string`` would also collapse inner whitespace runs).

Grouping rule (``group_tags``; the effective behaviour of ``post_process``, read transition by
transition):

- ``B-X`` closes any open entity and opens one of type X;
- ``I-Y`` extends the open entity, which keeps the type of its ``B-`` even when Y differs; an
  ``I-`` with no open entity (after ``O`` or at the sentence start) belongs to no entity;
- plain ``X`` (IO tagging) extends an open entity of type X, else closes it and opens one of type X;
- ``O`` (and any label naming no RaTE type) closes the open entity; so does the sentence end.

Two behaviours of ``post_process`` are reproduced by default (``ratescore_quirks=True``), because
the parity tests (tests/parity/test_ratescore_parity.py, against ratescore 0.5.0 and 0.6.0) showed
them changing RaTEScore on random-weight models, and a real model meets them too:

- an entity still open at ``[SEP]`` is flushed only when no B-B or I-B transition happened since
  the last B-O / I-O one (``post_process``'s ``end`` variable is left set by the former, reset by
  the latter), else it is lost; the label predicted *at* ``[SEP]`` decides whether the last real
  token's entity is closed by a transition (B / O) or left open (``group_tags_ratescore``);
- an entity made of whitespace only (a bare SentencePiece ``▁`` token) is kept with empty text,
  as ``convert_tokens_to_string(["▁"]) == ""`` is kept there (and embedded, and scored).

``ratescore_quirks=False`` gives the plain rule of ``group_tags`` (every sentence-final entity kept,
whitespace-only entities dropped).

Sub-word spans are not widened to whole words (the reference does not either). SentencePiece
offsets of a ``▁word`` token include the space before it, so spans are trimmed of whitespace.

Tensor shapes: N sentences, B sentences per batch, T tokens (longest in the batch), C labels.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from editgrpo.annotators.batching import padded_batches
from editgrpo.annotators.entity_types import RATE_TYPES, RateEntity
from editgrpo.annotators.weights import local_or_hub
from editgrpo.errors import UserError
from editgrpo.text.sentences import Sentence, split_sentences

PUBLISHED_HUB_ID = "Angelakeke/RaTE-NER-Deberta"
# ratescore utils.py sentence_split: `if len(sent) < 3: continue` (after strip).
MIN_SENTENCE_CHARS = 3

BEGIN, INSIDE, PLAIN, OUTSIDE = "B", "I", "", "O"
Tag = tuple[str, str | None]  # (BEGIN | INSIDE | PLAIN | OUTSIDE, RaTE type or None for OUTSIDE)

_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SHOW = 8  # labels listed in an error message before "... and k more"


def parse_label(label: str) -> Tag:
    """One ``id2label`` name -> its tag: ``"B-NON-DISEASE"`` -> ``("B", "NON-DISEASE")``,
    ``"I-ANATOMY"`` -> ``("I", "ANATOMY")``, ``"ANATOMY"`` -> ``("", "ANATOMY")``; ``"O"`` and names
    of no RaTE type -> ``("O", None)``. Case-insensitive."""
    name = str(label).strip().upper()
    if name in RATE_TYPES:
        return PLAIN, name
    for prefix in (BEGIN, INSIDE):
        if name.startswith(prefix + "-") and name[2:] in RATE_TYPES:
            return prefix, name[2:]
    return OUTSIDE, None


def parse_id2label(id2label: Mapping[Any, str], source: str = "<config>") -> dict[int, Tag]:
    """A model's ``config.id2label`` (int or string keys) -> class index -> tag. Raises UserError when
    no label names a RaTE type (e.g. the ``LABEL_0``... of a config saved without labels)."""
    tags = {int(index): parse_label(name) for index, name in id2label.items()}
    if not any(rate_type for _, rate_type in tags.values()):
        names = [str(id2label[k]) for k in sorted(id2label, key=int)]
        shown = ", ".join(names[:_SHOW]) + (
            f" ... and {len(names) - _SHOW} more" if len(names) > _SHOW else ""
        )
        raise UserError(
            f"RaTE-NER model {source!r}: config.id2label names no RaTE type ({shown}); expected IOB labels "
            f"such as 'B-ABNORMALITY' / 'I-ABNORMALITY' / 'O' over the types {', '.join(RATE_TYPES)} "
            f"(as in {PUBLISHED_HUB_ID!r}), or the plain type names"
        )
    return tags


def group_tags(tags: Sequence[Tag | None]) -> list[tuple[int, int, str]]:
    """Token tags of one sentence -> entities ``(first token, last token + 1, RaTE type)``, by the rule
    of the module docstring. ``None`` marks a special token ([CLS], [SEP]) and closes like ``O``."""
    entities: list[tuple[int, int, str]] = []
    open_start: int | None = None
    open_type: str | None = None
    open_plain = False

    def close(end: int) -> None:
        nonlocal open_start, open_type
        if open_start is not None and open_type is not None:
            entities.append((open_start, end, open_type))
        open_start, open_type = None, None

    for i, tag in enumerate(tags):
        prefix, rate_type = tag if tag is not None else (OUTSIDE, None)
        if prefix == BEGIN:
            close(i)
            open_start, open_type, open_plain = i, rate_type, False
        elif prefix == INSIDE:
            pass  # extends the open entity, if any; a stray I- stays outside (ratescore post_process)
        elif prefix == PLAIN:
            if open_start is None or not open_plain or open_type != rate_type:
                close(i)
                open_start, open_type, open_plain = i, rate_type, True
        else:
            close(i)
    close(len(tags))
    return entities


def group_tags_ratescore(tags: Sequence[Tag], special: Sequence[bool]) -> list[tuple[int, int, str]]:
    """ratescore ``post_process``'s grouping, transition by transition: ``tags`` of every token of a
    sentence *including* [CLS] / [SEP] (their predicted labels matter as "next" labels),
    ``special`` marks those. Returns ``(first token, last token + 1, type)``.

    For each non-special token t with next label n: B+I opens at t; B+B records (t, t) and leaves
    a "closed by B" flag set; B+O records (t, t) and clears the flag; I+B closes the open entity at
    t (if any) and sets the flag; I+O closes it (if any) and clears the flag; anything else (O, I+I,
    IO labels) changes nothing. At the end an open entity is recorded up to the last non-special
    token only while the flag is clear."""
    entities: list[tuple[int, int, str]] = []
    open_start: int | None = None
    open_type: str | None = None
    closed_by_b = False
    last = len(tags) - 2  # post_process: end = len(tokenized_text) - 2, the token before [SEP]
    for i in range(len(tags) - 1):
        if special[i]:
            continue
        (prefix, rate_type), (next_prefix, _) = tags[i], tags[i + 1]
        if prefix == BEGIN and next_prefix == INSIDE:
            open_start, open_type = i, rate_type
        elif prefix == BEGIN and next_prefix in (BEGIN, OUTSIDE) and rate_type is not None:
            entities.append((i, i + 1, rate_type))
            if next_prefix == BEGIN:
                open_start, open_type, closed_by_b = i, rate_type, True
            else:
                open_start, open_type, closed_by_b = None, None, False
        elif prefix == INSIDE and next_prefix in (BEGIN, OUTSIDE):
            if open_start is not None and open_type is not None:
                entities.append((open_start, i + 1, open_type))
            if next_prefix == BEGIN:
                open_start, open_type, closed_by_b = i, rate_type, True
            else:
                open_start, open_type, closed_by_b = None, None, False
    if open_start is not None and open_type is not None and not closed_by_b and last >= open_start:
        entities.append((open_start, last + 1, open_type))
    return entities


def resolve_source(name: str, what: str) -> str:
    """A local folder (or file) as a string path, the cached snapshot folder of a hub id, or the hub
    id itself when the hub can be reached; UserError otherwise (annotators/weights.py)."""
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    if not _HUB_ID_RE.match(name):
        raise UserError(
            f"RaTE-NER {what} {name!r} not found: give a folder written by save_pretrained or a hub repo id "
            f"(e.g. {PUBLISHED_HUB_ID!r})"
        )
    filename = "config.json" if what == "model" else "tokenizer_config.json"
    return local_or_hub(name, f"RaTE-NER {what}", filename, "reward.entity_model PATH")[0]


class RateNER:
    """RaTE-NER from ``model`` (a folder written by ``save_pretrained`` or a hub id, e.g.
    ``Angelakeke/RaTE-NER-Deberta``) with the fast ``tokenizer`` of that name (default: ``model``).

    ``extract(texts)`` gives, per report, its RaTE entities with character spans into that report, in
    text order. ``batch_size`` counts sentences; ``max_length`` counts tokens with [CLS] and [SEP]
    (512 as in ratescore). ``device`` defaults to cuda when available, else cpu.
    """

    name = "rate-ner"

    def __init__(
        self,
        model: str,
        tokenizer: str | None = None,
        device: str | None = None,
        batch_size: int = 32,
        max_length: int = 512,
        ratescore_quirks: bool = True,
    ) -> None:
        import torch
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_length < 3:
            raise ValueError(f"max_length must be >= 3 ([CLS], one token, [SEP]), got {max_length}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = batch_size
        self.max_length = max_length
        self.ratescore_quirks = ratescore_quirks

        model_source = resolve_source(model, "model")
        tokenizer_name = tokenizer if tokenizer is not None else model
        tokenizer_source = resolve_source(tokenizer_name, "tokenizer")
        try:
            self.model = AutoModelForTokenClassification.from_pretrained(model_source)
        except Exception as err:  # missing config/weights, network, auth: one message naming the source
            raise UserError(
                f"cannot load RaTE-NER model {model!r} as a token-classification model: {err}"
            ) from err
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
        except Exception as err:
            raise UserError(f"cannot load RaTE-NER tokenizer {tokenizer_name!r}: {err}") from err
        if not getattr(self.tokenizer, "is_fast", False):
            raise UserError(
                f"RaTE-NER tokenizer {tokenizer_name!r} is not a fast tokenizer: character offsets need one "
                "(a folder with tokenizer.json, as the published model has)"
            )

        config = self.model.config
        # from_pretrained sizes the classifier from id2label, so every argmax index has a name here.
        self.tags = parse_id2label(config.id2label, source=str(model))
        vocab_size = self.model.get_input_embeddings().weight.shape[0]
        if len(self.tokenizer) > vocab_size:
            raise UserError(
                f"RaTE-NER tokenizer {tokenizer_name!r} has {len(self.tokenizer)} tokens but the model {model!r} "
                f"embeds {vocab_size}: use the tokenizer saved with the model"
            )
        # Absolute position tables cap the length; DeBERTa-v3 (position_biased_input=False) has none.
        if getattr(config, "position_biased_input", True) and getattr(
            config, "max_position_embeddings", None
        ):
            self.max_length = min(self.max_length, config.max_position_embeddings)
        self.model.to(self.device).eval()
        # The id of the bare SentencePiece word-start piece "▁" (-1 when the vocabulary has none).
        bare = self.tokenizer.convert_tokens_to_ids("▁")
        self._bare_space_id = bare if isinstance(bare, int) and bare != self.tokenizer.unk_token_id else -1

    def extract(self, texts: Sequence[str]) -> list[list[RateEntity]]:
        """Per report, its RaTE entities in text order, ``text == report[start:end]``. A non-string
        (a missing report) has no entities."""
        if isinstance(texts, str):
            raise TypeError("extract() takes a sequence of report texts, not one string")
        reports = [t if isinstance(t, str) else "" for t in texts]
        # Flat list of (report index, sentence) over all reports, batched together as ratescore does.
        sentences: list[tuple[int, Sentence]] = [
            (r, s)
            for r, text in enumerate(reports)
            for s in split_sentences(text)
            if len(s.text) >= MIN_SENTENCE_CHARS
        ]
        out: list[list[RateEntity]] = [[] for _ in reports]
        if not sentences:
            return out
        encoded = self.tokenizer(
            [s.text for _, s in sentences],
            truncation=True,
            max_length=self.max_length,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        labels = self._predict(encoded["input_ids"])
        for (r, sentence), classes, offsets, special, ids in zip(
            sentences,
            labels,
            encoded["offset_mapping"],
            encoded["special_tokens_mask"],
            encoded["input_ids"],
            strict=True,
        ):
            if self.ratescore_quirks:
                groups = group_tags_ratescore([self.tags[c] for c in classes], [bool(x) for x in special])
            else:
                groups = group_tags(
                    [
                        None if is_special else self.tags[c]
                        for c, is_special in zip(classes, special, strict=True)
                    ]
                )
            for first, stop, rate_type in groups:
                if self.ratescore_quirks:
                    # A bare "▁" piece adds no character to convert_tokens_to_string, but the fast
                    # tokenizer maps a sentence-initial one onto the first character: skip it.
                    kept = [t for t in range(first, stop) if ids[t] != self._bare_space_id]
                    if kept:
                        start, end = _trimmed(sentence.text, offsets[kept[0]][0], offsets[kept[-1]][1])
                    else:  # only "▁": an entity with empty text, as ratescore keeps it
                        start = end = offsets[first][0]
                else:
                    start, end = _trimmed(sentence.text, offsets[first][0], offsets[stop - 1][1])
                if start < end or self.ratescore_quirks:
                    out[r].append(
                        RateEntity(
                            text=reports[r][sentence.start + start : sentence.start + end],
                            start=sentence.start + start,
                            end=sentence.start + end,
                            rate_type=rate_type,
                        )
                    )
        return out

    def _predict(self, encoded: Sequence[Sequence[int]]) -> list[list[int]]:
        """Argmax class per token of each sentence (unpadded lengths), in input order."""
        import torch

        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        out: list[list[int]] = [[] for _ in encoded]
        with torch.inference_mode():
            for rows, ids, mask in padded_batches(encoded, self.batch_size, pad_id):
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
                classes = logits.argmax(dim=-1).cpu().tolist()  # (B, T, C) -> (B, T)
                for row, i in enumerate(rows):
                    out[i] = classes[row][: len(encoded[i])]
        return out


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    """``[start, end)`` without surrounding whitespace (SentencePiece ``▁`` offsets take the space)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end
