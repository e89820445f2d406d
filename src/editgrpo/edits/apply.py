"""Apply an ``EditPlan`` to a rollout: the edited text and which characters came from where.

``apply_edits(rollout_sentences, reference_sentences, plan)`` (sentences as strings or
``text.sentences.Sentence``; ``TextAnalysis.sentences`` fits) rewrites the rollout sentence by
sentence: a replaced sentence becomes its reference sentence, a deleted one is dropped, appended
reference sentences follow the last sentence in plan order (a reference sentence is appended at
most once). Sentences are re-joined with single spaces (EDITGRPO.md section 3).

``EditedText.spans`` is a list of ``(start, end, source)`` with ``source`` ``"policy"`` or
``"reference"``, in order, adjacent, covering ``text`` exactly, neighbours of one source merged. The
space joining two sentences belongs to the sentence after it: byte-level BPE tokenizers (Qwen's)
merge a leading space into the next word (" Small"), so that token is inserted exactly when the
word is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from editgrpo.edits.plan import EditOp, EditPlan
from editgrpo.text.sentences import Sentence

SOURCES: tuple[str, ...] = ("policy", "reference")


@dataclass(frozen=True)
class EditedText:
    """The edited text, its source spans and the ops that made it; ``changed`` is False when the
    edited sentences equal the rollout's."""

    text: str
    spans: tuple[tuple[int, int, str], ...]
    ops: tuple[EditOp, ...]
    changed: bool

    @property
    def inserted_chars(self) -> int:
        """Characters that came from the reference (joining spaces before them included)."""
        return sum(end - start for start, end, source in self.spans if source == "reference")


def _text(sentence: str | Sentence) -> str:
    return (sentence.text if isinstance(sentence, Sentence) else sentence).strip()


def edited_sentences(
    rollout_sentences: Sequence[str | Sentence], reference_sentences: Sequence[str | Sentence], plan: EditPlan
) -> list[tuple[str, str]]:
    """(sentence text, source) of the edited text, in order."""
    rollout = [_text(s) for s in rollout_sentences]
    reference = [_text(s) for s in reference_sentences]
    replaced: dict[int, int] = {}
    deleted: set[int] = set()
    appended: list[int] = []
    for op in plan.ops:
        if op.kind in ("replace", "delete") and not (
            op.rollout is not None and 0 <= op.rollout < len(rollout)
        ):
            raise ValueError(f"{op.kind} names rollout sentence {op.rollout}; the rollout has {len(rollout)}")
        if op.kind in ("replace", "append") and not (
            op.reference is not None and 0 <= op.reference < len(reference)
        ):
            raise ValueError(
                f"{op.kind} names reference sentence {op.reference}; the reference has {len(reference)}"
            )
        if op.kind == "replace":
            replaced[op.rollout] = op.reference
            deleted.discard(op.rollout)
        elif op.kind == "delete":
            deleted.add(op.rollout)
            replaced.pop(op.rollout, None)
        elif op.reference not in appended:
            appended.append(op.reference)
    out: list[tuple[str, str]] = []
    for i, text in enumerate(rollout):
        if i in deleted:
            continue
        if i in replaced:
            out.append((reference[replaced[i]], "reference"))
        else:
            out.append((text, "policy"))
    out += [(reference[j], "reference") for j in appended]
    return [(text, source) for text, source in out if text]


def apply_edits(
    rollout_sentences: Sequence[str | Sentence], reference_sentences: Sequence[str | Sentence], plan: EditPlan
) -> EditedText:
    """The edited text with its character spans (module docstring)."""
    pieces = edited_sentences(rollout_sentences, reference_sentences, plan)
    parts: list[str] = []
    spans: list[list] = []
    cursor = 0
    for k, (text, source) in enumerate(pieces):
        piece = text if k == 0 else " " + text
        parts.append(piece)
        if spans and spans[-1][2] == source:
            spans[-1][1] = cursor + len(piece)
        else:
            spans.append([cursor, cursor + len(piece), source])
        cursor += len(piece)
    original = [t for t in (_text(s) for s in rollout_sentences) if t]
    changed = [text for text, _ in pieces] != original
    return EditedText(
        text="".join(parts),
        spans=tuple((start, end, source) for start, end, source in spans),
        ops=plan.ops,
        changed=changed,
    )
