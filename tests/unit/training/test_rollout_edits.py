"""Per-token inserted masks on a byte-level BPE tokenizer like Qwen's, where tokens and characters
disagree (accents, emoji split into byte tokens, spaces merged into words)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from editgrpo.edits.apply import apply_edits
from editgrpo.edits.plan import EditOp, EditPlan
from editgrpo.training.rollout_edits import inserted_token_mask


@pytest.fixture(scope="module")
def tokenizer():
    from editgrpo.models.tiny import default_corpus, train_tokenizer

    return train_tokenizer(default_corpus(), vocab_size=600)


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte -> printable-character table (openai/gpt-2 encoder.py ``bytes_to_unicode``),
    inverted: maps each character of a byte-level token back to its byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


BYTE_DECODER = _byte_decoder()


def slow_mask(tokenizer, text: str, spans) -> list[bool]:
    """Reference: token byte ranges from the byte-level token strings, mapped to characters through
    the UTF-8 encoding; a token is inserted when a byte of it belongs to a reference character."""
    source = [None] * len(text)
    for start, end, name in spans:
        for k in range(start, end):
            source[k] = name
    byte_source = []
    for char, name in zip(text, source, strict=True):
        byte_source += [name] * len(char.encode("utf-8"))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    mask, cursor = [], 0
    for token in tokenizer.convert_ids_to_tokens(ids):
        n = len(token.encode("utf-8")) if token in tokenizer.all_special_tokens else len(token)
        mask.append(any(s == "reference" for s in byte_source[cursor : cursor + n]))
        cursor += n
    assert cursor == len(byte_source)
    return mask


def edited(rollout: list[str], reference: list[str], ops) -> tuple[str, tuple]:
    result = apply_edits(rollout, reference, EditPlan("paper", tuple(ops)))
    return result.text, result.spans


def test_mask_by_hand(tokenizer) -> None:
    text, spans = edited(["Heart size is normal."], ["No effusion."], [EditOp("append", None, 0, "d", "")])
    assert spans == ((0, 21, "policy"), (21, 34, "reference"))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = inserted_token_mask(tokenizer, text, spans)
    assert len(mask) == len(encoded["input_ids"])
    for (_start, end), inserted in zip(encoded["offset_mapping"], mask, strict=True):
        assert inserted == (end > 21)
    assert mask[0] is False and mask[-1] is True


@pytest.mark.parametrize(
    ("rollout", "reference"),
    [
        (["Opacité basale gauche.", "Cœur normal."], ["Épanchement pleural droit."]),
        (["Lungs clear 🫁🫁.", "No pneumothorax."], ["Tube in place 👍🏽."]),
        (["Heart   size normal."], ["  Mild   edema.  "]),
        (["日本語の報告。"], ["Ａｂｃ small effusion."]),
    ],
)
def test_mask_matches_the_byte_level_reference(tokenizer, rollout, reference) -> None:
    for ops in (
        [EditOp("append", None, 0, "d", "")],
        [EditOp("replace", 0, 0, "a", "")],
        [EditOp("delete", 0, None, "c", ""), EditOp("append", None, 0, "d", "")],
    ):
        text, spans = edited(rollout, reference, ops)
        assert inserted_token_mask(tokenizer, text, spans) == slow_mask(tokenizer, text, spans)


def test_a_token_straddling_the_boundary_is_inserted(tokenizer) -> None:
    # A byte-level token can hold the end of one source and the start of the other: the emoji is
    # split into byte tokens and spans are cut inside a word by hand.
    text = "effusion🫁effusion"
    spans = ((0, 4, "policy"), (4, 9, "reference"), (9, len(text), "policy"))
    mask = inserted_token_mask(tokenizer, text, spans)
    assert mask == slow_mask(tokenizer, text, spans)
    assert any(mask) and not all(mask)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    policy=st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=3),
    reference=st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=3),
)
def test_mask_property(tokenizer, policy, reference) -> None:
    import unicodedata

    policy = [unicodedata.normalize("NFC", p) for p in policy]  # the tokenizer normalises to NFC
    reference = [unicodedata.normalize("NFC", r) for r in reference]
    text, spans = edited(policy, reference, [EditOp("append", None, len(reference) - 1, "d", "")])
    if unicodedata.normalize("NFC", text) != text:
        return
    mask = inserted_token_mask(tokenizer, text, spans)
    assert mask == slow_mask(tokenizer, text, spans)
    assert not any(s == "reference" for _, _, s in spans) or any(mask)


def test_slow_tokenizer_is_rejected() -> None:
    class Slow:
        is_fast = False

    with pytest.raises(ValueError, match="needs a fast tokenizer"):
        inserted_token_mask(Slow(), "x", ())


# ---------------------------------------------------------------------------------------------
# Edited completions: end token, empty texts, truncation
# ---------------------------------------------------------------------------------------------

END = 9999  # stands for <|im_end|>; any id outside the text's ids


def _edited(tokenizer, source: str, plan_ops, reference: list[str]):
    from editgrpo.edits.plan import EditPlan

    return apply_edits([source], reference, EditPlan("paper", tuple(plan_ops)))


def test_an_edited_completion_ends_with_the_end_token_inserted_when_the_text_ends_in_reference_text(
    tokenizer,
) -> None:
    from editgrpo.training.rollout_edits import edited_completion

    edited = _edited(
        tokenizer, "Heart size is normal.", [EditOp("append", None, 0, "d", "")], ["Small effusion."]
    )
    done = edited_completion(tokenizer, edited.text, edited.spans, end_id=END, max_length=200)
    ids = tokenizer(edited.text, add_special_tokens=False)["input_ids"]
    assert done is not None and done.ids == [*ids, END] and not done.truncated
    assert done.inserted[-1] is True  # the policy did not choose to stop after the reference's words
    assert done.inserted[:-1] == inserted_token_mask(tokenizer, edited.text, edited.spans)
    # Deleting the last sentence leaves the policy's own ending: the end token is the policy's.
    deleted = apply_edits(
        ["Heart size is normal.", "Nodule."], [], EditPlan("paper", (EditOp("delete", 1, None, "c", ""),))
    )
    done = edited_completion(tokenizer, deleted.text, deleted.spans, end_id=END, max_length=200)
    assert done is not None and done.inserted[-1] is False and not any(done.inserted)


def test_an_empty_edited_text_is_no_completion(tokenizer) -> None:
    from editgrpo.training.rollout_edits import edited_completion

    # Would be the lone end token: a copy that teaches ending the report at once.
    assert edited_completion(tokenizer, "", (), end_id=END, max_length=40) is None
    assert edited_completion(tokenizer, "  ", ((0, 2, "reference"),), end_id=END, max_length=40) is None


def test_an_edit_whose_inserted_tokens_are_all_cut_is_no_completion(tokenizer) -> None:
    from editgrpo.training.rollout_edits import edited_completion

    source = "Heart size is normal. Lungs are clear."
    source_ids = tokenizer(source, add_special_tokens=False)["input_ids"]
    edited = _edited(tokenizer, source, [EditOp("append", None, 0, "d", "")], ["Small left effusion."])
    assert edited.text.startswith(source)
    # The source fills the completion limit (a truncated sample, no end token): the appended
    # sentence is cut away whole, and what is left re-tokenises to the source.
    limit = len(source_ids)
    assert edited_completion(tokenizer, edited.text, edited.spans, end_id=END, max_length=limit) is None
    # One more token of room keeps the first inserted token: a real (truncated) edit.
    kept = edited_completion(tokenizer, edited.text, edited.spans, end_id=END, max_length=limit + 1)
    assert kept is not None and kept.truncated and kept.inserted == [False] * limit + [True]
    # A delete-only edit inserts nothing, so the limit alone never drops it ...
    deleted = apply_edits(
        ["Nodule.", "Heart size is normal.", "Lungs are clear."],
        [],
        EditPlan("paper", (EditOp("delete", 0, None, "c", ""),)),
    )
    kept = edited_completion(tokenizer, deleted.text, deleted.spans, end_id=END, max_length=limit)
    assert kept is not None and not any(kept.inserted) and kept.ids[:limit] == source_ids[:limit]
    # ... but an edited copy equal to the source's own tokens is dropped.
    same = edited_completion(
        tokenizer, source, ((0, len(source), "policy"),), end_id=END, max_length=limit, source_ids=source_ids
    )
    assert same is None
