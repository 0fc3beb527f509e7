"""Bootstrap confidence intervals over test items, and paired differences between models.

One resample is a draw of n item indices with replacement. The draw depends only on the
bootstrap seed, the task name and n, so two models scored on the same items get the SAME draws:
their per-resample scores can be subtracted (a paired bootstrap), which cancels the variation
that comes from which items happen to be easy.

Each resample recomputes the task's real metric (macro-F1, tuple micro-F1, graph F1, ...), never
an average of per-item correctness. The metric is the callable the caller passes (the task's
active scoring mode). Where that metric is a function of per-item sums (every shipped metric is),
the sums are taken for all resamples at once with one matrix product; the decomposition is
checked against the metric on the full sample, and any metric it does not reproduce is computed
by calling it once per resample instead (slower, same answer).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sentidistill.tasks import Example, TaskSpec
from sentidistill.tasks.metrics import as_parsed

Metric = Callable[[Sequence[Example], Sequence[Any]], Mapping[str, float]]
VECTORISED, PER_RESAMPLE = "vectorised", "per-resample"


@dataclass(frozen=True)
class Settings:
    resamples: int = 1000
    seed: int = 0
    confidence: float = 0.95


@dataclass(frozen=True)
class Additive:
    """A metric as a function of per-item statistics summed over the (resampled) items."""

    stats: np.ndarray  # (n items, k statistics)
    finish: Callable[[np.ndarray], np.ndarray]  # (..., k) sums -> (...) scores


def draws(n: int, settings: Settings, key: str) -> np.ndarray:
    """(resamples, n) item indices, a pure function of (seed, key, n): the same for every model."""
    if n < 1:
        raise ValueError(f"bootstrap over {key!r}: no items")
    digest = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little")
    rng = np.random.default_rng([settings.seed, digest, n])
    return rng.integers(0, n, size=(settings.resamples, n))


def multiplicities(idx: np.ndarray, n: int) -> np.ndarray:
    """(B, n) how often each item appears in each resample."""
    b = idx.shape[0]
    flat = (idx + n * np.arange(b)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


def interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval of the replicates."""
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


# -- per-item statistics of the shipped metrics -------------------------------------------------
def _macro_f1(task: TaskSpec, examples: Sequence[Example], preds: Sequence[Any]) -> Additive:
    labels = [lab.lower() for lab in task.labels]
    n, k = len(examples), len(labels)
    stats = np.zeros((n, 3 * k))  # tp per label | predicted per label | gold per label
    for i, (ex, p) in enumerate(zip(examples, preds, strict=True)):
        value = as_parsed(p).value
        gold, pred = str(ex.gold).lower(), None if value is None else str(value).lower()
        if pred in labels:
            stats[i, k + labels.index(pred)] = 1
        if gold in labels:
            stats[i, 2 * k + labels.index(gold)] = 1
            if pred == gold:
                stats[i, labels.index(gold)] = 1

    def finish(sums: np.ndarray) -> np.ndarray:
        tp, npred, ngold = sums[..., :k], sums[..., k:2 * k], sums[..., 2 * k:]
        present = (npred + ngold) > 0
        f1 = np.divide(2 * tp, npred + ngold, out=np.zeros_like(tp), where=present)
        count = present.sum(axis=-1)
        return np.divide(f1.sum(axis=-1), count, out=np.zeros(f1.shape[:-1]), where=count > 0)

    return Additive(stats, finish)


def _micro_f1(metric: Metric, examples: Sequence[Example], preds: Sequence[Any], empty: float) -> Additive:
    """Micro-F1 from per-item hits: the metric on each item alone gives its (weighted) hits and counts.
    `empty` is the metric's precision (recall) when nothing is predicted (nothing is gold)."""
    stats = np.zeros((len(examples), 4))  # precision hits | predicted | recall hits | gold
    for i, (ex, p) in enumerate(zip(examples, preds, strict=True)):
        one = metric([ex], [p])
        npred, ngold = one.get("n_pred", 0.0), one.get("n_gold", 0.0)
        stats[i] = (one["precision"] * npred, npred, one["recall"] * ngold, ngold)

    def finish(sums: np.ndarray) -> np.ndarray:
        ph, npred, rh, ngold = (sums[..., j] for j in range(4))
        precision = np.where(npred > 0, ph / np.where(npred > 0, npred, 1), empty)
        recall = np.where(ngold > 0, rh / np.where(ngold > 0, ngold, 1), empty)
        total = precision + recall
        return np.where(total > 0, 2 * precision * recall / np.where(total > 0, total, 1), 0.0)

    return Additive(stats, finish)


