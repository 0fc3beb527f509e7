"""From engine outputs to predictions and metrics, with the tasks package's parsers and metrics only.

Scale convention in metrics.json: every per-task number (per seed, mean, std) is the metric's own
value in [0, 1]; category means and the SentiBench score are x100, as the paper reports them.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import math
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

from sentidistill.evaluation.bootstrap import Metric, Settings, TaskBootstrap, interval, mean_replicates, task_bootstrap
from sentidistill.evaluation.items import Part, TaskInputs
from sentidistill.evaluation.scoring import TOO_LONG, item_scores, part_metrics, record_fields
from sentidistill.evaluation import scoring
from sentidistill.tasks import Example, TaskSpec, seed_summary, summarize
from sentidistill.tasks.reference import scorer, scoring_mode

log = logging.getLogger("sentidistill")

SCALE_NOTE = "task metrics (per seed, mean, std, ci) in [0, 1]; categories and sentibench x100"
BOOTSTRAP_NOTE = ("percentile bootstrap over test items: each resample redraws the items with replacement and "
                  "recomputes the task's metric; every seed of a task uses the same draws")


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def _jsonable(value: Any) -> Any:
    """Gold/parsed values for JSON: tuples become lists."""
    if isinstance(value, list):
        return [list(v) if isinstance(v, tuple) else v for v in value]
    return value


def task_metric(task: TaskSpec) -> Metric:
    """The metric a task's predictions are scored with (its active scoring mode): part files and the
    bootstrap both use it."""
    return functools.partial(scorer(scoring_mode(task)), task)


def part_result(part: Part, inputs: TaskInputs, items: list[dict[str, Any]], outputs: dict[int, dict[str, Any]],
                truncated: int | None) -> dict[str, Any]:
    """The content of one part file: both modes' metrics and one prediction record per test item.

    `truncated`: items whose prompt does not fit the model (never run, scored wrong; None = unknown).
    """
    task, mode = part.task, scoring_mode(part.task)
    records, per_item = [], []
    for item in sorted(items, key=lambda it: it["idx"]):
        ex, out = inputs.test[item["idx"]], outputs[item["idx"]]
        modes = item_scores(task, ex, out)
        per_item.append(modes)
        if task.kind == "classify":
            values = None if out.get("scores") is None else json.loads(out["scores"])
            label = modes[mode].parsed
            raw = "" if label is None else json.loads(item["candidates"])[task.labels.index(label)]
            scores = None if values is None else dict(zip(task.labels, values, strict=True))
        else:
            raw, scores = out.get("output") or "", None
        records.append({
            "task": task.name, "seed": part.seed, "idx": item["idx"], "id": ex.id,
            "prompt_sha256": prompt_hash(item["prompt"]),
            "prompt_tokens": out.get("prompt_tokens") or item["prompt_tokens"],
            "raw_output": raw, "scores": scores, **record_fields(mode, modes),
            "gold": _jsonable(ex.gold), "finish_reason": out["finish_reason"],
        })
        if out.get("processed_scores"):
            records[-1]["processed_scores"] = dict(zip(task.labels, json.loads(out["processed_scores"]), strict=True))
    too_long = sum(o.get("finish_reason") == TOO_LONG for o in outputs.values())
    metrics = part_metrics(task, inputs.test, per_item, mode, too_long)
    dtypes = sorted({o["dtype"] for o in outputs.values() if o.get("dtype")})
    procs = sorted({o["logit_processors"] for o in outputs.values() if o.get("logit_processors")})
    return {"task": task.name, "seed": part.seed, "key": part.key, "n": len(records), "dtype": ", ".join(dtypes),
            "scoring": mode, "prompts_too_long": truncated, "logit_processors": [json.loads(p) for p in procs],
            "metrics": metrics, "predictions": records}


def items_fingerprint(examples: Sequence[Example]) -> str:
    """Which test items were scored (ids in order): a paired comparison needs the same ones."""
    return hashlib.sha256(json.dumps([ex.id for ex in examples]).encode("utf-8")).hexdigest()[:16]


def stored_prediction(task: TaskSpec, record: dict[str, Any]) -> Any:
    """A prediction record of a part file back as what the task's active metric consumes."""
    return scoring.stored_prediction(task, record)


