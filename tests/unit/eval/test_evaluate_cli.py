"""`editgrpo evaluate` / `compare` from the command line: GREEN from a real HTTP judge (a tiny
OpenAI-compatible Starlette app under uvicorn on 127.0.0.1) and from a tiny random-weight Llama
through transformers, several predictions files side by side, the report's provenance, per-label
table and degenerate-output counts, and the `stage: evaluate` recipe."""

from __future__ import annotations

import contextlib
import html
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from editgrpo.cli import main

# (prediction, reference, judge answer, significant counts, matched, GREEN): the server answers each
# prompt by the candidate report it contains.
CASES = [
    (
        "Small left pleural effusion. Mild cardiomegaly.",
        "Small left pleural effusion. Mild cardiomegaly.",
        "[Clinically Significant Errors]:\nNo errors.\n\n[Clinically Insignificant Errors]:\nNo errors.\n\n"
        "[Matched Findings]:\n2. Effusion; cardiomegaly.",
        (0, 0, 0, 0, 0, 0),
        2,
        1.0,
    ),
    (
        "No pneumothorax. No effusion.",
        "Large right pneumothorax. Left pleural effusion.",
        "[Explanation]:\nMisses both.\n\n[Clinically Significant Errors]:\n"
        "(a) False report of a finding in the candidate: 0.\n"
        "(b) Missing a finding present in the reference: 2. Pneumothorax; effusion.\n"
        "(c) Misidentification of a finding's anatomic location/position: 0.\n"
        "(d) Misassessment of the severity of a finding: 1. Size.\n"
        "(e) Mentioning a comparison that isn't in the reference: 0.\n"
        "(f) Omitting a comparison detailing a change from a prior study: 0.\n\n"
        "[Clinically Insignificant Errors]:\n(a) False report of a finding in the candidate: 1. x.\n\n"
        "[Matched Findings]:\n1. Heart.",
        (0, 2, 0, 1, 0, 0),
        1,
        0.25,
    ),
    (
        "Right lower lobe consolidation.",
        "Right lower lobe consolidation. No pneumothorax.",
        "I cannot follow the format.",  # unparsable: GREEN None for this study, never 0
        None,
        None,
        None,
    ),
]


def _write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _predictions(path: Path, **meta) -> Path:
    rows = [
        {"study_id": f"s{i}", "prediction": p, "reference": r, **meta} for i, (p, r, *_) in enumerate(CASES)
    ]
    return _write(path, rows)


class _JudgeApp:
    """An OpenAI-compatible /v1/completions endpoint answering GREEN texts by candidate report."""

    def __init__(self) -> None:
        self.headers: list[dict] = []

    def app(self):
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        async def completions(request):
            body = await request.json()
            self.headers.append(dict(request.headers))
            candidate = body["prompt"].split("3. Candidate Report:")[1]
            text = next(answer for pred, _, answer, *_ in CASES if pred in candidate)
            return JSONResponse({"object": "text_completion", "choices": [{"index": 0, "text": text}]})

        return Starlette(routes=[Route("/v1/completions", completions, methods=["POST"])])


@contextlib.contextmanager
def _serve(app) -> Iterator[str]:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the judge server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def judge() -> Iterator[tuple[str, _JudgeApp]]:
    state = _JudgeApp()
    with _serve(state.app()) as url:
        yield url, state


