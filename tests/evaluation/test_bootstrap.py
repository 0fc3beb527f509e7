"""Bootstrap intervals and paired differences: hand-computed cases, the vectorised path against
the metric called on every resample, and the paired test on planted and absent differences."""

from __future__ import annotations

import random
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from sentidistill.evaluation.bootstrap import (
    PER_RESAMPLE, VECTORISED, Settings, draws, interval, paired, replicates, task_bootstrap,
)
from sentidistill.tasks import Example, Parsed, TaskRegistry, load_registry, score


@pytest.fixture(scope="module")
def registry(shared_data: Path) -> TaskRegistry:
    return load_registry(data_dir=str(shared_data))


def _examples(golds: list[object]) -> list[Example]:
    return [Example(f"e{i}", f"text {i}", g) for i, g in enumerate(golds)]


def test_constant_predictor_has_a_zero_width_interval(registry: TaskRegistry) -> None:
    sst2 = registry.get("sst2")
    settings = Settings(resamples=500, seed=3)
    # the same label for every item, on items that all have that label: every resample scores 1
    same = _examples(["positive"] * 40)
    boot = task_bootstrap(sst2, partial(score, sst2), same, {"42": ["positive"] * 40}, settings)
    assert boot.interval(0.95) == (1.0, 1.0) and boot.score == 1.0
    # a constant wrong answer: 0 everywhere
    boot = task_bootstrap(sst2, partial(score, sst2), same, {"42": ["negative"] * 40}, settings)
    assert boot.interval(0.95) == (0.0, 0.0)
    # extraction: predicting nothing where there is gold scores 0 on every resample
    atsa = registry.get("atsa_rest16")
    gold = _examples([[("food", "positive")]] * 30)
    boot = task_bootstrap(atsa, partial(score, atsa), gold, {"1": [Parsed([], False)] * 30}, settings)
    assert boot.interval(0.95) == (0.0, 0.0) and boot.method == VECTORISED


def test_small_example_matches_a_hand_computation(registry: TaskRegistry) -> None:
    task = registry.get("sst2")
    examples = _examples(["positive", "negative", "positive", "negative"])
    preds = ["positive", "positive", "positive", "negative"]
    idx = np.array([[0, 1, 2, 3], [0, 0, 1, 1], [3, 3, 3, 3]])
    full, reps, method = replicates(task, partial(score, task), examples, preds, idx)
    # all items: positive P=2/3 R=1 F1=0.8, negative P=1 R=1/2 F1=2/3 -> 11/15
    # [0,0,1,1]: gold +,+,-,-; pred all +: positive F1=2*2/(4+2)=2/3, negative F1=0 -> 1/3
    # [3,3,3,3]: only 'negative' occurs, all right -> 1
    assert full == pytest.approx(11 / 15) and method == VECTORISED
    assert reps == pytest.approx([11 / 15, 1 / 3, 1.0])
    # percentiles of [1/3, 11/15, 1] (linear interpolation): 2.5% -> 1/3 + 0.05 * (11/15 - 1/3)
    low, high = interval(reps, 0.95)
    assert low == pytest.approx(1 / 3 + 0.05 * (11 / 15 - 1 / 3))
    assert high == pytest.approx(11 / 15 + 0.95 * (1 - 11 / 15))


def test_draws_are_reproducible_and_shared_by_models() -> None:
    s = Settings(resamples=200, seed=7)
    assert np.array_equal(draws(50, s, "sst2"), draws(50, s, "sst2"))
    assert not np.array_equal(draws(50, s, "sst2"), draws(50, s, "imdb"))
    assert not np.array_equal(draws(50, s, "sst2"), draws(50, Settings(200, 8), "sst2"))
    assert draws(50, s, "sst2").shape == (200, 50) and draws(50, s, "sst2").max() < 50


@pytest.mark.parametrize("name", ["sst2", "emotion20", "atsa_rest16", "asqp_rest16", "ssa_opener"])
def test_vectorised_path_equals_the_metric_on_every_resample(registry: TaskRegistry, name: str) -> None:
    task = registry.get(name)
    examples = registry.load_split(name, "test", 60)
    rng = random.Random(0)
    if task.kind == "classify":
        preds = [ex.gold if rng.random() < 0.5 else rng.choice([*task.labels, None]) for ex in examples]
    else:  # gold tuples, some dropped, some with a flipped polarity, some replaced by nothing
        preds = []
        for ex in examples:
            tuples = [t for t in ex.gold if rng.random() < 0.7]  # type: ignore[union-attr]
            tuples = [(*t[:-1], "negative" if rng.random() < 0.3 else t[-1]) for t in tuples]
            preds.append(Parsed(tuples, failed=rng.random() < 0.1))
    idx = draws(len(examples), Settings(resamples=40, seed=1), name)
    metric = partial(score, task)
    full, reps, method = replicates(task, metric, examples, preds, idx)
    slow = [metric([examples[i] for i in row], [preds[i] for i in row])["score"] for row in idx]
    assert method == VECTORISED and full == pytest.approx(metric(examples, preds)["score"])
    assert reps == pytest.approx(slow, abs=1e-12)
    assert len(set(np.round(reps, 9))) > 5  # the resamples really differ


