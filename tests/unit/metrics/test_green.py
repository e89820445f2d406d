"""GREEN's pure half: the judge prompt, the parser of judge outputs, the formula and the summary."""

from __future__ import annotations

import hashlib
import math

import pytest

from editgrpo.metrics.green import (
    ERROR_CATEGORIES,
    GreenParse,
    build_green_prompt,
    clean_output,
    green_score,
    green_summary,
    judge,
    parse_green_output,
    score_output,
)


def judge_output(significant, matched, insignificant=(0, 0, 0, 0, 0, 0), explanation="Hand-written."):
    """A judge output in the published format (count, a period, then the findings of the line)."""

    def block(counts):
        return "\n".join(
            f"({letter}) {name}: {n}." + (" " + "; ".join(f"finding {k}" for k in range(n)) if n else "")
            for letter, name, n in zip("abcdef", ERROR_CATEGORIES, counts, strict=True)
        )

    found = f"{matched}." + (" " + "; ".join(f"match {k}" for k in range(matched)) if matched else "")
    return (
        f"\n{explanation}\n\n[Clinically Significant Errors]:\n{block(significant)}\n\n"
        f"[Clinically Insignificant Errors]:\n{block(insignificant)}\n\n[Matched Findings]:\n{found}"
    )


# METRICS.md "GREEN": (a..f significant, matched) -> GREEN, the five reference parses.
REFERENCE_PARSES = [
    ((2, 3, 0, 1, 0, 0), 0, 0.0),
    ((2, 1, 2, 0, 0, 0), 1, 1 / 6),
    ((0, 2, 1, 1, 0, 0), 2, 1 / 3),
    ((1, 0, 0, 0, 0, 0), 1, 0.5),
    ((1, 0, 1, 1, 0, 0), 1, 0.25),
]


@pytest.mark.parametrize(("significant", "matched", "expected"), REFERENCE_PARSES)
def test_reference_parses_reproduce_metrics_md(significant, matched, expected) -> None:
    parse = parse_green_output(judge_output(significant, matched))
    assert parse == GreenParse(significant=significant, insignificant=(0,) * 6, matched=matched)
    assert green_score(parse) == pytest.approx(expected, abs=1e-12)
    assert round(green_score(parse), 5) == round(expected, 5)


def test_formula_by_hand() -> None:
    # 3 / (3 + 1 + 2) = 0.5; insignificant errors do not count
    parse = GreenParse(significant=(1, 0, 0, 0, 0, 2), insignificant=(5, 5, 5, 5, 5, 5), matched=3)
    assert green_score(parse) == 0.5
    assert green_score(GreenParse((0,) * 6, (0,) * 6, 0)) == 0.0  # no match: 0, not a division by zero
    assert green_score(GreenParse((0,) * 6, (0,) * 6, 4)) == 1.0


def test_insignificant_counts_are_parsed() -> None:
    parse = parse_green_output(judge_output((0,) * 6, 2, insignificant=(0, 1, 0, 0, 3, 0)))
    assert parse is not None and parse.insignificant == (0, 1, 0, 0, 3, 0)


def test_extra_whitespace_and_crlf_free_indentation() -> None:
    text = (
        "Some explanation.\n\n[Clinically Significant Errors]:   \n"
        "   (a) False report of a finding in the candidate: 1.   effusion\n"
        "   (b) Missing a finding present in the reference: 0.\n"
        "   (c) Misidentification of a finding's anatomic location/position: 2. a; b\n"
        "\n  \n"
        "[Clinically Insignificant Errors]:\n(a) False report of a finding in the candidate: 0.\n\n"
        "[Matched Findings]:\n\n   3. heart; lungs; bones\n"
    )
    parse = parse_green_output(text)
    assert parse == GreenParse((1, 0, 2, 0, 0, 0), (0,) * 6, 3)
    assert green_score(parse) == 0.5


def test_no_entries_count_zero() -> None:
    text = (
        "[Clinically Significant Errors]:\nNo clinically significant errors.\n\n"
        "[Clinically Insignificant Errors]:\nNone.\n\n"
        "[Matched Findings]:\n2. Cardiomegaly; effusion."
    )
    assert parse_green_output(text) == GreenParse((0,) * 6, (0,) * 6, 2)
    assert score_output(text) == 1.0
    no_match = text.replace("2. Cardiomegaly; effusion.", "No matched findings.")
    assert parse_green_output(no_match) == GreenParse((0,) * 6, (0,) * 6, 0)
    assert score_output(no_match) == 0.0


def test_a_line_without_a_number_counts_zero_as_upstream() -> None:
    text = judge_output((1, 1, 0, 0, 0, 0), 1).replace(
        "(b) Missing a finding present in the reference: 1. finding 0",
        "(b) Missing a finding present in the reference: No.",
    )
    parse = parse_green_output(text)
    assert parse is not None and parse.significant == (1, 0, 0, 0, 0, 0)