def test_green_and_avg7_from_an_http_judge(
    tmp_path: Path, judge, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    url, state = judge
    monkeypatch.setenv("GREEN_TEST_KEY", "sekret")
    preds = _predictions(tmp_path / "p.jsonl")
    out = tmp_path / "eval"
    args = ["evaluate", str(preds), "--out", str(out), "--no-meteor", "--bootstrap", "50"]
    code = main([*args, "--green-judge", url, "--green-judge-key-env", "GREEN_TEST_KEY", "--progress", "on"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "GREEN judge" in captured.err  # the forced progress bar's final state
    assert state.headers and all(h["authorization"] == "Bearer sekret" for h in state.headers)
    records = [json.loads(line) for line in (out / "per_sample.jsonl").read_text().splitlines()]
    for record, (*_, significant, matched, green) in zip(records, CASES, strict=True):
        assert record["scores"]["green"] == (None if green is None else pytest.approx(green))
        if significant is None:
            assert record["green"] is None
        else:
            assert tuple(record["green"]["significant"]) == significant
            assert record["green"]["matched"] == matched
    summary = json.loads((out / "summary.json").read_text())
    column = summary["columns"]["green"]
    assert column["column"] == "GREEN [openai]" and column["n"] == 2
    assert column["value"] == pytest.approx((1.0 + 0.25) / 2)
    assert summary["green_unparsable"] == 1
    assert summary["green_judge"]["url"] == f"{url}/completions"
    assert summary["green_judge"]["api_key_env"] == "GREEN_TEST_KEY"
    assert "sekret" not in (out / "summary.json").read_text() + (out / "report.html").read_text()
    # All 7 clinical columns exist, so Avg(7) is their mean.
    clinical = [summary["columns"][k]["value"] for k in ("chexbert_micro_f1_14", "chexbert_macro_f1_14")]
    assert summary["avg"]["value"] is not None and summary["avg"]["n"] == 2
    assert summary["avg"]["value"] == pytest.approx(
        sum(
            summary["columns"][k]["value"]
            for k in (
                "chexbert_micro_f1_14",
                "chexbert_macro_f1_14",
                "chexbert_micro_f1_5",
                "chexbert_macro_f1_5",
                "radgraph_partial",
                "ratescore",
                "green",
            )
        )
        / 7
    )
    assert all(0 <= v <= 1 for v in clinical)
    assert "GREEN [openai]" in captured.out and "Avg (7 clinical)" in captured.out


def test_green_judge_user_errors(tmp_path: Path, judge, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    url, _ = judge
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    preds = _predictions(tmp_path / "p.jsonl")
    base = ["evaluate", str(preds), "--out", str(tmp_path / "e"), "--no-meteor", "--bootstrap", "20"]
    assert main([*base, "--green-judge", url, "--green-judge-key-env", "NO_SUCH_KEY_VAR"]) == 2
    assert "NO_SUCH_KEY_VAR is not set" in capsys.readouterr().err
    assert main([*base, "--green-judge", url, "--metrics", "chexbert"]) == 2
    assert "add green to --metrics" in capsys.readouterr().err
    assert main([*base, "--metrics", "green"]) == 2
    assert "--green-judge MODEL_OR_URL" in capsys.readouterr().err
    assert main([*base, "--green-judge", str(tmp_path / "no-such-model")]) == 2
    assert "GREEN judge model" in capsys.readouterr().err
    # A dead server: bounded retries, then exit 2 naming the URL.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    assert main([*base, "--green-judge", dead, "--metrics", "green"]) == 2
    assert dead in capsys.readouterr().err


def test_green_from_a_transformers_judge(tmp_path: Path, capsys) -> None:
    """A tiny random-weight Llama runs as the judge through the CLI: its noise cannot be parsed, so
    GREEN is "could not score" for every study (never 0) and Avg(7) says GREEN is missing."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from editgrpo.models.tiny import default_corpus, train_tokenizer

    tokenizer = train_tokenizer(default_corpus(), 300)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    judge_dir = tmp_path / "judge"
    LlamaForCausalLM(config).save_pretrained(judge_dir)
    tokenizer.save_pretrained(judge_dir)
    preds = _predictions(tmp_path / "p.jsonl")
    out = tmp_path / "eval"
    args = ["evaluate", str(preds), "--out", str(out), "--metrics", "chexbert", "green", "--bootstrap", "20"]
    assert main([*args, "--green-judge", str(judge_dir), "--green-max-new-tokens", "4", "--no-report"]) == 0
    capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["green_judge"] == {
        "backend": "transformers",
        "model_name": str(judge_dir),
        "max_new_tokens": 4,
    }
    assert summary["green_unparsable"] == len(CASES)
    assert summary["columns"]["green"]["value"] is None and summary["columns"]["green"]["n"] == 0
    assert "green" in summary["avg"]["missing"]


def test_several_files_side_by_side_with_provenance_and_degenerate_output(tmp_path: Path, capsys) -> None:
    checkpoint = tmp_path / "runs" / "sft" / "checkpoint-7"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 7}))
    generation = {"temperature": 0.0, "max_new_tokens": 64, "engine": "hf"}
    good = _predictions(
        tmp_path / "a" / "preds.jsonl", model=str(checkpoint), split="test", generation=generation
    )
    stutter = "There. There. There."
    bad_rows = [
        {"study_id": "s0", "prediction": stutter, "reference": CASES[0][1]},
        {"study_id": "s1", "prediction": "", "reference": CASES[1][1]},
        {"study_id": "s2", "prediction": stutter, "reference": CASES[2][1]},
    ]
    bad = _write(tmp_path / "b" / "preds.jsonl", bad_rows)
    out = tmp_path / "eval"
    assert main(["evaluate", str(good), str(bad), "--out", str(out), "--no-meteor", "--bootstrap", "30"]) == 0
    printed = capsys.readouterr().out
    # Same stems: the names come from the parent folders.
    assert (out / "a-preds" / "summary.json").is_file() and (out / "b-preds" / "summary.json").is_file()
    assert (out / "table.md").read_text() in printed
    header = next(line for line in printed.splitlines() if line.startswith("| metric"))
    assert header == "| metric | a-preds | b-preds |"
    row = next(line for line in printed.splitlines() if line.startswith("| micro-F1-14"))
    assert row.count("[") == 1 + 2  # the column name's backend + one CI per system
    b_summary = json.loads((out / "b-preds" / "summary.json").read_text())
    degenerate = b_summary["degenerate"]
    assert (degenerate["empty"], degenerate["repeated_sentence"], degenerate["same_report"]) == (1, 2, 2)
    assert degenerate["same_report_texts"] == 1
    assert degenerate["examples"]["same_report"][0] == {
        "prediction": stutter,
        "studies": 2,
        "study_ids": ["s0", "s2"],
    }
    a_summary = json.loads((out / "a-preds" / "summary.json").read_text())
    prov = a_summary["provenance"]
    assert prov["checkpoint"] == {"path": str(checkpoint.resolve()), "global_step": 7}
    assert prov["generation"] == generation and prov["split"] == "test" and prov["editgrpo"]
    assert "model" not in b_summary["provenance"]

    report = (out / "report.html").read_text()
    assert report.count("<h2>a-preds</h2>") == 1 and report.count("<h2>b-preds</h2>") == 1
    assert f"{checkpoint.resolve()} (step 7)" in report
    assert html.escape(json.dumps(generation, sort_keys=True)) in report
    assert "not recorded in the predictions file" in report  # b has no metadata
    assert stutter in report and "a sentence stated twice" in report
    assert "backend: labeler</th><td>chexpert-rules" in report
    # Per-label table: support / predicted counts and precision / recall / F1 per observation.
    assert "<th>support</th><th>predicted</th><th>precision</th><th>recall</th><th>F1</th>" in report


def test_per_label_counts_in_the_report(tmp_path: Path, capsys) -> None:
    from editgrpo.eval.report import per_label_stats

    preds = _predictions(tmp_path / "p.jsonl")
    out = tmp_path / "eval"
    assert (
        main(["evaluate", str(preds), "--out", str(out), "--metrics", "chexbert", "--bootstrap", "20"]) == 0
    )
    capsys.readouterr()
    records = [json.loads(line) for line in (out / "per_sample.jsonl").read_text().splitlines()]
    stats = {row["label"]: row for row in per_label_stats(records)}
    # References: effusion in s0 and s1, pneumothorax in s1, consolidation in s2; predictions:
    # effusion in s0 only ("No effusion." is negative), consolidation in s2.
    effusion = stats["Pleural Effusion"]
    assert (effusion["support"], effusion["predicted"], effusion["tp"]) == (2, 1, 1)
    assert effusion["precision"] == 1.0 and effusion["recall"] == 0.5
    assert effusion["f1"] == pytest.approx(2 / 3)
    assert stats["Pneumothorax"]["predicted"] == 0 and stats["Pneumothorax"]["precision"] is None
    report = (out / "report.html").read_text()
    assert '<td>Pleural Effusion</td><td class="num">2</td><td class="num">1</td>' in report


def test_evaluate_recipe(tmp_path: Path, capsys) -> None:
    preds = _predictions(tmp_path / "p.jsonl")
    recipe = tmp_path / "eval.yaml"
    recipe.write_text(
        f"stage: evaluate\npredictions: [{preds}]\noutput_dir: {tmp_path / 'out'}\n"
        "metrics: [chexbert, lexical]\nbootstrap_samples: 40\nmeteor: false\nreport: false\n"
    )
    assert main(["evaluate", "--recipe", str(recipe), "seed=3"]) == 0
    capsys.readouterr()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["bootstrap"] == {"n_resamples": 40, "confidence": 0.95, "seed": 3, "unit": "study"}
    assert "radgraph_partial" not in summary["columns"] and not (tmp_path / "out" / "report.html").exists()
    # Flags beside a recipe are refused (one source of settings); a bad field names the fix.
    assert main(["evaluate", "--recipe", str(recipe), "--bootstrap", "5"]) == 2
    assert "--bootstrap with --recipe" in capsys.readouterr().err
    assert main(["evaluate", "--recipe", str(recipe), "metrics=[chexbrt]"]) == 2
    assert "did you mean 'chexbert'" in capsys.readouterr().err
    assert main(["evaluate", str(preds), "bootstrap_samples=3", "--out", str(tmp_path / "x")]) == 2
    assert "overrides need --recipe" in capsys.readouterr().err
