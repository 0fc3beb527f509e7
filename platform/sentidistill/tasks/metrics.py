"""Metrics (closed registry `METRICS`) and the SentiBench aggregate.

Every metric takes (task, examples, predictions) and returns flat floats with at least `score`
(the headline number in [0, 1]), `n` and `parse_failure_rate`. Predictions may be `Parsed`
objects or plain values (a label string, a list of tuples, None for no answer).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sentidistill.tasks import ssa_f1
from sentidistill.tasks.entry import Entry
from sentidistill.tasks.example import Example
from sentidistill.tasks.parsers import NULL, Parsed

if TYPE_CHECKING:
    from sentidistill.tasks.spec import TaskSpec

Metrics = dict[str, float]


def as_parsed(prediction: Parsed | Any) -> Parsed:
    return prediction if isinstance(prediction, Parsed) else Parsed.of(prediction)


def _aligned(examples: Sequence[Example], predictions: Sequence[Any]) -> list[Parsed]:
    if len(examples) != len(predictions):
        raise ValueError(f"{len(examples)} examples but {len(predictions)} predictions")
    if any(ex.gold is None for ex in examples):
        raise ValueError("every scored example needs a gold answer")
    return [as_parsed(p) for p in predictions]


def _failure_rate(preds: Sequence[Parsed]) -> float:
    return sum(p.failed for p in preds) / len(preds) if preds else 0.0


def _f1(tp: int, n_pred: int, n_gold: int) -> float:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def macro_f1(task: TaskSpec, examples: Sequence[Example], predictions: Sequence[Any]) -> Metrics:
    """Macro-F1 over the task's labels that occur in gold or predictions (sklearn's default set),
    plus accuracy. Labels compare lowercased; an answer outside the label set is simply wrong."""
    preds = _aligned(examples, predictions)
    gold = [str(ex.gold).lower() for ex in examples]
    pred = [str(p.value).lower() if p.value is not None else None for p in preds]
    labels = [lab.lower() for lab in task.labels]
    present = [lab for lab in labels if lab in gold or lab in pred]
    per_label = {
        lab: _f1(sum(g == p == lab for g, p in zip(gold, pred)), pred.count(lab), gold.count(lab)) for lab in present
    }
    n = len(examples)
    out: Metrics = {
        "score": statistics.fmean(per_label.values()) if per_label else 0.0,
        "accuracy": sum(g == p for g, p in zip(gold, pred)) / n if n else 0.0,
        "invalid_rate": sum(p not in labels for p in pred) / n if n else 0.0,
        "parse_failure_rate": _failure_rate(preds),
        "n": float(n),
    }
    out["macro_f1"] = out["score"]
    out.update({f"f1/{lab}": per_label.get(lab, 0.0) for lab in labels})
    return out


def normalize_tuples(tuples: Sequence[Sequence[str]]) -> list[tuple[str, ...]]:
    """Compare form: fields stripped, polarity (last slot) lowercased, all-NULL dropped, deduplicated."""
    out: list[tuple[str, ...]] = []
    for t in tuples:
        norm = tuple(v.strip() for v in t[:-1]) + (t[-1].strip().lower(),) if t else ()
        if norm and any(v.upper() != NULL for v in norm) and norm not in out:
            out.append(norm)
    return out


def _extraction_counts(preds: Sequence[Parsed]) -> Metrics:
    return {"parse_failure_rate": _failure_rate(preds), "dropped_tuples": float(sum(p.dropped for p in preds))}


def tuple_micro_f1(task: TaskSpec, examples: Sequence[Example], predictions: Sequence[Any]) -> Metrics:
    """Micro-F1 over (item, tuple) pairs, exact match; precision is 1 when nothing is predicted,
    recall 1 when there is no gold (the reference's convention)."""
    preds = _aligned(examples, predictions)
    tp = n_pred = n_gold = 0
    for ex, p in zip(examples, preds):
        gold = normalize_tuples(ex.gold)  # type: ignore[arg-type]
        pred = normalize_tuples(p.value or [])  # type: ignore[arg-type]
        tp += len(set(gold) & set(pred))
        n_pred += len(pred)
        n_gold += len(gold)
    precision = tp / n_pred if n_pred else 1.0
    recall = tp / n_gold if n_gold else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"score": f1, "micro_f1": f1, "precision": precision, "recall": recall, "n": float(len(examples)),
            "n_pred": float(n_pred), "n_gold": float(n_gold), **_extraction_counts(preds)}


def ssa_graph_f1(task: TaskSpec, examples: Sequence[Example], predictions: Sequence[Any]) -> Metrics:
    """SemEval-2022 Task 10 weighted sentiment-graph F1 (gold from each row's char offsets)."""
    preds = _aligned(examples, predictions)
    gold = [ssa_f1.gold_graph(ex.raw) for ex in examples]
    pred = [ssa_f1.pred_graph(ex.text, normalize_tuples(p.value or []))  # type: ignore[arg-type]
            for ex, p in zip(examples, preds)]
    res = ssa_f1.graph_f1(gold, pred)
    return {"score": res["f1"], "graph_f1": res["f1"], "precision": res["precision"], "recall": res["recall"],
            "n": float(len(examples)), "n_pred": res["n_pred"], "n_gold": res["n_gold"], **_extraction_counts(preds)}


METRICS: dict[str, Entry] = {
    "macro_f1": Entry("classify", macro_f1, "macro-F1 over the labels (+ accuracy)"),
    "tuple_micro_f1": Entry("extract", tuple_micro_f1, "micro-F1 over exact (item, tuple) pairs"),
    "ssa_graph_f1": Entry("extract", ssa_graph_f1, "weighted sentiment-graph F1 (SemEval-2022 Task 10)"),
}


def score(task: TaskSpec, examples: Sequence[Example], predictions: Sequence[Any]) -> Metrics:
    """Score aligned predictions with the task's registered metric."""
    return METRICS[task.metric].fn(task, examples, predictions)


def agrees(task: TaskSpec, example: Example, prediction: Parsed | Any) -> bool:
    """Does an answer match the gold exactly (ICLDist's teacher-vs-gold filter)?"""
    p = as_parsed(prediction)
    if p.failed or example.gold is None:
        return False
    if task.kind == "classify":
        return str(p.value).lower() == str(example.gold).lower()
    return set(normalize_tuples(p.value)) == set(normalize_tuples(example.gold))  # type: ignore[arg-type]


def seed_summary(values: Sequence[float]) -> dict[str, float]:
    """Mean and spread of one task's score over seeds (SentiBench reports the mean of 42, 52, 62)."""
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n_seeds": float(len(values))}


def summarize(scores: Mapping[str, float], tasks: Sequence[TaskSpec]) -> dict[str, Any]:
    """SentiBench score: unweighted mean of the task scores x100, and each category's mean.

    `scores` maps task name -> score in [0, 1]; `tasks` are the specs scored (their order is kept).
    `complete` is False when a task of the list has no score (the mean then covers fewer tasks).
    """
    scored = [t for t in tasks if t.name in scores]
    by_cat: dict[str, list[float]] = {}
    for t in scored:
        by_cat.setdefault(t.category, []).append(scores[t.name])
    return {
        "score": 100 * statistics.fmean(scores[t.name] for t in scored) if scored else 0.0,
        "by_category": {c: 100 * statistics.fmean(v) for c, v in by_cat.items()},
        "tasks": {t.name: 100 * scores[t.name] for t in scored},
        "complete": len(scored) == len(tasks),
    }