def test_lines_out_of_order_and_numbered_template() -> None:
    shuffled = (
        "[Clinically Significant Errors]:\n(c) Misidentification: 1. x\n(a) False report: 2. y; z\n\n"
        "[Clinically Insignificant Errors]:\nNo errors.\n\n[Matched Findings]:\n1. w"
    )
    assert parse_green_output(shuffled) == GreenParse((2, 0, 1, 0, 0, 0), (0,) * 6, 1)
    numbered = shuffled.replace("(c)", "(3)").replace("(a)", "(1)")
    assert parse_green_output(numbered) == GreenParse((2, 0, 1, 0, 0, 0), (0,) * 6, 1)


@pytest.mark.parametrize("missing", ["[Clinically Significant Errors]:", "[Matched Findings]:"])
def test_missing_section_is_none(missing: str) -> None:
    text = judge_output((1, 0, 0, 0, 0, 0), 1).replace(missing, "[Something Else]:")
    assert parse_green_output(text) is None
    assert score_output(text) is None


def test_missing_insignificant_section_is_none() -> None:
    text = judge_output((1, 0, 0, 0, 0, 0), 1).replace("[Clinically Insignificant Errors]:", "")
    assert parse_green_output(text) is None


def test_sections_without_counts_are_none() -> None:
    no_lines = (
        "[Clinically Significant Errors]:\nseveral errors\n\n[Clinically Insignificant Errors]:\nNo.\n\n"
        "[Matched Findings]:\n1. x"
    )
    assert parse_green_output(no_lines) is None
    no_matched_count = judge_output((1, 0, 0, 0, 0, 0), 1).replace(
        "[Matched Findings]:\n1.", "[Matched Findings]:\none."
    )
    assert parse_green_output(no_matched_count) is None


@pytest.mark.parametrize("garbage", ["", "   ", "lorem ipsum dolor", "ĠĠthe the 0. 1. (a) x: 2.", None, 3])
def test_garbage_is_none(garbage) -> None:
    assert parse_green_output(garbage) is None


def test_clean_output_drops_chat_markers() -> None:
    text = "<|user|>\nprompt</s>\n<|assistant|>\n" + judge_output((1, 0, 0, 0, 0, 0), 1) + "</s>"
    assert "<|assistant|>" not in clean_output(text) and "</s>" not in clean_output(text)
    assert score_output(text) == 0.5
    assert clean_output("a<unk>b") == "ab"


def test_prompt_is_the_published_text() -> None:
    reference = "The heart is normal in size. No pleural effusion."
    candidate = "Mild cardiomegaly.  No effusion."
    prompt = build_green_prompt(reference, candidate)
    # sha256 of upstream make_prompt(reference, candidate) (Stanford-AIMI/GREEN green_score/utils.py)
    assert (
        hashlib.sha256(prompt.encode()).hexdigest()
        == "447784b9024bb9c308204301afb27e7432981338ddf3691f041da0928f92c8f0"
    )
    assert prompt.startswith("Objective: Evaluate the accuracy of a candidate radiology report")
    assert "    2. Reference Report:\n    The heart is normal in size. No pleural effusion.\n" in prompt
    assert "    3. Candidate Report:\n    Mild cardiomegaly. No effusion.\n" in prompt  # whitespace collapsed
    assert prompt.endswith("<Finding n>\n    ```\n")


def test_prompt_truncates_reports_to_300_words() -> None:
    long = " ".join(f"w{i}" for i in range(400))
    prompt = build_green_prompt(long, "short")
    assert "w299 " not in prompt and "w299\n" in prompt and "w300" not in prompt
    with pytest.raises(TypeError, match="two report strings"):
        build_green_prompt(None, "x")  # type: ignore[arg-type]


def test_summary_counts_unparsable_and_leaves_them_out() -> None:
    parses = [parse_green_output(judge_output(s, m)) for s, m, _ in REFERENCE_PARSES] + [None, None]
    summary = green_summary(parses)
    assert summary["n_parsed"] == 5 and summary["n_unparsable"] == 2
    assert summary["mean"] == pytest.approx((0 + 1 / 6 + 1 / 3 + 0.5 + 0.25) / 5)
    empty = green_summary([None])
    assert math.isnan(empty["mean"]) and empty["n_parsed"] == 0 and empty["n_unparsable"] == 1


def test_judge_wires_prompt_backend_and_parser() -> None:
    seen: list[str] = []

    def backend(prompts):
        seen.extend(prompts)
        return [judge_output((1, 0, 0, 0, 0, 0), 1), "garbage"]

    result = judge(backend, ["ref one", "ref two"], ["cand one", "cand two"])
    assert seen == [build_green_prompt("ref one", "cand one"), build_green_prompt("ref two", "cand two")]
    assert result[0] == GreenParse((1, 0, 0, 0, 0, 0), (0,) * 6, 1) and result[1] is None
    assert judge(backend, [], []) == []
    with pytest.raises(ValueError, match="2 references but 1 candidates"):
        judge(backend, ["a", "b"], ["c"])
    with pytest.raises(RuntimeError, match="returned 2 outputs for 1 prompts"):
        judge(backend, ["a"], ["c"])