def additive(task: TaskSpec, metric: Metric, examples: Sequence[Example], preds: Sequence[Any]) -> Additive | None:
    """The per-item decomposition of the task's metric, when one is known for it."""
    if task.metric == "macro_f1":
        return _macro_f1(task, examples, preds)
    if task.metric == "tuple_micro_f1":
        return _micro_f1(metric, examples, preds, empty=1.0)
    if task.metric == "ssa_graph_f1":
        return _micro_f1(metric, examples, preds, empty=0.0)
    return None


# -- replicates ---------------------------------------------------------------------------------
def replicates(task: TaskSpec, metric: Metric, examples: Sequence[Example], preds: Sequence[Any],
               idx: np.ndarray) -> tuple[float, np.ndarray, str]:
    """(score on all items, score on each resample of `idx`, how it was computed).

    A metric that rounds its score (upstream's 4 decimals) reports `score_unrounded`: resamples use that.
    """
    whole = metric(examples, preds)
    full = float(whole["score"])
    try:
        add = additive(task, metric, examples, preds)
    except (KeyError, TypeError, ValueError):  # a metric that does not report the statistics we read
        add = None
    exact = float(whole.get("score_unrounded", full))
    if add is not None and math.isclose(float(add.finish(add.stats.sum(axis=0))), exact, abs_tol=1e-9):
        return full, add.finish(multiplicities(idx, len(examples)) @ add.stats), VECTORISED
    scores = []
    for row in idx:
        m = metric([examples[i] for i in row], [preds[i] for i in row])
        scores.append(m.get("score_unrounded", m["score"]))
    return full, np.asarray(scores, dtype=np.float64), PER_RESAMPLE


@dataclass(frozen=True)
class TaskBootstrap:
    """One task over its seeds: the seed-mean score and its replicates; per seed the same."""

    score: float
    replicates: np.ndarray  # (B,) seed mean of each resample's score
    seed_scores: dict[str, float]
    seed_intervals: dict[str, tuple[float, float]]
    method: str

    def interval(self, confidence: float) -> tuple[float, float]:
        return interval(self.replicates, confidence)


def task_bootstrap(task: TaskSpec, metric: Metric, examples: Sequence[Example],
                   preds_by_seed: Mapping[str, Sequence[Any]], settings: Settings) -> TaskBootstrap:
    """Resample the test items once and apply the same draws to every seed's predictions."""
    idx = draws(len(examples), settings, task.name)
    per_seed = {s: replicates(task, metric, examples, p, idx) for s, p in preds_by_seed.items()}
    reps = np.mean([r for _, r, _ in per_seed.values()], axis=0)
    methods = sorted({m for _, _, m in per_seed.values()})
    return TaskBootstrap(
        score=float(np.mean([full for full, _, _ in per_seed.values()])), replicates=reps,
        seed_scores={s: full for s, (full, _, _) in per_seed.items()},
        seed_intervals={s: interval(r, settings.confidence) for s, (_, r, _) in per_seed.items()},
        method=", ".join(methods),
    )


def mean_replicates(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Replicates of an unweighted mean of tasks (categories, SentiBench): tasks are resampled
    independently, so the b-th replicate of the mean is the mean of the tasks' b-th replicates."""
    return np.mean(np.stack(parts), axis=0)


@dataclass(frozen=True)
class Difference:
    """model - reference on the same items: point difference, paired interval, and whether it excludes 0."""

    delta: float
    low: float
    high: float

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0


def paired(model_score: float, model_reps: np.ndarray, ref_score: float, ref_reps: np.ndarray,
           confidence: float) -> Difference:
    """Paired bootstrap difference: both replicate vectors must come from the same draws."""
    if model_reps.shape != ref_reps.shape:
        raise ValueError(f"paired bootstrap needs the same resamples (got {model_reps.shape} and {ref_reps.shape})")
    low, high = interval(model_reps - ref_reps, confidence)
    return Difference(model_score - ref_score, low, high)


__all__ = ["PER_RESAMPLE", "VECTORISED", "Additive", "Difference", "Settings", "TaskBootstrap", "additive",
           "draws", "interval", "mean_replicates", "multiplicities", "paired", "replicates", "task_bootstrap"]
