"""From engine outputs to predictions and metrics, with the tasks package's parsers and metrics only.

Scale convention in metrics.json: every per-task number (per seed, mean, std) is the metric's own
value in [0, 1]; category means and the SentiBench score are x100, as the paper reports them.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from typing import Any

from sentidistill.evaluation.items import Part, TaskInputs
from sentidistill.tasks import Parsed, TaskSpec, agrees, parse_output, score, seed_summary, summarize

SCALE_NOTE = "task metrics (per seed, mean, std) in [0, 1]; categories and sentibench x100"


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def _jsonable(value: Any) -> Any:
    """Gold/parsed values for JSON: tuples become lists."""
    if isinstance(value, list):
        return [list(v) if isinstance(v, tuple) else v for v in value]
    return value


def parse_item(task: TaskSpec, out: dict[str, Any]) -> tuple[Parsed, str, dict[str, float | None] | None]:
    """(parsed answer, raw output text, label scores) of one engine output row.

    Classification: the argmax label of the first-token scores (first label wins a tie); a row whose
    scores are all missing (an endpoint returned none of the labels) is a parse failure.
    Extraction: the task's registered parser on the generated text.
    """
    if task.kind == "classify":
        values = json.loads(out["scores"])
        scores = dict(zip(task.labels, values, strict=True))
        known = [(v, -j) for j, v in enumerate(values) if v is not None]
        if not known:
            return Parsed(None, failed=True), "", scores
        best = -max(known)[1]
        return Parsed.of(task.labels[best]), json.loads(out["candidates"])[best], scores
    text = out["output"] or ""
    return parse_output(task, text), text, None


def part_result(part: Part, inputs: TaskInputs, items: list[dict[str, Any]], outputs: dict[int, dict[str, Any]],
                truncated: int | None) -> dict[str, Any]:
    """The content of one part file: its metrics and one prediction record per test item."""
    task = part.task
    records, parsed_all = [], []
    for item in sorted(items, key=lambda it: it["idx"]):
        ex, out = inputs.test[item["idx"]], {**outputs[item["idx"]], "candidates": item["candidates"]}
        parsed, raw, scores = parse_item(task, out)
        parsed_all.append(parsed)
        records.append({
            "task": task.name, "seed": part.seed, "idx": item["idx"], "id": ex.id,
            "prompt_sha256": prompt_hash(item["prompt"]),
            "prompt_tokens": out["prompt_tokens"] or item["prompt_tokens"],
            "raw_output": raw, "scores": scores, "parsed": _jsonable(parsed.value), "parse_failed": parsed.failed,
            "gold": _jsonable(ex.gold), "correct": agrees(task, ex, parsed), "finish_reason": out["finish_reason"],
        })
    metrics = score(task, inputs.test, parsed_all)
    dtypes = sorted({o["dtype"] for o in outputs.values()})
    return {"task": task.name, "seed": part.seed, "key": part.key, "n": len(records), "dtype": ", ".join(dtypes),
            "prompts_truncated": truncated, "metrics": metrics, "predictions": records}


def task_summary(task: TaskSpec, results: list[dict[str, Any]]) -> dict[str, Any]:
    """One task over its seeds: per-seed metrics, seed mean/std of the score, mean of every metric."""
    per_seed = {str(r["seed"]): r["metrics"] for r in sorted(results, key=lambda r: r["seed"])}
    first = next(iter(per_seed.values()))
    means = {k: statistics.fmean(m[k] for m in per_seed.values()) for k in first}
    truncated = [r["prompts_truncated"] for r in results]
    return {
        "category": task.category, "kind": task.kind, "metric": task.metric, "version": task.version,
        "fingerprint": task.fingerprint(), "items": results[0]["n"],
        **seed_summary([m["score"] for m in per_seed.values()]),
        "means": means, "seeds": per_seed,
        "prompts_truncated": None if None in truncated else max(truncated),
    }


def model_metrics(meta: dict[str, Any], results: list[dict[str, Any]], tasks: list[TaskSpec],
                  benchmark: list[TaskSpec]) -> dict[str, Any]:
    """metrics.json: run metadata, per-task summaries, category means and the SentiBench score.

    `tasks` are the scored tasks in order; `benchmark` the 12 SentiBench tasks, so the SentiBench
    score says whether it covers all of them (`complete`) or only those scored in this run.
    """
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_task.setdefault(r["task"], []).append(r)
    summaries = {t.name: task_summary(t, by_task[t.name]) for t in tasks if t.name in by_task}
    means = {name: s["mean"] for name, s in summaries.items()}
    bench_names = {t.name for t in benchmark}
    bench = {n: v for n, v in means.items() if n in bench_names}
    sentibench = None
    if bench:
        s = summarize(bench, benchmark)
        sentibench = {"score": s["score"], "complete": s["complete"], "tasks_scored": len(bench),
                      "tasks_total": len(benchmark)}
    return {
        **meta, "scale": SCALE_NOTE,
        "items_per_task": {n: s["items"] for n, s in summaries.items()},
        "prompts_truncated": {n: s["prompts_truncated"] for n, s in summaries.items()},
        "dtype": ", ".join(sorted({r["dtype"] for r in results})) or meta.get("dtype"),
        "tasks": summaries,
        "categories": summarize(means, [t for t in tasks if t.name in means])["by_category"] if means else {},
        "sentibench": sentibench,
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def metrics_markdown(m: dict[str, Any]) -> str:
    """One model's table: score mean and spread over seeds, per-seed scores, accuracy, parse failures."""
    seeds = ", ".join(str(s) for s in m["seeds"])
    lines = [
        f"# SentiBench: {m['model']}", "",
        f"Model `{m['model_ref']}`, engine {m['engine']}, dtype {m['dtype']}, k {m['k_label']}, seeds {seeds}, "
        f"prompt variant {m['prompt_variant']}, items per task {m['limit'] or 'all'}.", "",
        "| task | category | metric | score | std | per seed | accuracy | parse failures |",
        "|---|---|---|---:|---:|---|---:|---:|",
    ]
    for name, t in m["tasks"].items():
        per_seed = " / ".join(_pct(s["score"]) for s in t["seeds"].values())
        acc = _pct(t["means"].get("accuracy"))
        fail = _pct(t["means"].get("parse_failure_rate")) if t["kind"] == "extract" else "-"
        lines.append(f"| {name} | {t['category']} | {t['metric']} | {_pct(t['mean'])} | {_pct(t['std'])} "
                     f"| {per_seed} | {acc} | {fail} |")
    for cat, value in m["categories"].items():
        lines.append(f"| **{cat}** (mean) | | | {value:.1f} | | | | |")
    sb = m["sentibench"]
    if sb:
        note = "" if sb["complete"] else f" ({sb['tasks_scored']} of {sb['tasks_total']} tasks)"
        lines.append(f"| **SentiBench**{note} | | | {sb['score']:.1f} | | | | |")
    lines += ["", f"Scores x100. {SCALE_NOTE}."]
    return "\n".join(lines) + "\n"