def bootstrap_tasks(tasks: list[TaskSpec], results: list[dict[str, Any]], examples: dict[str, list[Example]],
                    settings: Settings) -> dict[str, TaskBootstrap]:
    """Per scored task: its metric recomputed on the same resampled items for every seed."""
    out: dict[str, TaskBootstrap] = {}
    for task in tasks:
        parts = sorted((r for r in results if r["task"] == task.name), key=lambda r: r["seed"])
        if not parts:
            continue
        test = examples[task.name]
        preds: dict[str, list[Any]] = {}
        for r in parts:
            records = sorted(r["predictions"], key=lambda rec: rec["idx"])
            if [rec["id"] for rec in records] != [ex.id for ex in test]:
                raise ValueError(f"eval: part {task.name}/seed-{r['seed']} holds other test items than the task's "
                                 f"{len(test)} items; rescore it with --force")
            preds[str(r["seed"])] = [stored_prediction(task, rec) for rec in records]
        boot = task_bootstrap(task, task_metric(task), test, preds, settings)
        stale = [s for r in parts if not math.isclose(boot.seed_scores[s := str(r["seed"])], r["metrics"]["score"],
                                                      abs_tol=1e-9)]
        if stale:
            log.warning("eval: %s seeds %s: the stored score differs from the metric recomputed on the stored "
                        "predictions (scored with older code?); rescore with --force", task.name, stale)
        out[task.name] = boot
    return out


def replicates_npz(boot: dict[str, TaskBootstrap]) -> bytes:
    """bootstrap.npz: per task, the seed-mean score of each resample (what paired comparisons subtract)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{name: b.replicates for name, b in boot.items()})
    return buf.getvalue()


def read_replicates(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def _ci(values: tuple[float, float], scale: float = 1.0) -> list[float]:
    return [scale * values[0], scale * values[1]]


def task_summary(task: TaskSpec, results: list[dict[str, Any]], boot: TaskBootstrap | None = None,
                 confidence: float = 0.95) -> dict[str, Any]:
    """One task over its seeds: per-seed metrics, seed mean/std of the score, mean of every metric,
    and (with a bootstrap) the interval of the seed mean and of each seed's score."""
    per_seed = {str(r["seed"]): r["metrics"] for r in sorted(results, key=lambda r: r["seed"])}
    first = next(iter(per_seed.values()))
    means = {k: statistics.fmean(m[k] for m in per_seed.values()) for k in first}
    too_long = [r.get("prompts_too_long") for r in results]
    stats: dict[str, Any] = {}
    if boot is not None:
        stats = {"ci": _ci(boot.interval(confidence)),
                 "seed_ci": {s: _ci(v) for s, v in boot.seed_intervals.items()}}
    return {
        "category": task.category, "kind": task.kind, "metric": task.metric, "version": task.version,
        "fingerprint": task.fingerprint(), "items": results[0]["n"],
        **seed_summary([m["score"] for m in per_seed.values()]), **stats,
        "means": means, "seeds": per_seed,
        "scoring": results[0].get("scoring", "tolerant"),
        "prompts_too_long": None if None in too_long else max(too_long),
    }


