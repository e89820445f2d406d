"""Score a predictions file (``eval/generate.py``'s JSONL) with EditGRPO's evaluation protocol.

``read_predictions`` validates the file (study_id present and unique, prediction and reference
non-empty strings, UTF-8) and names file, line and field in every error. ``evaluate`` writes
``per_sample.jsonl``, ``summary.json`` and ``table.md``; ``compare`` tests two systems per metric
on the studies both files share.

Columns (METRICS.md, "EditGRPO's evaluation protocol"), every one named with its backend:

- CheXbert micro/macro-F1 over 14 and over 5 labels, corpus level, uncertain as positive
  (``metrics/chexbert_f1``), labels from the configured labeler (``rules`` = ``chexpert-rules``);
- RadGraph F1 simple / partial / complete, mean of per-report F1 (``metrics/radgraph_f1``), graphs
  from the entity backend;
- RaTEScore (mean, ``metrics/ratescore``), RaTE entities of the entity backend embedded by the
  embedder;
- GREEN (mean over parsed judge outputs) only with a judge, otherwise marked missing;
- BLEU-1..4 (corpus), ROUGE-L (mean), CIDEr-D, METEOR (mean of the jar's per-segment scores; missing
  without Java or pycocoevalcap) in the pycocoevalcap / R2Gen convention (``metrics/lexical``);
- Avg: the paper's mean of the 7 clinical columns (4 CheXbert F1, RadGraph partial, RaTEScore,
  GREEN), only when all 7 exist; otherwise the summary says which are missing.

Uncertainty: percentile bootstrap over studies (``stats.bootstrap_ci``), the same seed for every
metric, so all columns see the same resamples. Corpus statistics are recomputed per resample:
CheXbert micro/macro F1 from the per-study binary label vectors, BLEU from the per-study
``bleu_stats`` via ``bleu_from_stats``. CIDEr-D's idf comes from the references of the whole test
set and is held fixed under resampling (resampling duplicates studies, which would distort document
frequencies); the CI of CIDEr is the bootstrap of the mean of the per-study scores. Avg is
bootstrapped jointly (each resample recomputes the 7 columns and averages them).

A study whose annotator failed on the prediction or the reference has no value for the metrics of
that annotator (None in ``per_sample.jsonl``, never 0); those metrics are computed over the studies
that have a value, and every column reports its ``n``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from editgrpo.data.manifest import ON_ERROR, DataError, Reject, RejectLog
from editgrpo.eval.quality import degenerate_outputs, provenance
from editgrpo.eval.stats import bootstrap_ci, paired_randomization
from editgrpo.metrics.chexbert_f1 import binarize, pair_micro_f1_batch
from editgrpo.metrics.green import GreenParse, green_score, judge
from editgrpo.metrics.lexical import BLEU_MAX_N, bleu_from_stats, lexical_scores
from editgrpo.metrics.radgraph_f1 import radgraph_f1_all_levels
from editgrpo.metrics.ratescore import ratescore_pair
from editgrpo.rewards.composite import CompositeReward
from editgrpo.text.clean import get_cleaner
from editgrpo.text.observations import CHEXPERT_5, CHEXPERT_14

METRIC_GROUPS: tuple[str, ...] = ("chexbert", "radgraph", "ratescore", "green", "lexical")
CLINICAL: tuple[str, ...] = (
    "chexbert_micro_f1_14",
    "chexbert_macro_f1_14",
    "chexbert_micro_f1_5",
    "chexbert_macro_f1_5",
    "radgraph_partial",
    "ratescore",
    "green",
)
_FIVE = [CHEXPERT_14.index(name) for name in CHEXPERT_5]
_L14 = len(CHEXPERT_14)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def read_predictions(path: str | Path, on_error: str = "fail") -> tuple[list[dict[str, Any]], list[Reject]]:
    """Valid rows of a predictions JSONL, and the rejects (empty unless ``on_error="skip"``).

    Each row must be a JSON object with a non-empty string ``study_id`` (unique in the file), a
    string ``prediction`` (possibly empty: what the model wrote) and a non-empty string
    ``reference``. With ``on_error="fail"`` the first problem
    raises ``DataError`` naming file, line and field; with ``"skip"`` the row is left out and listed
    in the rejects with its reason. Blank lines are ignored; nothing else is dropped silently."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
    log = RejectLog(on_error)
    source = str(path)
    if not Path(path).is_file():
        raise DataError(f"{source}: predictions file not found")
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                log.error(source, number, "line", f"invalid UTF-8 at byte {err.start}")
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                log.error(source, number, "line", f"invalid JSON: {err.msg} (column {err.colno})")
                continue
            if not isinstance(row, dict):
                log.error(source, number, "line", f"expected a JSON object, got {type(row).__name__}")
                continue
            study_id = row.get("study_id")
            if "study_id" not in row:
                log.error(source, number, "study_id", "missing")
                continue
            if not isinstance(study_id, str) or not study_id.strip():
                log.error(source, number, "study_id", f"must be a non-empty string, got {study_id!r}")
                continue
            problem = _text_problem(row)
            if problem is not None:
                log.error(source, number, problem[0], problem[1], study_id)
                continue
            if study_id in seen:
                log.error(source, number, "study_id", f"duplicate of line {seen[study_id]}", study_id)
                continue
            seen[study_id] = number
            rows.append(row)
    return rows, log.rejects


