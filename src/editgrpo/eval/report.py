"""An offline, self-contained HTML report of one evaluation (``evaluate``'s output folder).

``write_report(out_dir)`` reads ``summary.json`` and ``per_sample.jsonl`` and writes
``report.html``: no network at view time (charts are PNG data URIs, CSS is inline, no JavaScript),
so the file can be mailed or archived and opened anywhere.

Sections:

- the metrics table: the same rows as ``table.md`` (backend-named columns, CI, n; a missing column
  says why) and the cleaning / lexical-convention / CI notes of the summary;
- bar charts with the confidence-interval error bars of the summary: one for the clinical columns
  (CheXbert F1, RadGraph, RaTEScore, GREEN, Avg; all in [0, 1]), one for the lexical
  columns in [0, 1] (BLEU, ROUGE-L, METEOR) and one for CIDEr-D (not bounded by 1, own scale);
- per-label F1 over the 14 CheXpert observations, recomputed from the per-study binary label
  vectors that ``evaluate`` writes (``labels.prediction`` / ``labels.reference``, uncertain counted
  as positive); labels that are positive in neither set have no F1 and are marked "n/a"; without
  label vectors (CheXbert not computed) the chart is left out with a note;
- provenance (``summary["provenance"]``, from ``eval/quality.provenance``: model, checkpoint and
  its step, dataset, split, generation settings, editgrpo version) with the backends and the judge;
- degenerate output (``summary["degenerate"]``: empty, a sentence stated twice, the same report for
  different studies) with examples;
- per-label support / predicted / precision / recall / F1 (``per_label_stats``);
- the N worst-scoring studies, prediction beside reference (HTML-escaped).

``write_multi_report`` puts several evaluations (``evaluate_many``) on one page behind a
side-by-side table; ``compare_html`` is ``compare``'s table as a page. Files are written atomically. Ranking: the mean of the
  per-study clinical scores the study has (CheXbert pair micro-F1 over 14 labels, RadGraph partial,
  RaTEScore, GREEN; None = not scored, left out of the mean); a study with none of them falls back
  to ROUGE-L; ties keep the file order.

matplotlib is imported inside the chart function and set to the Agg backend there, so importing
this module has no side effect and needs no display.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from editgrpo.text.observations import CHEXPERT_14

# Per-study scores averaged to rank the worst examples (module docstring).
RANK_SCORES: tuple[str, ...] = ("chexbert_pair_micro_f1_14", "radgraph_partial", "ratescore", "green")
_LEXICAL_PREFIXES = ("bleu_", "rouge_l", "meteor")

_CSS = """
body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1150px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #bbb; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #eee; }
td.num { text-align: right; font-family: monospace; }
td.missing { color: #a33; }
.note { color: #555; font-size: 13px; }
.pair td { white-space: pre-wrap; font-size: 13px; }
.pair td + td { width: 42%; }
img { max-width: 100%; border: 1px solid #ddd; margin: 6px 0; }
table.degen td { font-size: 13px; } table.degen td:last-child { white-space: pre-wrap; }
table.prov th { text-align: left; font-weight: normal; width: 220px; }
"""


def _read(out_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    summary_path, per_sample_path = out_dir / "summary.json", out_dir / "per_sample.jsonl"
    for path in (summary_path, per_sample_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found; run `evaluate` into {out_dir} first")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    records = [
        json.loads(line) for line in per_sample_path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    return summary, records


def _fmt(value: float | None) -> str:
    return "missing" if value is None else f"{value:.4f}"


def _entries(summary: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [*summary["columns"].items(), ("avg", summary["avg"])]


def _missing_text(entry: Mapping[str, Any]) -> str:
    why = entry["missing"]
    return f"missing: {', '.join(why)}" if isinstance(why, list) else f"missing ({why})"


def _table_html(summary: Mapping[str, Any]) -> str:
    pct = round(100 * summary["bootstrap"]["confidence"])
    boot = summary["bootstrap"]
    notes = [
        f"studies: {summary['n']} (rejected: {summary['n_rejected']})",
        f"cleaning: {summary['clean']}",
        f"lexical convention: {summary.get('lexical_convention', 'not computed')}",
        f"CIs: {pct}% percentile bootstrap over studies, {boot['n_resamples']} resamples, seed {boot['seed']}; "
        "CheXbert F1 and BLEU recomputed per resample",
        f"CIDEr: {summary.get('cider_ci', 'n/a')}",
        f"METEOR: {summary.get('meteor_estimate', 'n/a')}",
    ]
    if summary.get("backends"):
        notes.append("backends: " + ", ".join(f"{k} = {v}" for k, v in summary["backends"].items()))
    rows = [f"<tr><th>metric</th><th>value</th><th>{pct}% CI</th><th>n</th></tr>"]
    for _, entry in _entries(summary):
        name = html.escape(str(entry["column"]))
        if entry["value"] is None:
            rows.append(
                f'<tr><td>{name}</td><td class="missing" colspan="3">{html.escape(_missing_text(entry))}</td></tr>'
            )
        else:
            rows.append(
                f'<tr><td>{name}</td><td class="num">{_fmt(entry["value"])}</td>'
                f'<td class="num">[{_fmt(entry["low"])}, {_fmt(entry["high"])}]</td>'
                f'<td class="num">{entry["n"]}</td></tr>'
            )
    items = "".join(f"<li>{html.escape(note)}</li>" for note in notes)
    return f"<ul class='note'>{items}</ul>\n<table>{''.join(rows)}</table>"


def per_label_stats(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]] | None:
    """Per CheXpert label over the studies with label vectors: ``support`` (references positive),
    ``predicted`` (predictions positive), ``tp``, ``precision`` (None when nothing was predicted),
    ``recall`` (None without support) and ``f1`` (None when positive in neither set); None when no
    record carries label vectors."""
    tp = [0] * len(CHEXPERT_14)
    fp = [0] * len(CHEXPERT_14)
    fn = [0] * len(CHEXPERT_14)
    seen = False
    for record in records:
        labels = record.get("labels") or {}
        hyp, ref = labels.get("prediction"), labels.get("reference")
        if hyp is None or ref is None:
            continue
        seen = True
        for i, (h, r) in enumerate(zip(hyp, ref, strict=True)):
            tp[i] += bool(h and r)
            fp[i] += bool(h and not r)
            fn[i] += bool(r and not h)
    if not seen:
        return None
    out = []
    for name, t, p, n in zip(CHEXPERT_14, tp, fp, fn, strict=True):
        out.append(
            {
                "label": name,
                "support": t + n,
                "predicted": t + p,
                "tp": t,
                "precision": t / (t + p) if t + p else None,
                "recall": t / (t + n) if t + n else None,
                "f1": 2 * t / (2 * t + p + n) if 2 * t + p + n else None,
            }
        )
    return out


def per_label_f1(records: Sequence[Mapping[str, Any]]) -> list[float | None] | None:
    """F1 of each of the 14 CheXpert labels over the studies with label vectors (None for a label
    positive in neither predictions nor references); None when no record carries label vectors."""
    stats = per_label_stats(records)
    return None if stats is None else [row["f1"] for row in stats]


def rank_score(record: Mapping[str, Any]) -> float | None:
    """The worst-example ranking score of one study (module docstring)."""
    scores = record.get("scores") or {}
    values = [scores[k] for k in RANK_SCORES if isinstance(scores.get(k), int | float)]
    values = [v for v in values if not math.isnan(v)]
    if values:
        return sum(values) / len(values)
    rouge = scores.get("rouge_l")
    return float(rouge) if isinstance(rouge, int | float) else None


def worst_examples(records: Sequence[Mapping[str, Any]], n: int) -> list[tuple[float, Mapping[str, Any]]]:
    """The ``n`` lowest-ranked studies as (score, record), lowest first; unscored studies left out."""
    scored = [(s, r) for r in records if (s := rank_score(r)) is not None]
    return sorted(scored, key=lambda pair: pair[0])[:n]


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _charts(summary: Mapping[str, Any], label_f1: list[float | None] | None) -> dict[str, str]:
    """Chart name -> PNG data URI (matplotlib on the Agg backend, chosen here, not at import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pct = round(100 * summary["bootstrap"]["confidence"])
    groups: dict[str, list[dict[str, Any]]] = {"clinical": [], "lexical": [], "CIDEr-D": []}
    for key, entry in _entries(summary):
        if entry["value"] is None:
            continue
        group = (
            "CIDEr-D" if key == "cider" else "lexical" if key.startswith(_LEXICAL_PREFIXES) else "clinical"
        )
        groups[group].append(entry)
    charts: dict[str, str] = {}
    for group, entries in groups.items():
        if not entries:
            continue
        values = [e["value"] for e in entries]
        low = [max(0.0, e["value"] - e.get("low", e["value"])) for e in entries]
        high = [max(0.0, e.get("high", e["value"]) - e["value"]) for e in entries]
        fig, ax = plt.subplots(figsize=(9, 0.45 * len(entries) + 1.2))
        positions = list(range(len(entries)))
        ax.barh(positions, values, xerr=[low, high], capsize=4, color="#4c72b0", ecolor="#222")
        ax.set_yticks(positions, [str(e["column"]) for e in entries])
        ax.invert_yaxis()
        ax.set_xlabel(f"value ({pct}% bootstrap CI)")
        ax.set_title(f"{group[0].upper()}{group[1:]} metrics")
        if group != "CIDEr-D":
            ax.set_xlim(0, 1.05)
        ax.grid(axis="x", alpha=0.3)
        charts[group] = _png(fig)
        plt.close(fig)
    if label_f1 is not None:
        fig, ax = plt.subplots(figsize=(9, 6.5))
        positions = list(range(len(CHEXPERT_14)))
        ax.barh(positions, [0.0 if v is None else v for v in label_f1], color="#55a868")
        for y, v in zip(positions, label_f1, strict=True):
            ax.text(0.01 if v is None else v + 0.01, y, "n/a" if v is None else f"{v:.2f}", va="center")
        ax.set_yticks(positions, list(CHEXPERT_14))
        ax.invert_yaxis()
        ax.set_xlim(0, 1.12)
        ax.set_xlabel("F1 (uncertain as positive; n/a = positive in neither set)")
        ax.set_title("Per-label F1, 14 CheXpert observations")
        ax.grid(axis="x", alpha=0.3)
        charts["labels"] = _png(fig)
        plt.close(fig)
    return charts


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def _e(value: Any) -> str:
    return html.escape(str(value))


def _provenance_html(summary: Mapping[str, Any]) -> str:
    """Where the predictions came from and what scored them (``eval/quality.provenance``)."""
    prov = dict(summary.get("provenance") or {})
    rows: list[tuple[str, Any]] = [("predictions file", prov.get("predictions", summary["predictions"]))]
    rows.append(("model", prov.get("model", "not recorded in the predictions file")))
    checkpoint = prov.get("checkpoint")
    if checkpoint:
        step = checkpoint.get("global_step")
        rows.append(("checkpoint", checkpoint["path"] + (f" (step {step})" if step is not None else "")))
    for name in ("dataset", "split", "section"):
        if name in prov:
            rows.append((name, prov[name]))
    generation = prov.get("generation")
    if generation is None:
        rows.append(("generation settings", "not recorded in the predictions file"))
    else:
        rows.append(("generation settings", json.dumps(generation, sort_keys=True)))
    rows.append(("editgrpo version", prov.get("editgrpo", "unknown")))
    for name, value in (summary.get("backends") or {}).items():
        rows.append((f"backend: {name}", value))
    if summary.get("green_judge"):
        judge = summary["green_judge"]
        rows.append(("GREEN judge", ", ".join(f"{k} = {v}" for k, v in judge.items())))
        rows.append(("GREEN outputs not parsed", summary.get("green_unparsable", 0)))
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<table class='prov'>{body}</table>"


def _label_table_html(stats: list[dict[str, Any]]) -> str:
    head = "<tr><th>observation</th><th>support</th><th>predicted</th><th>precision</th><th>recall</th><th>F1</th></tr>"
    rows = [head]
    for row in stats:
        cells = [f'<td class="num">{row[k]}</td>' for k in ("support", "predicted")]
        cells += [
            f'<td class="num">{"n/a" if row[k] is None else f"{row[k]:.3f}"}</td>'
            for k in ("precision", "recall", "f1")
        ]
        rows.append(f"<tr><td>{_e(row['label'])}</td>{''.join(cells)}</tr>")
    return (
        "<p class='note'>support: references positive; predicted: predictions positive (uncertain "
        "counted as positive); n/a: nothing to divide by.</p>" + f"<table>{''.join(rows)}</table>"
    )


def _degenerate_html(summary: Mapping[str, Any]) -> str:
    found = summary.get("degenerate")
    if not found:
        return "<p class='note'>Not computed for this evaluation.</p>"
    n = max(1, found["n"])
    kinds = (
        ("empty", "empty report", found["empty"]),
        ("repeated_sentence", "a sentence stated twice", found["repeated_sentence"]),
        (
            "same_report",
            f"the same report as another study ({found['same_report_texts']} distinct texts)",
            found["same_report"],
        ),
    )
    rows = ["<tr><th>kind</th><th>studies</th><th>share</th><th>examples</th></tr>"]
    for key, text, count in kinds:
        examples = found["examples"].get(key) or []
        if key == "same_report":
            shown = "<br>".join(
                f"{_e(ex['studies'])} studies ({_e(', '.join(ex['study_ids']))}): {_e(ex['prediction'])}"
                for ex in examples
            )
        else:
            shown = "<br>".join(
                f"{_e(ex['study_id'])}: {_e(repr(ex['prediction']) if key == 'empty' else ex['prediction'])}"
                for ex in examples
            )
        flag = " missing" if count else ""  # a non-zero count is drawn in the warning colour
        rows.append(
            f'<tr><td>{_e(text)}</td><td class="num{flag}">{count}</td>'
            f'<td class="num">{count / n:.1%}</td><td>{shown}</td></tr>'
        )
    return (
        "<p class='note'>Counted on the predictions as written (before the evaluation cleaner).</p>"
        f"<table class='degen'>{''.join(rows)}</table>"
    )


def _system_sections(
    summary: Mapping[str, Any], records: Sequence[Mapping[str, Any]], n_worst: int, level: int
) -> list[str]:
    """Everything of one system's report below its metrics table, headings at ``level``."""
    h = f"h{level}"
    label_stats = per_label_stats(records)
    label_f1 = None if label_stats is None else [row["f1"] for row in label_stats]
    charts = _charts(summary, label_f1)
    parts = [
        f"<{h}>Provenance</{h}>",
        _provenance_html(summary),
        f"<{h}>Degenerate output</{h}>",
        _degenerate_html(summary),
    ]
    parts.append(f"<{h}>Charts</{h}>")
    for group in ("clinical", "lexical", "CIDEr-D"):
        if group in charts:
            parts.append(_img(charts[group], f"{group} metrics with confidence intervals"))
    if not set(charts) - {"labels"}:
        parts.append("<p class='note'>No metric has a value; no chart.</p>")
    parts.append(f"<{h}>Per-label support, precision, recall and F1 (14 CheXpert observations)</{h}>")
    if label_stats is not None:
        parts.append(_label_table_html(label_stats))
        parts.append(_img(charts["labels"], "per-label F1"))
    else:
        parts.append(
            "<p class='note'>Not shown: the per-sample file carries no per-study label vectors "
            "(CheXbert labels were not computed in this evaluation).</p>"
        )
    worst = worst_examples(records, n_worst)
    parts.append(f"<{h}>{len(worst)} worst-scoring studies</{h}>")
    parts.append(
        "<p class='note'>Ranked by the mean of the study's available clinical scores ("
        + ", ".join(RANK_SCORES)
        + "; ROUGE-L when none exists), lowest first.</p>"
    )
    if worst:
        rows = ["<tr><th>study / score</th><th>prediction</th><th>reference</th></tr>"]
        for score, record in worst:
            scores = record.get("scores") or {}
            detail = "<br>".join(
                f"{html.escape(k)}: {_fmt(scores[k])}" for k in RANK_SCORES if scores.get(k) is not None
            )
            rows.append(
                f"<tr><td>{html.escape(str(record['study_id']))}<br>rank score {score:.4f}<br>"
                f"<span class='note'>{detail}</span></td>"
                f"<td>{html.escape(str(record['prediction']))}</td>"
                f"<td>{html.escape(str(record['reference']))}</td></tr>"
            )
        parts.append(f"<table class='pair'>{''.join(rows)}</table>")
    return parts


def _page(title: str, parts: Sequence[str]) -> str:
    head = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    return "\n".join([*head, *parts, "</body></html>"]) + "\n"


def _atomic(path: Path, text: str) -> None:
    # Temporary name, then rename: a crash never leaves half a report (eval.evaluate.write_atomic).
    from editgrpo.eval.evaluate import write_atomic

    write_atomic(path, text)


def write_report(out_dir: str | Path, *, n_worst: int = 10) -> Path:
    """Write ``out_dir/report.html`` from ``evaluate``'s ``summary.json`` and ``per_sample.jsonl``
    in ``out_dir``; return its path (module docstring for the contents)."""
    if n_worst < 0:
        raise ValueError(f"n_worst must be >= 0, got {n_worst}")
    out = Path(out_dir)
    summary, records = _read(out)
    parts = ["<h2>Metrics</h2>", _table_html(summary), *_system_sections(summary, records, n_worst, 2)]
    path = out / "report.html"
    _atomic(path, _page(f"Evaluation of {summary['predictions']}", parts))
    return path


def _side_by_side_html(systems: Mapping[str, Mapping[str, Any]]) -> str:
    from editgrpo.eval.evaluate import side_by_side_rows

    first = next(iter(systems.values()))
    pct = round(100 * first["bootstrap"]["confidence"])
    rows = ["<tr><th>metric</th>" + "".join(f"<th>{_e(name)}</th>" for name in systems) + "</tr>"]
    for column, entries in side_by_side_rows(systems):
        cells = []
        for entry in entries:
            if entry.get("value") is None:
                cells.append(
                    f'<td class="missing">{_e(_missing_text({"missing": entry.get("missing")}))}</td>'
                )
            else:
                cells.append(
                    f'<td class="num">{_fmt(entry["value"])} [{_fmt(entry["low"])}, {_fmt(entry["high"])}]</td>'
                )
        rows.append(f"<tr><td>{_e(column)}</td>{''.join(cells)}</tr>")
    notes = [
        f"{name}: {s['predictions']} ({s['n']} studies, rejected {s['n_rejected']})"
        for name, s in systems.items()
    ]
    notes.append(
        f"cells: value [{pct}% percentile bootstrap CI over studies, {first['bootstrap']['n_resamples']} "
        f"resamples]; cleaning: {first['clean']}; each system scored on its own studies (editgrpo compare "
        "tests differences on the shared ones)"
    )
    items = "".join(f"<li>{_e(note)}</li>" for note in notes)
    return f"<ul class='note'>{items}</ul>\n<table>{''.join(rows)}</table>"


def write_multi_report(out_dir: str | Path, names: Sequence[str], *, n_worst: int = 5) -> Path:
    """Write ``out_dir/report.html`` for the systems ``evaluate_many`` wrote into ``out_dir/<name>/``:
    the side-by-side table, then each system's sections (provenance, degenerate output, charts,
    per-label table, worst studies)."""
    if n_worst < 0:
        raise ValueError(f"n_worst must be >= 0, got {n_worst}")
    out = Path(out_dir)
    loaded = {name: _read(out / name) for name in names}
    systems = {name: summary for name, (summary, _) in loaded.items()}
    parts = ["<h2>Metrics, side by side</h2>", _side_by_side_html(systems)]
    for name, (summary, records) in loaded.items():
        parts += [
            f"<h2>{_e(name)}</h2>",
            _table_html(summary),
            *_system_sections(summary, records, n_worst, 3),
        ]
    path = out / "report.html"
    _atomic(path, _page(f"Evaluation of {len(names)} systems", parts))
    return path


def compare_html(result: Mapping[str, Any]) -> str:
    """``compare.html``: the table of ``render_compare`` as a self-contained page."""
    pct = round(100 * result["bootstrap"]["confidence"])
    rows = [
        f"<tr><th>metric</th><th>A</th><th>B</th><th>difference [{pct}% CI]</th><th>p</th><th>n</th></tr>"
    ]
    for entry in result["metrics"].values():
        if "missing" in entry:
            rows.append(
                f'<tr><td>{_e(entry["column"])}</td><td class="missing" colspan="5">missing ({_e(entry["missing"])})</td></tr>'
            )
            continue
        p = "&lt; 0.001" if entry["p_value"] < 0.001 else f"{entry['p_value']:.3f}"
        rows.append(
            f'<tr><td>{_e(entry["column"])}</td><td class="num">{entry["a"]:.4f}</td><td class="num">{entry["b"]:.4f}</td>'
            f'<td class="num">{entry["difference"]:+.4f} [{entry["ci_low"]:+.4f}, {entry["ci_high"]:+.4f}]</td>'
            f'<td class="num">{p}</td><td class="num">{entry["n"]}</td></tr>'
        )
    notes = [
        f"A: {result['a']}",
        f"B: {result['b']}",
        f"shared studies: {result['n_shared']} (only in A: {result['only_in_a']}, only in B: {result['only_in_b']}; "
        f"references that differ: {result['reference_mismatch']})",
        f"cleaning: {result['clean']}; difference = A - B, {pct}% paired bootstrap CI "
        f"({result['bootstrap']['n_resamples']} resamples); p: two-sided paired approximate randomisation "
        f"({result['n_shuffles']} shuffles, add-one corrected), seed {result['seed']}",
    ]
    if result.get("backends"):
        notes.append("backends: " + ", ".join(f"{k} = {v}" for k, v in result["backends"].items()))
    items = "".join(f"<li>{_e(note)}</li>" for note in notes)
    return _page("Paired comparison", [f"<ul class='note'>{items}</ul>", f"<table>{''.join(rows)}</table>"])
