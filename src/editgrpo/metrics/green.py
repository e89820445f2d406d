"""GREEN (Ostmeier et al., EMNLP Findings 2024), the pure half: judge prompt, output parser, formula.

Reference: Stanford-AIMI/GREEN at d72c195 (the newest snapshot), ``green_score/utils.py``
(``make_prompt``, ``clean_responses``) and ``green_score/green.py`` (``GREEN.compute_green``,
``GREEN.parse_error_counts``); METRICS.md, "GREEN". The judge LLM that turns a prompt into an output
lives in ``annotators/green_judge.py`` (ARCHITECTURE.md house rule 4); ``judge`` below only wires a
backend given by the caller between the prompt and the parser, so this module imports no annotator.

Protocol facts kept identical to upstream:
- Prompt: ``make_prompt(reference, candidate)``, both reports cut to their first 300 words
  (``" ".join(text.split()[:300])``, which also collapses whitespace; ``max_len=300`` since
  upstream commit 33a374d) and placed in a fixed instruction text (``PROMPT_TEMPLATE``).
- Output sections ``[Clinically Significant Errors]:``, ``[Clinically Insignificant Errors]:`` and
  ``[Matched Findings]:``; a section is the text after its header up to the first blank line (or
  the end): ``\\[<name>\\]:\\s*(.*?)(?:\\n\\s*\\n|\\Z)`` with DOTALL.
- A section whose text starts with "No" counts zero (e.g. "No errors.").
- Error sections: lines matching ``\\([a-f]\\) .*`` anywhere in the section; the count of a letter is
  the first integer preceded by ": " and followed by "." (``(?<=: )\\b\\d+\\b(?=\\.)``); a letter
  without such a number, or without a line, counts 0; a repeated letter keeps its last line (upstream
  loops over the sorted lines). When no lettered line exists, ``(1)``..``(6)`` lines are read instead
  (upstream's GPT-4 template).
- Matched findings: the integer at the very start of the section text, followed by "."
  (``^\\b\\d+\\b(?=\\.)``).
- GREEN = matched / (matched + sum of the six significant counts); 0 when matched = 0.

Where we differ (house rule 5, "could not score" is None, never a silent 0): upstream's
``compute_green`` reads a missing section as all zeros, so an output without the format scores 0
(its ``parse_error_counts(..., for_reward=True)`` returns None for a missing section; we follow that). Here
``parse_green_output`` returns None when (1) any of the three sections is missing, (2) an error
section neither starts with "No" nor has one (a)-(f) / (1)-(6) line, or (3) the matched section
neither starts with "No" nor with "<integer>.". An output whose three sections each start with
"No" or carry their counts scores the same as upstream; upstream gives 0 to the rest.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

MAX_WORDS = 300  # make_prompt(max_len=300): words kept of each report

SIGNIFICANT = "Clinically Significant Errors"
INSIGNIFICANT = "Clinically Insignificant Errors"
MATCHED = "Matched Findings"
SECTIONS: tuple[str, str, str] = (SIGNIFICANT, INSIGNIFICANT, MATCHED)

# The six error categories (upstream GREEN.sub_categories, letters (a)..(f)).
ERROR_CATEGORIES: tuple[str, ...] = (
    "False report of a finding in the candidate",
    "Missing a finding present in the reference",
    "Misidentification of a finding's anatomic location/position",
    "Misassessment of the severity of a finding",
    "Mentioning a comparison that isn't in the reference",
    "Omitting a comparison detailing a change from a prior study",
)
_LETTERS = "abcdef"

# The instruction text of upstream make_prompt, line by line: every line after the first is indented
# by four spaces there, blank lines are empty, and the text ends with a newline.
_PROMPT_LINES: tuple[str, ...] = (
    "Objective: Evaluate the accuracy of a candidate radiology report in comparison to a reference "
    "radiology report composed by expert radiologists.",
    "",
    "Process Overview: You will be presented with:",
    "",
    "1. The criteria for making a judgment.",
    "2. The reference radiology report.",
    "3. The candidate radiology report.",
    "4. The desired format for your assessment.",
    "",
    "1. Criteria for Judgment:",
    "",
    "For each candidate report, determine:",
    "",
    "The count of clinically significant errors.",
    "The count of clinically insignificant errors.",
    "",
    "Errors can fall into one of these categories:",
    "",
    *(f"{letter}) {name}." for letter, name in zip(_LETTERS, ERROR_CATEGORIES, strict=True)),
    "Note: Concentrate on the clinical findings rather than the report's writing style. Evaluate only "
    "the findings that appear in both reports.",
    "",
    "2. Reference Report:",
    "{reference}",
    "",
    "3. Candidate Report:",
    "{candidate}",
    "",
    "4. Reporting Your Assessment:",
    "",
    "Follow this specific format for your output, even if no errors are found:",
    "```",
    "[Explanation]:",
    "<Explanation>",
    "",
    f"[{SIGNIFICANT}]:",
    "(a) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>",
    "....",
    "(f) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>",
    "",
    f"[{INSIGNIFICANT}]:",
    "(a) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>",
    "....",
    "(f) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>",
    "",
    f"[{MATCHED}]:",
    "<The number of matched findings>. <Finding 1>; <Finding 2>; ...; <Finding n>",
    "```",
)
PROMPT_TEMPLATE = (
    "\n".join(("    " + line) if line else "" for line in _PROMPT_LINES).removeprefix("    ") + "\n"
)

_SECTION_RES = {
    name: re.compile(rf"\[{re.escape(name)}\]:\s*(.*?)(?:\n\s*\n|\Z)", re.DOTALL) for name in SECTIONS
}
_LETTER_LINE_RE = re.compile(r"\([a-f]\) .*")
_NUMBER_LINE_RE = re.compile(r"\([1-6]\) .*")
_LINE_COUNT_RE = re.compile(r"(?<=: )\b\d+\b(?=\.)")
_MATCHED_COUNT_RE = re.compile(r"^\b\d+\b(?=\.)")


@dataclass(frozen=True)
class GreenParse:
    """The counts of one judge output: six significant and six insignificant error counts in the
    order (a)..(f) of ``ERROR_CATEGORIES``, and the number of matched findings."""

    significant: tuple[int, int, int, int, int, int]
    insignificant: tuple[int, int, int, int, int, int]
    matched: int


class JudgeBackend(Protocol):
    """What ``judge`` needs of a backend (``annotators.green_judge``): prompts in, raw outputs out."""

    def generate(self, prompts: Sequence[str]) -> list[str]: ...


def truncate_words(text: str, max_words: int = MAX_WORDS) -> str:
    """The first ``max_words`` whitespace-separated words of ``text``, joined by single spaces."""
    return " ".join(text.split()[:max_words])


def build_green_prompt(reference: str, candidate: str, max_words: int = MAX_WORDS) -> str:
    """The judge prompt of upstream ``make_prompt(reference, candidate)``; both reports are cut to
    their first ``max_words`` words (300 upstream)."""
    if not isinstance(reference, str) or not isinstance(candidate, str):
        raise TypeError(
            f"build_green_prompt takes two report strings, got {type(reference).__name__} and "
            f"{type(candidate).__name__}"
        )
    return PROMPT_TEMPLATE.format(
        reference=truncate_words(reference, max_words), candidate=truncate_words(candidate, max_words)
    )


def clean_output(text: str) -> str:
    """Upstream ``clean_responses``: keep the text after the last ``<|assistant|>``, cut at
    ``[Explanation]:`` (the part after its first occurrence when the output copies the template's
    ``[Explanation]:\\n    <Explanation>\\n``, else after its last), drop ``</s>`` and ``<unk>``.
    (Upstream's condition ``("..." or "...") in response`` tests only the first string.)"""
    if "[Explanation]:" in text:
        if "<|assistant|>" in text:
            text = text.split("<|assistant|>")[-1]
        if "[Explanation]:\n    <Explanation>\n" in text:
            text = text.split("[Explanation]:")[1]
        else:
            text = text.split("[Explanation]:")[-1]
    if "<|assistant|>" in text:
        text = text.split("<|assistant|>")[-1]
    return text.replace("</s>", "").replace("<unk>", "")


def _section(text: str, name: str) -> str | None:
    match = _SECTION_RES[name].search(text)
    return None if match is None else match.group(1)


def _error_counts(section: str) -> tuple[int, int, int, int, int, int] | None:
    if section.startswith("No"):
        return (0, 0, 0, 0, 0, 0)
    lines = sorted(_LETTER_LINE_RE.findall(section))
    prefixes = [f"({letter}) " for letter in _LETTERS]
    if not lines:  # upstream's fallback for the GPT-4 template, numbered (1)..(6)
        lines = sorted(_NUMBER_LINE_RE.findall(section))
        prefixes = [f"({i}) " for i in range(1, 7)]
    if not lines:
        return None
    counts = [0] * 6
    for position, prefix in enumerate(prefixes):
        for line in lines:  # a repeated letter keeps its last line, as upstream
            if line.startswith(prefix):
                found = _LINE_COUNT_RE.findall(line)
                if found:
                    counts[position] = int(found[0])
    return (counts[0], counts[1], counts[2], counts[3], counts[4], counts[5])


def parse_green_output(text: object) -> GreenParse | None:
    """The counts of a judge output in the published format, or None when it cannot be read (see
    the module docstring for the rules); a non-string (no output) is None."""
    if not isinstance(text, str):
        return None
    text = clean_output(text)
    sections = {name: _section(text, name) for name in SECTIONS}
    if any(section is None for section in sections.values()):
        return None
    significant = _error_counts(sections[SIGNIFICANT] or "")
    insignificant = _error_counts(sections[INSIGNIFICANT] or "")
    matched_text = sections[MATCHED] or ""
    if matched_text.startswith("No"):
        matched: int | None = 0
    else:
        found = _MATCHED_COUNT_RE.findall(matched_text)
        matched = int(found[0]) if found else None
    if significant is None or insignificant is None or matched is None:
        return None
    return GreenParse(significant=significant, insignificant=insignificant, matched=matched)


def green_score(parse: GreenParse) -> float:
    """GREEN = matched / (matched + sum of significant errors); 0.0 when matched = 0."""
    if parse.matched == 0:
        return 0.0
    return parse.matched / (parse.matched + sum(parse.significant))


def score_output(text: object) -> float | None:
    """GREEN of one raw judge output; None when it cannot be parsed."""
    parse = parse_green_output(text)
    return None if parse is None else green_score(parse)


def green_summary(parses: Sequence[GreenParse | None]) -> dict[str, Any]:
    """Corpus summary: ``mean`` GREEN over the parsed outputs (NaN when none parsed), ``n_parsed``,
    ``n_unparsable`` (None entries, left out of the mean)."""
    scores = [green_score(p) for p in parses if p is not None]
    return {
        "mean": math.fsum(scores) / len(scores) if scores else math.nan,
        "n_parsed": len(scores),
        "n_unparsable": len(parses) - len(scores),
    }


def judge(
    backend: JudgeBackend | Callable[[Sequence[str]], list[str]],
    references: Sequence[str],
    candidates: Sequence[str],
) -> list[GreenParse | None]:
    """Prompt each (reference, candidate) pair, run ``backend`` (an object with ``generate(prompts)``
    such as ``annotators.green_judge.TransformersJudge``, or a plain callable) and parse its outputs;
    None for an output that cannot be parsed."""
    if isinstance(references, str) or isinstance(candidates, str):
        raise TypeError("judge() takes sequences of reports, not one string")
    if len(references) != len(candidates):
        raise ValueError(f"{len(references)} references but {len(candidates)} candidates")
    prompts = [build_green_prompt(r, c) for r, c in zip(references, candidates, strict=True)]
    generate = backend.generate if hasattr(backend, "generate") else backend
    outputs = generate(prompts) if prompts else []
    if len(outputs) != len(prompts):
        raise RuntimeError(f"the GREEN judge returned {len(outputs)} outputs for {len(prompts)} prompts")
    return [parse_green_output(output) for output in outputs]