def _text_problem(row: Mapping[str, Any]) -> tuple[str, str] | None:
    for name in ("prediction", "reference"):
        if name not in row or row[name] is None:
            return name, f"missing {name}"
        value = row[name]
        if not isinstance(value, str):
            return name, f"must be a string, got {type(value).__name__}"
        # An empty prediction is a model output (scored as the metrics define it, and counted as
        # degenerate); an empty reference leaves nothing to score against.
        if name == "reference" and not value.strip():
            return name, f"empty {name}"
    return None


# ---------------------------------------------------------------------------------------------
# Per-sample scoring
# ---------------------------------------------------------------------------------------------


@dataclass
class Metric:
    """One column: ``data`` holds per-study rows (N, ...) aligned with the studies scored,
    ``valid`` (N,) which studies have a value; ``statistic`` None = mean of 1-D data."""

    key: str
    column: str
    backend: str
    data: np.ndarray | None = None
    valid: np.ndarray | None = None
    statistic: Callable[[np.ndarray], float] | None = None
    missing: str | None = None  # why the column has no value

    def value(self, rows: np.ndarray) -> float:
        return float(rows.mean()) if self.statistic is None else float(self.statistic(rows))


def _chexbert_stat(kind: str, labels: Sequence[int]) -> Callable[[np.ndarray], float]:
    """Corpus F1 of (n, 28) rows [hyp 14 | ref 14] over label columns ``labels``."""
    cols = np.asarray(labels)

    def statistic(rows: np.ndarray) -> float:
        hyp, ref = rows[:, cols], rows[:, _L14 + cols]
        tp = (hyp & ref).sum(axis=0)
        fp = (hyp & (1 - ref)).sum(axis=0)
        fn = ((1 - hyp) & ref).sum(axis=0)
        if kind == "micro":
            denominator = 2 * tp.sum() + fp.sum() + fn.sum()
            return float(2 * tp.sum() / denominator) if denominator else 0.0
        denominator = 2 * tp + fp + fn
        f1 = np.divide(2 * tp, denominator, out=np.zeros(len(cols)), where=denominator > 0)
        return float(f1.mean())

    return statistic


def _bleu_stat(k: int) -> Callable[[np.ndarray], float]:
    def statistic(rows: np.ndarray) -> float:
        return bleu_from_stats(rows.sum(axis=0).tolist())[k]

    return statistic


# progress(phase, done, total): called before and after each chunk of slow work.
Progress = Callable[[str, int, int], None]
ANNOTATE_CHUNK = 256  # texts per annotator call when a progress callback wants updates
JUDGE_CHUNK = 32  # pairs per GREEN judge call (the judge batches and parallelises inside a chunk)


def _chunked(
    analyze: Callable[[Sequence[str]], list[Any]], texts: list[str], phase: str, progress: Progress | None
) -> list[Any]:
    if progress is None:
        return analyze(texts)
    out: list[Any] = []
    for start in range(0, len(texts), ANNOTATE_CHUNK):
        progress(phase, start, len(texts))
        out += analyze(texts[start : start + ANNOTATE_CHUNK])
    progress(phase, len(texts), len(texts))
    return out


def describe_judge(backend: Any) -> dict[str, Any]:
    """What the summary says about a GREEN judge: its backend name, model and, for HTTP, the URL
    (never the key: only the name of the variable it was read from)."""
    out: dict[str, Any] = {"backend": str(getattr(backend, "name", type(backend).__name__))}
    for attr in ("model_name", "url", "endpoint", "api_key_env", "max_new_tokens"):
        if getattr(backend, attr, None) is not None:
            out[attr] = getattr(backend, attr)
    return out