def test_a_metric_without_a_known_decomposition_is_called_per_resample(registry: TaskRegistry) -> None:
    task = registry.get("sst2")
    examples = _examples(["positive", "negative"] * 10)
    preds = ["positive"] * 20

    def accuracy_only(ex, p):  # another scoring mode: same signature, a different number
        return {"score": sum(e.gold == q for e, q in zip(ex, p)) / len(ex)}

    idx = draws(20, Settings(resamples=100), "x")
    full, reps, method = replicates(task, accuracy_only, examples, preds, idx)
    assert method == PER_RESAMPLE and full == 0.5
    assert reps == pytest.approx([sum(examples[i].gold == "positive" for i in row) / 20 for row in idx])


def test_paired_difference_detects_a_planted_gain_and_not_identical_predictions(registry: TaskRegistry) -> None:
    task = registry.get("sst2")
    examples = registry.load_split("sst2", "test", 300)
    rng = random.Random(1)
    other = {"negative": "positive", "positive": "negative"}
    good = [ex.gold if rng.random() < 0.85 else other[ex.gold] for ex in examples]
    weak = [ex.gold if rng.random() < 0.55 else other[ex.gold] for ex in examples]
    settings = Settings(resamples=1000, seed=0)
    metric = partial(score, task)
    a = task_bootstrap(task, metric, examples, {"42": good}, settings)
    b = task_bootstrap(task, metric, examples, {"42": weak}, settings)
    gain = paired(a.score, a.replicates, b.score, b.replicates, 0.95)
    assert gain.delta > 0.2 and gain.low > 0 and gain.significant
    assert paired(b.score, b.replicates, a.score, a.replicates, 0.95).high < 0
    same = task_bootstrap(task, metric, examples, {"42": list(weak)}, settings)
    none = paired(same.score, same.replicates, b.score, b.replicates, 0.95)
    assert (none.delta, none.low, none.high) == (0.0, 0.0, 0.0) and not none.significant
    # a small difference on few items is not flagged: one of 20 answers changed
    few = examples[:20]
    base = [ex.gold for ex in few]
    changed = [other[base[0]], *base[1:]]
    x = task_bootstrap(task, metric, few, {"42": base}, settings)
    y = task_bootstrap(task, metric, few, {"42": changed}, settings)
    assert not paired(y.score, y.replicates, x.score, x.replicates, 0.95).significant


def test_seeds_share_the_draws_and_average(registry: TaskRegistry) -> None:
    task = registry.get("sst2")
    examples = _examples(["positive", "negative"] * 15)
    p1 = ["positive"] * 30
    p2 = [e.gold for e in examples]
    settings = Settings(resamples=300, seed=5)
    both = task_bootstrap(task, partial(score, task), examples, {"42": p1, "52": p2}, settings)
    one = task_bootstrap(task, partial(score, task), examples, {"42": p1}, settings)
    two = task_bootstrap(task, partial(score, task), examples, {"52": p2}, settings)
    assert both.replicates == pytest.approx((one.replicates + two.replicates) / 2)
    assert both.score == pytest.approx((one.score + two.score) / 2) and set(both.seed_intervals) == {"42", "52"}


def test_speed_of_a_full_comparison(registry: TaskRegistry) -> None:
    """1000 resamples x 12 tasks x 3 models stays a matter of seconds."""
    import time

    settings = Settings(resamples=1000)
    t0 = time.perf_counter()
    for task in registry.benchmark():
        examples = registry.load_split(task.name, "test", 200)
        preds = [ex.gold for ex in examples]
        for _ in range(3):
            task_bootstrap(task, partial(score, task), examples, {"42": preds}, settings)
    assert time.perf_counter() - t0 < 60


@pytest.mark.parametrize("name", ["sst2", "atsa_rest16", "asqp_rest16", "ssa_opener"])
def test_reference_scoring_is_vectorised_too(registry: TaskRegistry, name: str) -> None:
    """Upstream's scorers (reference mode: raw completions re-parsed, scores rounded to 4 decimals)
    decompose the same way; resamples use the unrounded score."""
    from sentidistill.tasks.reference import scorer

    task = registry.get(name)
    examples = registry.load_split(name, "test", 50)
    rng = random.Random(2)
    if task.kind == "classify":
        preds: list[object] = [ex.gold if rng.random() < 0.6 else rng.choice(task.labels) for ex in examples]
    else:
        preds = [repr([(*t[:-1], "negative" if rng.random() < 0.3 else t[-1])
                       for t in ex.gold if rng.random() < 0.7]) for ex in examples]  # type: ignore[union-attr]
    metric = partial(scorer("reference"), task)
    idx = draws(len(examples), Settings(resamples=30, seed=4), name)
    full, reps, method = replicates(task, metric, examples, preds, idx)
    slow = []
    for row in idx:
        m = metric([examples[i] for i in row], [preds[i] for i in row])
        slow.append(m.get("score_unrounded", m["score"]))
    assert method == VECTORISED and full == metric(examples, preds)["score"]
    assert reps == pytest.approx(slow, abs=1e-9) and len(set(np.round(reps, 9))) > 5