def model_metrics(meta: dict[str, Any], results: list[dict[str, Any]], tasks: list[TaskSpec],
                  benchmark: list[TaskSpec], boot: dict[str, TaskBootstrap] | None = None,
                  settings: Settings | None = None, items: dict[str, str] | None = None) -> dict[str, Any]:
    """metrics.json: run metadata, per-task summaries, category means and the SentiBench score.

    `tasks` are the scored tasks in order; `benchmark` the 12 SentiBench tasks, so the SentiBench
    score says whether it covers all of them (`complete`) or only those scored in this run. With
    `boot` (per-task bootstrap replicates) every score gets its interval (`ci`, `categories_ci`).
    """
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_task.setdefault(r["task"], []).append(r)
    conf = settings.confidence if settings else 0.95
    boot = boot or {}
    summaries = {t.name: task_summary(t, by_task[t.name], boot.get(t.name), conf) for t in tasks if t.name in by_task}
    means = {name: s["mean"] for name, s in summaries.items()}
    bench_names = {t.name for t in benchmark}
    bench = {n: v for n, v in means.items() if n in bench_names}
    with_ci = bool(boot) and all(n in boot for n in means)
    sentibench = None
    if bench:
        s = summarize(bench, benchmark)
        sentibench = {"score": s["score"], "complete": s["complete"], "tasks_scored": len(bench),
                      "tasks_total": len(benchmark)}
        if with_ci:
            sentibench["ci"] = _ci(interval(mean_replicates([boot[n].replicates for n in bench]), conf), 100)
    scored = [t for t in tasks if t.name in means]
    categories_ci = {}
    if with_ci:
        for cat in dict.fromkeys(t.category for t in scored):
            reps = mean_replicates([boot[t.name].replicates for t in scored if t.category == cat])
            categories_ci[cat] = _ci(interval(reps, conf), 100)
    extra: dict[str, Any] = {}
    if with_ci and settings is not None:
        extra = {"bootstrap": {"resamples": settings.resamples, "seed": settings.seed, "confidence": conf,
                               "method": BOOTSTRAP_NOTE,
                               "computed": {n: b.method for n, b in boot.items() if n in means}},
                 "items_sha256": {n: (items or {}).get(n) for n in means}, "categories_ci": categories_ci}
    return {
        **meta, "scale": SCALE_NOTE,
        "items_per_task": {n: s["items"] for n, s in summaries.items()},
        "prompts_too_long": {n: s["prompts_too_long"] for n, s in summaries.items()},
        "scoring": {n: s["scoring"] for n, s in summaries.items()},
        "dtype": ", ".join(sorted({r["dtype"] for r in results if r["dtype"]})) or meta.get("dtype"),
        "tasks": summaries,
        "categories": summarize(means, scored)["by_category"] if means else {},
        "sentibench": sentibench, **extra,
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _span(ci: list[float] | None, scale: float = 1.0) -> str:
    return "-" if not ci else f"[{scale * ci[0]:.1f}, {scale * ci[1]:.1f}]"


def metrics_markdown(m: dict[str, Any]) -> str:
    """One model's table: score with its bootstrap interval, spread over seeds, per-seed scores,
    accuracy, parse failures."""
    seeds = ", ".join(str(s) for s in m["seeds"])
    boot = m.get("bootstrap")
    level = f"{100 * boot['confidence']:.0f}% CI" if boot else "CI"
    lines = [
        f"# SentiBench: {m['model']}", "",
        f"Model `{m['model_ref']}`, engine {m['engine']}, dtype {m['dtype']}, k {m['k_label']}, seeds {seeds}, "
        f"prompt variant {m['prompt_variant']}, items per task {m['limit'] or 'all'}.", "",
        f"| task | category | metric | score | {level} | std over seeds | per seed | accuracy | parse failures |",
        "|---|---|---|---:|---|---:|---|---:|---:|",
    ]
    for name, t in m["tasks"].items():
        per_seed = " / ".join(_pct(s["score"]) for s in t["seeds"].values())
        acc = _pct(t["means"].get("accuracy"))
        fail = _pct(t["means"].get("parse_failure_rate")) if t["kind"] == "extract" else "-"
        lines.append(f"| {name} | {t['category']} | {t['metric']} | {_pct(t['mean'])} | {_span(t.get('ci'), 100)} "
                     f"| {_pct(t['std'])} | {per_seed} | {acc} | {fail} |")
    cis = m.get("categories_ci", {})
    for cat, value in m["categories"].items():
        lines.append(f"| **{cat}** (mean) | | | {value:.1f} | {_span(cis.get(cat))} | | | | |")
    sb = m["sentibench"]
    if sb:
        note = "" if sb["complete"] else f" ({sb['tasks_scored']} of {sb['tasks_total']} tasks)"
        lines.append(f"| **SentiBench**{note} | | | {sb['score']:.1f} | {_span(sb.get('ci'))} | | | | |")
    lines += ["", f"Scores x100. {SCALE_NOTE}."]
    if boot:
        lines.append(f"Intervals: {boot['method']} ({boot['resamples']} resamples, seed {boot['seed']}).")
    modes = sorted({t.get("scoring", "tolerant") for t in m["tasks"].values()})
    lines.append(f"Scoring: {', '.join(modes)} (the other mode is in metrics.json as '<mode>/<metric>').")
    too_long = {n: v for n, v in (m.get("prompts_too_long") or {}).items() if v}
    if too_long:
        lines.append(f"Prompts longer than the model's {m.get('max_model_len')} tokens, scored as wrong (never cut): "
                     + ", ".join(f"{n} {v}" for n, v in too_long.items()) + ".")
    return "\n".join(lines) + "\n"
