"""Edited rollouts -> per-token masks (EDITGRPO.md section 4, ``edit.token_treatment``).

``inserted_token_mask(tokenizer, text, spans)`` tells, for each token of ``text`` as the fast
tokenizer encodes it (no special tokens), whether the token was inserted from the reference.
Character spans come from ``edits.apply.EditedText.spans``: ``(start, end, source)`` with source
``"policy"`` or ``"reference"``.

Rule: a token is *inserted* when any character it covers came from the reference. Token and
character boundaries disagree in byte-level BPE (Qwen2's tokenizer): a token may hold a space and
the next word (" Small"), or only some bytes of one character (an emoji split into several
tokens). Offsets come from the fast tokenizer's ``return_offsets_mapping``, which maps a token to
the characters its bytes belong to, so a partial-character token covers its whole character; a
token straddling a policy/reference boundary counts as inserted (the policy did not write it as
it stands, so it is not an on-policy sample). A token with an empty offset range (possible for
tokens the normaliser produced) takes the source of the character at its offset.

``edited_completion`` turns an edited text into the completion tokens of its row, or None when the
edit must count as unchanged (empty text, every inserted token cut by the completion limit, or the
source's own tokens again).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def inserted_token_mask(tokenizer: Any, text: str, spans: Sequence[tuple[int, int, str]]) -> list[bool]:
    """One bool per token of ``tokenizer(text, add_special_tokens=False)``: True when the token
    covers a character from a ``"reference"`` span (module docstring)."""
    return encode_with_inserted_mask(tokenizer, text, spans)[1]


def encode_with_inserted_mask(
    tokenizer: Any, text: str, spans: Sequence[tuple[int, int, str]]
) -> tuple[list[int], list[bool]]:
    """The token ids of ``text`` (no special tokens) and their inserted mask, from one encoding."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("inserted_token_mask needs a fast tokenizer (return_offsets_mapping)")
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    inserted = sorted((start, end) for start, end, source in spans if source == "reference" and end > start)
    starts = [start for start, _ in inserted]

    def overlaps(start: int, end: int) -> bool:
        if end <= start:  # empty offsets: the character at `start`
            end = start + 1
        k = bisect.bisect_right(starts, end - 1) - 1  # last inserted span starting before `end`
        return k >= 0 and inserted[k][1] > start

    mask = [overlaps(int(start), int(end)) for start, end in encoded["offset_mapping"]]
    return list(encoded["input_ids"]), mask


@dataclass(frozen=True)
class EditedCompletion:
    """An edited copy as completion tokens: ``ids`` (end-of-turn appended, cut to the completion
    limit), one ``inserted`` flag per id, and whether the cut removed tokens (``truncated``)."""

    ids: list[int]
    inserted: list[bool]
    truncated: bool


def edited_completion(
    tokenizer: Any,
    text: str,
    spans: Sequence[tuple[int, int, str]],
    *,
    end_id: int,
    max_length: int,
    source_ids: Sequence[int] | None = None,
) -> EditedCompletion | None:
    """The completion tokens of an edited text, or None when the edit must count as unchanged:

    - the text is empty (only the end token would be left: a copy that teaches ending at once);
    - the edit inserted reference tokens but the completion limit cut every one of them (a source
      that already fills ``max_length`` and got a sentence appended): what is left is a
      re-tokenised copy of the source, which would weigh twice in the baseline and the gradient;
    - the ids equal ``source_ids`` (the source's own completion), for the same reason.

    The end token counts as inserted when the text ends in reference characters (the policy did not
    choose to stop there); a truncated copy has no end token, like a truncated sample."""
    if not text.strip():
        return None
    ids, mask = encode_with_inserted_mask(tokenizer, text, spans)
    ids.append(end_id)
    mask.append(bool(spans) and spans[-1][2] == "reference")
    kept_ids, kept_mask = ids[:max_length], mask[:max_length]
    if any(mask) and not any(kept_mask):
        return None
    if source_ids is not None and list(source_ids) == kept_ids:
        return None
    return EditedCompletion(kept_ids, kept_mask, len(ids) > max_length)