def _as_array(values: Sequence[float | None]) -> tuple[np.ndarray, np.ndarray]:
    valid = np.array([v is not None for v in values], dtype=bool)
    return np.array([math.nan if v is None else v for v in values], dtype=float), valid


def _score(
    rows: Sequence[Mapping[str, Any]],
    *,
    metrics: Sequence[str] | None,
    clean: str,
    labeler: str,
    entities: str,
    embedder: str,
    ratescore_version: str,
    green_judge: Any,
    with_meteor: bool,
    graph_entities: str | None = None,
    progress: Progress | None = None,
) -> tuple[list[Metric], list[dict[str, Any]], dict[str, Any]]:
    """Metrics (with per-study data), per-sample records and the settings of one predictions set."""
    groups = list(METRIC_GROUPS if metrics is None else metrics)
    unknown = sorted(set(groups) - set(METRIC_GROUPS))
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; valid: {', '.join(METRIC_GROUPS)}")
    if not rows:
        raise ValueError("no predictions to score")
    cleaner = get_cleaner(clean)
    preds = [cleaner(row["prediction"]) for row in rows]
    refs = [cleaner(row["reference"]) for row in rows]
    n = len(rows)
    records: list[dict[str, Any]] = [
        {"study_id": row["study_id"], "prediction": p, "reference": r, "scores": {}}
        for row, p, r in zip(rows, preds, refs, strict=True)
    ]
    out: list[Metric] = []
    components = {}
    if "chexbert" in groups:
        components["chexbert_micro14"] = 1.0
    if "radgraph" in groups:
        components["radgraph_partial"] = 1.0
    if "ratescore" in groups:
        components["ratescore"] = 1.0
    settings: dict[str, Any] = {"clean": clean, "metrics": groups, "ratescore_version": ratescore_version}
    if components:
        reward = CompositeReward(
            components,
            labeler=labeler,
            entities=entities,
            graph_entities=graph_entities,
            embedder=embedder,
            ratescore_version=ratescore_version,
            # Evaluation scores an empty report as the metrics define it (the floor is a reward choice).
            empty_completion="score",
        )
        hyp_an = _chunked(reward.analyze, preds, "annotating predictions", progress)
        ref_an = _chunked(reward.analyze, refs, "annotating references", progress)
        lab_name = getattr(reward.labeler, "name", labeler) if reward.labeler is not None else labeler
        ent_name = getattr(reward.extractor, "name", entities) if reward.extractor is not None else entities
        emb_name = getattr(reward.embedder, "name", embedder) if reward.embedder is not None else embedder
        graph_name = reward.names["graph_entities"]  # RadGraph columns name the backend of the graphs
        settings["backends"] = {"labeler": lab_name, "entities": ent_name, "embedder": emb_name}
        if graph_name != ent_name:
            settings["backends"]["graph_entities"] = graph_name
        if "chexbert" in groups:
            valid = np.array(
                [h.labels is not None and r.labels is not None for h, r in zip(hyp_an, ref_an, strict=True)]
            )
            empty = dict.fromkeys(CHEXPERT_14)
            hyp_l = [h.labels if ok else empty for h, ok in zip(hyp_an, valid, strict=True)]
            ref_l = [r.labels if ok else empty for r, ok in zip(ref_an, valid, strict=True)]
            data = np.concatenate([binarize(hyp_l), binarize(ref_l)], axis=1)  # (N, 28)
            pair = pair_micro_f1_batch(hyp_l, ref_l)
            for i, record in enumerate(records):
                ok = bool(valid[i])
                record["scores"]["chexbert_pair_micro_f1_14"] = pair[i] if ok else None
                record["labels"] = {
                    "prediction": data[i, :_L14].tolist() if ok else None,
                    "reference": data[i, _L14:].tolist() if ok else None,
                }
            for kind in ("micro", "macro"):
                for size, cols in (("14", list(range(_L14))), ("5", _FIVE)):
                    out.append(
                        Metric(
                            f"chexbert_{kind}_f1_{size}",
                            f"{kind}-F1-{size} [{lab_name}]",
                            lab_name,
                            data,
                            valid,
                            _chexbert_stat(kind, cols),
                        )
                    )
            out.sort(key=lambda m: CLINICAL.index(m.key) if m.key in CLINICAL else 99)
        if "radgraph" in groups:
            levels: list[list[float | None]] = [[], [], []]
            for h, r in zip(hyp_an, ref_an, strict=True):
                triple = (
                    radgraph_f1_all_levels(h.graph, r.graph)
                    if h.graph is not None and r.graph is not None
                    else (None, None, None)
                )
                for k in range(3):
                    levels[k].append(triple[k])
            for k, level in enumerate(("simple", "partial", "complete")):
                values, valid = _as_array(levels[k])
                for record, v in zip(records, levels[k], strict=True):
                    record["scores"][f"radgraph_{level}"] = v
                out.append(
                    Metric(f"radgraph_{level}", f"RadGraph {level} [{graph_name}]", graph_name, values, valid)
                )
        if "ratescore" in groups:
            scores = [
                ratescore_pair(h.rate, r.rate, version=ratescore_version)
                if h.rate is not None and r.rate is not None
                else None
                for h, r in zip(hyp_an, ref_an, strict=True)
            ]
            for record, v in zip(records, scores, strict=True):
                record["scores"]["ratescore"] = v
            values, valid = _as_array(scores)
            backend = f"{ent_name}+{emb_name}"
            out.append(
                Metric("ratescore", f"RaTEScore {ratescore_version} [{backend}]", backend, values, valid)
            )
    if "green" in groups:
        if green_judge is None:
            out.append(Metric("green", "GREEN", "none", missing="no GREEN judge given"))
        else:
            judge_name = str(getattr(green_judge, "name", type(green_judge).__name__))
            parses: list[GreenParse | None] = []
            for start in range(0, n, JUDGE_CHUNK):  # chunks only to move the progress bar
                if progress is not None:
                    progress("GREEN judge", start, n)
                parses += judge(
                    green_judge, refs[start : start + JUDGE_CHUNK], preds[start : start + JUDGE_CHUNK]
                )
            if progress is not None:
                progress("GREEN judge", n, n)
            scores = [green_score(p) if p is not None else None for p in parses]
            for record, v, parse in zip(records, scores, parses, strict=True):
                record["scores"]["green"] = v
                # The judge's counts, so a GREEN value can be checked against what the judge said.
                record["green"] = None if parse is None else asdict(parse)
            values, valid = _as_array(scores)
            out.append(Metric("green", f"GREEN [{judge_name}]", judge_name, values, valid))
            settings["green_judge"] = describe_judge(green_judge)
            settings["green_unparsable"] = sum(p is None for p in parses)
    if "lexical" in groups:
        lex = lexical_scores(preds, refs, with_meteor=with_meteor)
        settings["lexical_convention"] = lex["convention"]
        per = lex["per_sample"]
        stats = np.asarray(per["BLEU_stats"], dtype=float)  # (N, 2 + 2 * 4)
        everyone = np.ones(n, dtype=bool)
        for i, record in enumerate(records):
            record["scores"]["rouge_l"] = per["ROUGE-L"][i]
            record["scores"]["cider"] = per["CIDEr"][i]
            record["scores"]["meteor"] = per["METEOR"][i] if per["METEOR"] is not None else None
            record["bleu_stats"] = per["BLEU_stats"][i]
        for k in range(BLEU_MAX_N):
            out.append(
                Metric(
                    f"bleu_{k + 1}",
                    f"BLEU-{k + 1} [pycocoevalcap]",
                    "pycocoevalcap",
                    stats,
                    everyone,
                    _bleu_stat(k),
                )
            )
        out.append(
            Metric(
                "rouge_l", "ROUGE-L [pycocoevalcap]", "pycocoevalcap", np.asarray(per["ROUGE-L"]), everyone
            )
        )
        if per["METEOR"] is not None:
            out.append(
                Metric("meteor", "METEOR [meteor-1.5]", "meteor-1.5", np.asarray(per["METEOR"]), everyone)
            )
        else:
            out.append(Metric("meteor", "METEOR", "meteor-1.5", missing=lex["METEOR_reason"]))
        out.append(
            Metric("cider", "CIDEr-D [pycocoevalcap]", "pycocoevalcap", np.asarray(per["CIDEr"]), everyone)
        )
    return out, records, settings


