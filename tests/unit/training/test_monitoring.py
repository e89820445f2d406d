"""Collapse figures, vLLM importance-sampling masks and completions-log rows, by hand."""

from __future__ import annotations

import json

import pytest
import torch

from editgrpo.text.sentences import has_repeated_sentence
from editgrpo.training.monitoring import (
    COLLAPSE_FIGURES,
    ROW_KINDS,
    collapse_stats,
    completion_log_rows,
    completions_table,
    importance_sampling_stats,
    markdown_table,
)
from editgrpo.training.trainer import RolloutRecord


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_collapse_stats_by_hand() -> None:
    # Two groups of 4. Group 0: two identical samples, an empty sample, an edited copy.
    # Group 1: a degenerate sample ("There. There. There."), two distinct samples, an edited copy
    # equal (up to whitespace) to one of them.
    texts = [
        "No effusion.",
        "No  effusion.",
        " ",
        "Small effusion.",
        "There. There. There.",
        "Heart is normal.",
        "Lungs clear. No pneumothorax.",
        "Lungs clear.  No pneumothorax.",
    ]
    lengths = [3, 3, 0, 4, 6, 4, 6, 7]
    edited = [False, False, False, True, False, False, False, True]
    stats = collapse_stats(texts, lengths, edited, group_size=4)
    assert set(stats) == {f"collapse/{k}/{f}" for k in ROW_KINDS for f in COLLAPSE_FIGURES}
    # On-policy rows: 0, 1, 2, 4, 5, 6 (six rows).
    assert stats["collapse/on_policy/empty_rate"] == [0, 0, 1, 0, 0, 0]
    assert _mean(stats["collapse/on_policy/length_tokens"]) == pytest.approx((3 + 3 + 0 + 6 + 4 + 6) / 6)
    # Rows 0 and 1 equal each other; row 6 equals the edited row 7 (another kind, same group).
    assert stats["collapse/on_policy/duplicate_rate"] == [1, 1, 0, 0, 0, 1]
    assert stats["collapse/on_policy/repeated_sentence_rate"] == [0, 0, 0, 1, 0, 0]
    # Edited rows: 3 and 7.
    assert stats["collapse/edited/empty_rate"] == [0, 0]
    assert stats["collapse/edited/length_tokens"] == [4, 7]
    assert stats["collapse/edited/duplicate_rate"] == [0, 1]
    assert stats["collapse/edited/repeated_sentence_rate"] == [0, 0]


def test_collapse_stats_take_the_rewards_emptiness_test_and_check_their_input() -> None:
    stats = collapse_stats(
        ["[EMPTY]", "No effusion."], [2, 3], [False, False], 2, is_empty=lambda t: t == "[EMPTY]"
    )
    assert stats["collapse/on_policy/empty_rate"] == [1, 0]
    assert stats["collapse/edited/empty_rate"] == []  # present with no value: same names everywhere
    with pytest.raises(ValueError, match="not whole groups of 4"):
        collapse_stats(["a"] * 6, [1] * 6, [False] * 6, 4)
    with pytest.raises(ValueError, match="3 texts, 2 lengths"):
        collapse_stats(["a"] * 3, [1] * 2, [False] * 3, 3)


def test_repeated_sentences_are_found_across_case_and_spacing() -> None:
    assert has_repeated_sentence("No effusion. Heart normal. no  effusion.")
    assert not has_repeated_sentence("No effusion. No pneumothorax.")
    assert not has_repeated_sentence("")


def test_importance_sampling_stats_by_hand() -> None:
    # 3 rows x 4 tokens; row 2 is an edited copy (weights 1 by construction, left out).
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    sampled = torch.tensor([True, True, False])
    # Per-token (token_mask mode): row 0 has 1 of 3 tokens masked; row 1 both of 2.
    weights = torch.tensor([[0.0, 1.2, 0.9, 0.0], [0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    stats = importance_sampling_stats(weights, mask, sampled)
    assert stats["vllm_is/masked_rows_frac"] == [0.0, 1.0]
    assert stats["vllm_is/masked_tokens_frac"] == [pytest.approx(3 / 5)]
    # Per-sequence (sequence_mask, TRL's default): (B, 1) weights, row 1 masked whole.
    stats = importance_sampling_stats(torch.tensor([[0.8], [0.0], [1.0]]), mask, sampled)
    assert stats["vllm_is/masked_rows_frac"] == [0.0, 1.0]
    assert stats["vllm_is/masked_tokens_frac"] == [pytest.approx(2 / 5)]
    # No sampled row: nothing to report.
    none = importance_sampling_stats(weights, mask, torch.zeros(3, dtype=torch.bool))
    assert none == {"vllm_is/masked_rows_frac": [], "vllm_is/masked_tokens_frac": []}


class _Result:
    def __init__(self, total, components):
        self.total, self.components = total, components


def test_completion_log_rows_hold_each_group_with_its_edits() -> None:
    records = [
        RolloutRecord("sample"),
        RolloutRecord("sample"),
        RolloutRecord(
            "edit",
            source=0,
            inserted=[False, True],
            ops=("append",),
            spans=((0, 12, "policy"), (12, 28, "reference")),
        ),
        RolloutRecord("topup", source=1),
        RolloutRecord("sample"),
        RolloutRecord("sample"),
        RolloutRecord("edit", source=5, ops=("delete",), spans=((0, 5, "policy"),)),
        RolloutRecord("sample"),
    ]
    texts = [f"text {k}" for k in range(8)]
    results = [_Result(float(k), {"ratescore": k / 10}) for k in range(7)] + [
        _Result(None, {"ratescore": None})
    ]
    rows = completion_log_rows(
        step=3,
        process=1,
        study_ids=["s0"] * 4 + ["s1"] * 4,
        references=["ref 0"] * 4 + ["ref 1"] * 4,
        texts=texts,
        lengths=list(range(8)),
        records=records,
        results=results,
        group_size=4,
    )
    assert [(r["step"], r["process"], r["study_id"], r["reference"]) for r in rows] == [
        (3, 1, "s0", "ref 0"),
        (3, 1, "s1", "ref 1"),
    ]
    first, second = rows[0]["completions"], rows[1]["completions"]
    assert [c["kind"] for c in first] == ["sample", "sample", "edit", "topup"]
    assert first[2] == {
        "index": 2,
        "kind": "edit",
        "text": "text 2",
        "tokens": 2,
        "reward": 2.0,
        "components": {"ratescore": 0.2},
        "source": 0,
        "ops": ["append"],
        "inserted": [[12, 28]],
    }
    assert "source" not in first[0] and "source" not in first[3]
    assert second[2]["source"] == 1 and second[2]["inserted"] == []  # index within its group
    assert second[3]["reward"] is None
    json.dumps(rows)  # JSON-ready
    columns, table = completions_table(rows)
    assert len(table) == 8 and table[2][columns.index("source")] == 0
    text = markdown_table(columns, [[1, "a|b", None, 0.123456, "x\ny\u2028z\x1c w"]])
    assert text.splitlines()[2] == "| 1 | a\\|b |  | 0.1235 | x y z w |" and len(text.splitlines()) == 3