# ---------------------------------------------------------------------------------------------
# Evaluate
# ---------------------------------------------------------------------------------------------


def _avg_statistic(clinical: list[Metric]) -> Callable[[np.ndarray], float]:
    def statistic(idx: np.ndarray) -> float:
        return float(np.mean([m.value(m.data[idx]) for m in clinical]))

    return statistic


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` under a temporary name beside ``path``, then rename: a reader (or a crash)
    never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def evaluate(
    predictions_path: str | Path,
    out_dir: str | Path,
    *,
    metrics: Sequence[str] | None = None,
    clean: str = "none",
    labeler: str = "rules",
    entities: str = "lexicon",
    graph_entities: str | None = None,
    embedder: str = "lexical",
    ratescore_version: str = "0.5",
    green_judge: Any = None,
    bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    with_meteor: bool = True,
    on_error: str = "fail",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Score ``predictions_path``; write ``per_sample.jsonl``, ``summary.json`` and ``table.md`` in
    ``out_dir``; return the summary (module docstring). ``metrics``: a subset of
    ``METRIC_GROUPS`` (None = all; GREEN is marked missing without ``green_judge``).
    ``progress(phase, done, total)`` is told how the annotators and the judge advance."""
    rows, rejects = read_predictions(predictions_path, on_error)
    if not rows:
        raise ValueError(f"{predictions_path}: no valid predictions to score")
    scored, records, settings = _score(
        rows,
        metrics=metrics,
        clean=clean,
        labeler=labeler,
        entities=entities,
        graph_entities=graph_entities,
        embedder=embedder,
        ratescore_version=ratescore_version,
        green_judge=green_judge,
        with_meteor=with_meteor,
        progress=progress,
    )
    columns: dict[str, dict[str, Any]] = {}
    for metric in scored:
        entry: dict[str, Any] = {"column": metric.column, "backend": metric.backend}
        if metric.missing is not None or metric.data is None or not metric.valid.any():
            entry.update(value=None, missing=metric.missing or "no study could be scored", n=0)
        else:
            data = metric.data[metric.valid]
            ci = bootstrap_ci(data, metric.statistic, n_resamples=bootstrap, confidence=confidence, seed=seed)
            entry.update(value=ci.estimate, low=ci.low, high=ci.high, n=len(data), missing=None)
        columns[metric.key] = entry
    by_key = {m.key: m for m in scored}
    absent = [k for k in CLINICAL if k not in columns or columns[k]["value"] is None]
    if absent:
        avg: dict[str, Any] = {"value": None, "missing": absent, "column": "Avg (7 clinical)"}
    else:
        clinical = [by_key[k] for k in CLINICAL]
        common = np.flatnonzero(np.logical_and.reduce([m.valid for m in clinical]))
        ci = bootstrap_ci(
            common, _avg_statistic(clinical), n_resamples=bootstrap, confidence=confidence, seed=seed
        )
        avg = {
            "column": "Avg (7 clinical)",
            "value": float(np.mean([columns[k]["value"] for k in CLINICAL])),
            "low": ci.low,
            "high": ci.high,
            "n": len(common),
            "missing": None,
        }
    summary: dict[str, Any] = {
        "predictions": str(predictions_path),
        "n": len(rows),
        "n_rejected": len(rejects),
        "rejects": [asdict(r) for r in rejects],
        **settings,
        "provenance": provenance(rows, predictions_path),
        "degenerate": degenerate_outputs(rows),
        "bootstrap": {"n_resamples": bootstrap, "confidence": confidence, "seed": seed, "unit": "study"},
        "cider_ci": "idf fixed from the full test set's references; CI = bootstrap of the per-study mean",
        "meteor_estimate": "mean of the METEOR 1.5 jar's per-segment scores (bootstrapped as a mean)",
        "columns": columns,
        "avg": avg,
    }
    out = Path(out_dir)
    write_atomic(
        out / "per_sample.jsonl", "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    )
    write_atomic(out / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    write_atomic(out / "table.md", render_table(summary))
    return summary


def system_names(paths: Sequence[str | Path]) -> list[str]:
    """One short, distinct, file-system-safe name per predictions file: its stem, then
    ``parent-stem`` where stems clash, then a ``-N`` suffix."""
    stems = [Path(p).stem for p in paths]
    names = [
        f"{Path(p).parent.name}-{stem}" if stems.count(stem) > 1 and Path(p).parent.name else stem
        for p, stem in zip(paths, stems, strict=True)
    ]
    out: list[str] = []
    for name in names:
        safe = re.sub(r"[^\w.-]+", "_", name) or "predictions"
        candidate, k = safe, 2
        while candidate in out:
            candidate, k = f"{safe}-{k}", k + 1
        out.append(candidate)
    return out


def evaluate_many(
    predictions_paths: Sequence[str | Path],
    out_dir: str | Path,
    **options: Any,
) -> dict[str, Any]:
    """Score several predictions files with the same options: each into ``out_dir/<name>/`` (the
    files ``evaluate`` writes), and ``out_dir/summary.json`` + ``out_dir/table.md`` with every
    system side by side (names from ``system_names``). Returns {"systems": {name: summary}}."""
    if len(predictions_paths) < 2:
        raise ValueError("evaluate_many needs two or more predictions files; use evaluate for one")
    out = Path(out_dir)
    names = system_names(predictions_paths)
    systems = {
        name: evaluate(path, out / name, **options)
        for name, path in zip(names, predictions_paths, strict=True)
    }
    combined = {
        "systems": {name: {"dir": name, "predictions": s["predictions"]} for name, s in systems.items()}
    }
    write_atomic(out / "summary.json", json.dumps(combined, indent=2, ensure_ascii=False) + "\n")
    write_atomic(out / "table.md", render_side_by_side(systems))
    return {"systems": systems}


def _fmt(value: float | None) -> str:
    return "missing" if value is None else f"{value:.4f}"


def _cell(entry: Mapping[str, Any]) -> str:
    if entry.get("value") is None:
        why = entry.get("missing")
        return f"missing: {', '.join(why)}" if isinstance(why, list) else f"missing ({why})"
    return f"{_fmt(entry['value'])} [{_fmt(entry['low'])}, {_fmt(entry['high'])}]"


def render_table(summary: Mapping[str, Any]) -> str:
    """A Markdown table of ``evaluate``'s summary: one row per column with its CI and n."""
    pct = round(100 * summary["bootstrap"]["confidence"])
    lines = [
        f"# Evaluation of {summary['predictions']}",
        "",
        f"- studies: {summary['n']} (rejected: {summary['n_rejected']})",
        f"- cleaning: {summary['clean']}",
        f"- lexical convention: {summary.get('lexical_convention', 'not computed')}",
        f"- CIs: {pct}% percentile bootstrap over studies, {summary['bootstrap']['n_resamples']} resamples, "
        f"seed {summary['bootstrap']['seed']}; CheXbert F1 and BLEU recomputed per resample; "
        f"CIDEr: {summary['cider_ci']}",
        "",
        f"| metric | value | {pct}% CI | n |",
        "|---|---|---|---|",
    ]
    entries = [*summary["columns"].values(), summary["avg"]]
    for entry in entries:
        if entry["value"] is None:
            why = entry["missing"]
            why = f"missing: {', '.join(why)}" if isinstance(why, list) else f"missing ({why})"
            lines.append(f"| {entry['column']} | {why} | | |")
        else:
            lines.append(
                f"| {entry['column']} | {_fmt(entry['value'])} | [{_fmt(entry['low'])}, {_fmt(entry['high'])}] "
                f"| {entry['n']} |"
            )
    return "\n".join(lines) + "\n"


def side_by_side_rows(systems: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, list[Mapping[str, Any]]]]:
    """(column name, one entry per system) for every metric any system has, Avg last; a system
    without the metric gets a missing entry."""
    keys: list[str] = []
    for summary in systems.values():
        keys += [k for k in summary["columns"] if k not in keys]
    rows = []
    for key in keys:
        entries = [
            s["columns"].get(key, {"value": None, "missing": "not computed"}) for s in systems.values()
        ]
        column = next(e["column"] for e in entries if "column" in e)
        rows.append((column, entries))
    rows.append(("Avg (7 clinical)", [s["avg"] for s in systems.values()]))
    return rows


def render_side_by_side(systems: Mapping[str, Mapping[str, Any]]) -> str:
    """A Markdown table of several ``evaluate`` summaries: one row per metric, one column per
    system, each cell value [CI]."""
    first = next(iter(systems.values()))
    pct = round(100 * first["bootstrap"]["confidence"])
    names = list(systems)
    lines = [
        f"# Evaluation of {len(names)} systems",
        "",
        *(
            f"- {name}: {s['predictions']} ({s['n']} studies, rejected {s['n_rejected']})"
            for name, s in systems.items()
        ),
        f"- cleaning: {first['clean']}; cells: value [{pct}% percentile bootstrap CI over studies, "
        f"{first['bootstrap']['n_resamples']} resamples]; each system on its own studies "
        "(`editgrpo compare` tests differences on the shared ones)",
        "",
        "| metric | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for column, entries in side_by_side_rows(systems):
        lines.append(f"| {column} | " + " | ".join(_cell(e) for e in entries) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Compare
# ---------------------------------------------------------------------------------------------


def _stacked(metrics: Sequence[Metric]) -> tuple[np.ndarray, list[slice]]:
    """The per-study data of several metrics side by side, (N, sum of widths), and each one's slice."""
    blocks, slices, at = [], [], 0
    for metric in metrics:
        data = metric.data.reshape(len(metric.data), -1).astype(float)
        blocks.append(data)
        slices.append(slice(at, at + data.shape[1]))
        at += data.shape[1]
    return np.concatenate(blocks, axis=1), slices


def _avg_of_stacked(metrics: Sequence[Metric], slices: Sequence[slice]) -> Callable[[np.ndarray], float]:
    def statistic(rows: np.ndarray) -> float:
        values = []
        for metric, part in zip(metrics, slices, strict=True):
            block = rows[:, part]
            if metric.statistic is None:
                values.append(float(block[:, 0].mean()))
            else:  # CheXbert's label vectors are 0/1 integers for its bitwise statistic
                values.append(metric.value(block.astype(np.int64)))
        return float(np.mean(values))

    return statistic


def _difference_ci(
    da: np.ndarray, db: np.ndarray, value: Callable[[np.ndarray], float], n: int, confidence: float, seed: int
) -> tuple[float, float]:
    """Paired percentile bootstrap of value(A) - value(B): the same resampled studies for both."""

    def statistic(idx: np.ndarray) -> float:
        return value(da[idx]) - value(db[idx])

    ci = bootstrap_ci(np.arange(len(da)), statistic, n_resamples=n, confidence=confidence, seed=seed)
    return ci.low, ci.high


def compare(
    a_path: str | Path,
    b_path: str | Path,
    *,
    metrics: Sequence[str] | None = None,
    clean: str = "none",
    labeler: str = "rules",
    entities: str = "lexicon",
    graph_entities: str | None = None,
    embedder: str = "lexical",
    ratescore_version: str = "0.5",
    green_judge: Any = None,
    n_shuffles: int = 10_000,
    bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    with_meteor: bool = False,
    on_error: str = "fail",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Paired approximate randomisation of system A against system B, per metric, over the studies
    both files share (in A's order), and a paired bootstrap CI of each difference (the studies
    resampled jointly for A and B, ``bootstrap`` resamples). Returns {"n_shared", "only_in_a",
    "only_in_b", "rejected_a", "rejected_b" (rows skipped with ``on_error="skip"``),
    "reference_mismatch" (shared studies whose references differ; each system is scored against
    its own file's reference), "metrics": {key: {"column", "a", "b", "difference", "ci_low",
    "ci_high", "p_value", "n"} or {"column", "missing"}}}; ``metrics["avg"]`` is the paper's Avg of
    the 7 clinical columns when all 7 exist, over the studies every one of them scored."""
    rows_a, rejects_a = read_predictions(a_path, on_error)
    rows_b, rejects_b = read_predictions(b_path, on_error)
    index_b = {row["study_id"]: row for row in rows_b}
    ids_a = {row["study_id"] for row in rows_a}
    shared_a = [row for row in rows_a if row["study_id"] in index_b]
    if not shared_a:
        raise ValueError(f"{a_path} and {b_path} share no study_id; nothing to compare")
    shared_b = [index_b[row["study_id"]] for row in shared_a]
    options = {
        "metrics": metrics,
        "clean": clean,
        "labeler": labeler,
        "entities": entities,
        "graph_entities": graph_entities,
        "embedder": embedder,
        "ratescore_version": ratescore_version,
        "green_judge": green_judge,
        "with_meteor": with_meteor,
        "progress": progress,
    }
    metrics_a, _, settings = _score(shared_a, **options)
    metrics_b, _, _ = _score(shared_b, **options)
    results: dict[str, dict[str, Any]] = {}
    for ma, mb in zip(metrics_a, metrics_b, strict=True):
        if ma.missing is not None or mb.missing is not None or ma.data is None or mb.data is None:
            results[ma.key] = {"column": ma.column, "missing": ma.missing or mb.missing}
            continue
        both = ma.valid & mb.valid
        if not both.any():
            results[ma.key] = {"column": ma.column, "missing": "no shared study could be scored by both"}
            continue
        da, db = ma.data[both], mb.data[both]
        test = paired_randomization(da, db, ma.statistic, n_shuffles=n_shuffles, seed=seed)
        low, high = _difference_ci(da, db, ma.value, bootstrap, confidence, seed)
        results[ma.key] = {
            "column": ma.column,
            "a": ma.value(da),
            "b": mb.value(db),
            "difference": test.difference,
            "ci_low": low,
            "ci_high": high,
            "p_value": test.p_value,
            "n": int(both.sum()),
        }
    results["avg"] = _compare_avg(metrics_a, metrics_b, results, n_shuffles, bootstrap, confidence, seed)
    return {
        "a": str(a_path),
        "b": str(b_path),
        "n_shared": len(shared_a),
        "only_in_a": len(ids_a - set(index_b)),
        "only_in_b": len(set(index_b) - ids_a),
        "rejected_a": len(rejects_a),
        "rejected_b": len(rejects_b),
        "reference_mismatch": sum(
            ra["reference"] != rb["reference"] for ra, rb in zip(shared_a, shared_b, strict=True)
        ),
        "n_shuffles": n_shuffles,
        "bootstrap": {"n_resamples": bootstrap, "confidence": confidence, "seed": seed, "unit": "study"},
        "seed": seed,
        **settings,
        "metrics": results,
    }


def _compare_avg(
    metrics_a: Sequence[Metric],
    metrics_b: Sequence[Metric],
    results: Mapping[str, Mapping[str, Any]],
    n_shuffles: int,
    bootstrap: int,
    confidence: float,
    seed: int,
) -> dict[str, Any]:
    column = "Avg (7 clinical)"
    absent = [k for k in CLINICAL if k not in results or "missing" in results[k]]
    if absent:
        return {"column": column, "missing": f"needs all 7 clinical columns; missing: {', '.join(absent)}"}
    by_a = {m.key: m for m in metrics_a}
    by_b = {m.key: m for m in metrics_b}
    clinical_a = [by_a[k] for k in CLINICAL]
    clinical_b = [by_b[k] for k in CLINICAL]
    both = np.logical_and.reduce([m.valid for m in clinical_a] + [m.valid for m in clinical_b])
    if not both.any():
        return {"column": column, "missing": "no shared study was scored by all 7 columns in both"}
    stack_a, slices = _stacked(clinical_a)
    stack_b, _ = _stacked(clinical_b)
    da, db = stack_a[both], stack_b[both]
    statistic = _avg_of_stacked(clinical_a, slices)
    test = paired_randomization(da, db, statistic, n_shuffles=n_shuffles, seed=seed)
    low, high = _difference_ci(da, db, statistic, bootstrap, confidence, seed)
    return {
        "column": column,
        "a": statistic(da),
        "b": statistic(db),
        "difference": test.difference,
        "ci_low": low,
        "ci_high": high,
        "p_value": test.p_value,
        "n": int(both.sum()),
    }


def _p(value: float) -> str:
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def render_compare(result: Mapping[str, Any]) -> str:
    """The Markdown table of ``compare``: metric, A, B, difference [CI], p."""
    pct = round(100 * result["bootstrap"]["confidence"])
    lines = [
        f"# {result['a']} (A) vs {result['b']} (B)",
        "",
        f"- shared studies: {result['n_shared']} (only in A: {result['only_in_a']}, only in B: "
        f"{result['only_in_b']}; rejected: A {result['rejected_a']}, B {result['rejected_b']}; "
        f"references that differ: {result['reference_mismatch']})",
        f"- cleaning: {result['clean']}; difference = A - B with a {pct}% paired bootstrap CI over the "
        f"shared studies ({result['bootstrap']['n_resamples']} resamples); p: two-sided paired approximate "
        f"randomisation ({result['n_shuffles']} shuffles, add-one corrected), seed {result['seed']}",
        "",
        f"| metric | A | B | difference [{pct}% CI] | p | n |",
        "|---|---|---|---|---|---|",
    ]
    for entry in result["metrics"].values():
        if "missing" in entry:
            lines.append(f"| {entry['column']} | missing ({entry['missing']}) | | | | |")
        else:
            lines.append(
                f"| {entry['column']} | {entry['a']:.4f} | {entry['b']:.4f} | {entry['difference']:+.4f} "
                f"[{entry['ci_low']:+.4f}, {entry['ci_high']:+.4f}] | {_p(entry['p_value'])} | {entry['n']} |"
            )
    return "\n".join(lines) + "\n"


def write_compare(result: Mapping[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``compare.md`` (``render_compare``) and ``compare.html`` (the same table, self-contained)
    in ``out_dir``; return both paths."""
    from editgrpo.eval.report import compare_html

    out = Path(out_dir)
    md, page = out / "compare.md", out / "compare.html"
    write_atomic(md, render_compare(result))
    write_atomic(page, compare_html(result))
    return md, page
