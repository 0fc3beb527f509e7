"""The comparison table from bootstrapped eval folders: intervals in every cell, paired differences to
the reference marked when their interval excludes 0, only evaluated rows, and the notes under it."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from sentidistill.cli.tables import print_comparison, rerun_hint
from sentidistill.evaluation import compare
from sentidistill.evaluation.aggregate import (
    bootstrap_tasks, items_fingerprint, model_metrics, read_replicates, replicates_npz, task_metric,
)
from sentidistill.evaluation.bootstrap import Settings
from sentidistill.report.eval_report import write_eval_report
from sentidistill.rundir import RunDir
from sentidistill.tasks import Parsed, TaskRegistry, TaskSpec, load_registry

SETTINGS = Settings(resamples=500, seed=0)
OTHER = {"negative": "positive", "positive": "negative"}


@pytest.fixture(scope="module")
def registry(shared_data: Path) -> TaskRegistry:
    return load_registry(data_dir=str(shared_data))


def tolerant(registry: TaskRegistry, name: str) -> TaskSpec:
    """The task scored on parsed answers (the records below hold parsed values, not raw completions)."""
    return registry.get(name).model_copy(update={"scoring": "tolerant"})


def part(registry: TaskRegistry, name: str, seed: int, preds: list[Any], n: int) -> dict[str, Any]:
    task, examples = tolerant(registry, name), registry.load_split(name, "test", n)
    parsed = [p if isinstance(p, Parsed) else Parsed.of(p) for p in preds]
    records = [{"idx": i, "id": ex.id, "parsed": json.loads(json.dumps(p.value)), "parse_failed": p.failed}
               for i, (ex, p) in enumerate(zip(examples, parsed, strict=True))]
    return {"task": name, "seed": seed, "key": "k", "n": n, "dtype": "float32", "prompts_truncated": 0,
            "metrics": task_metric(task)(examples, parsed), "predictions": records}


def write_model(rd: RunDir, registry: TaskRegistry, slug: str, results: list[dict[str, Any]],
                seeds: list[int]) -> dict[str, Any]:
    """What the eval stage writes for a model: metrics.json with intervals, and bootstrap.npz."""
    tasks = [tolerant(registry, n) for n in dict.fromkeys(r["task"] for r in results)]
    examples = {t.name: registry.load_split(t.name, "test", next(r["n"] for r in results if r["task"] == t.name))
                for t in tasks}
    boot = bootstrap_tasks(tasks, results, examples, SETTINGS)
    meta = {"model": slug, "model_ref": f"refs/{slug}", "engine": "hf", "engine_name": slug, "dtype": "auto",
            "k": None, "k_label": "per task", "seeds": seeds, "limit": results[0]["n"], "prompt_variant": "raw"}
    m = model_metrics(meta, results, tasks, registry.benchmark(), boot, SETTINGS,
                      {n: items_fingerprint(ex) for n, ex in examples.items()})
    rd.write_json(f"eval/{slug}/metrics.json", m)
    rd.write_bytes(f"eval/{slug}/bootstrap.npz", replicates_npz(boot))
    return m


def answers(registry: TaskRegistry, rate: float, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [ex.gold if rng.random() < rate else OTHER[ex.gold] for ex in registry.load_split("sst2", "test", n)]


def tuples(registry: TaskRegistry, keep: float, n: int, seed: int) -> list[Parsed]:
    rng = random.Random(seed)
    return [Parsed([t for t in ex.gold if rng.random() < keep], False)  # type: ignore[union-attr]
            for ex in registry.load_split("atsa_rest16", "test", n)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, registry: TaskRegistry) -> RunDir:
    rd = RunDir(str(tmp_path_factory.mktemp("cmp") / "run"))
    n, m = 300, 60
    base = [part(registry, "sst2", s, answers(registry, 0.55, n, s), n) for s in (42, 52, 62)]
    base += [part(registry, "atsa_rest16", s, tuples(registry, 0.3, m, s), m) for s in (42, 52, 62)]
    write_model(rd, registry, "student-before", base, [42, 52, 62])
    better = [part(registry, "sst2", s, answers(registry, 0.9, n, 10 + s), n) for s in (42, 52, 62)]
    better += [part(registry, "atsa_rest16", s, tuples(registry, 0.3, m, s), m) for s in (42, 52, 62)]
    write_model(rd, registry, "student-after", better, [42, 52, 62])
    write_model(rd, registry, "same", base, [42, 52, 62])  # identical predictions to the reference
    return rd


def test_metrics_json_carries_intervals_everywhere(run_dir: RunDir) -> None:
    m = run_dir.read_json("eval/student-after/metrics.json")
    sst2 = m["tasks"]["sst2"]
    assert sst2["ci"][0] <= sst2["mean"] <= sst2["ci"][1] and set(sst2["seed_ci"]) == {"42", "52", "62"}
    assert m["categories_ci"].keys() == m["categories"].keys() == {"basic", "fine-grained"}
    lo, hi = m["sentibench"]["ci"]
    assert lo <= m["sentibench"]["score"] <= hi
    assert m["bootstrap"]["resamples"] == 500 and m["bootstrap"]["computed"] == {"sst2": "vectorised",
                                                                                 "atsa_rest16": "vectorised"}
    reps = read_replicates(run_dir.read_bytes("eval/student-after/bootstrap.npz"))
    assert set(reps) == {"sst2", "atsa_rest16"} and reps["sst2"].shape == (500,)


def test_table_pairs_every_model_with_the_reference(run_dir: RunDir) -> None:
    comp = compare.build(run_dir, ["student-before", "student-after", "same"])
    assert comp.reference == "student-before"
    assert comp.header() == ["task", "student-before", "student-after", "Δ student-after", "same", "Δ same"]
    assert [r.name for r in comp.rows] == ["sst2", "atsa_rest16", "basic", "fine-grained", "SentiBench"]
    rows = {r.name: r for r in comp.rows}
    gain = rows["sst2"].deltas["student-after"]
    assert gain.significant and gain.diff.low > 0 and gain.text.endswith(" *")
    assert not rows["atsa_rest16"].deltas["student-after"].significant  # same extraction answers: Δ 0
    assert rows["atsa_rest16"].deltas["student-after"].text == "+0.0 [+0.0, +0.0]"
    atsa = rows["atsa_rest16"].cells["student-after"]
    assert 20 < atsa.value < 60 and atsa.ci[0] < atsa.value < atsa.ci[1]  # 30% of gold tuples kept: F1 ~ 46
    assert rows["SentiBench"].deltas["student-after"].significant
    assert all(not r.deltas["same"].significant and r.deltas["same"].diff.delta == 0 for r in comp.rows)
    cell = rows["sst2"].cells["student-after"]
    assert cell.ci[0] <= cell.value <= cell.ci[1] and cell.text.count("[") == 1
    assert comp.marks(rows["sst2"]) == [False, False, True, False, False]
    md = comp.markdown()
    assert md.splitlines()[0] == "| task | student-before | student-after | Δ student-after | same | Δ same |"
    assert "paired bootstrap" in md and "Only 60 test items in some tasks" in md and "Seeds" not in md


def test_group_rows_show_trained_and_held_out_tasks_apart(run_dir: RunDir) -> None:
    groups = {"ICLDist tasks": ["sst2"], "held out of ICLDist": ["atsa_rest16", "imdb"], "unscored": ["imdb"]}
    comp = compare.build(run_dir, ["student-before", "student-after"], groups=groups)
    rows = {r.name: r for r in comp.rows}
    assert [r.name for r in comp.rows] == ["sst2", "atsa_rest16", "basic", "fine-grained", "ICLDist tasks",
                                           "held out of ICLDist", "SentiBench"]  # no row without a scored task
    assert rows["ICLDist tasks"].kind == "group"
    for slug in ("student-before", "student-after"):  # a one-task group is that task, interval included
        assert rows["ICLDist tasks"].cells[slug].text == rows["sst2"].cells[slug].text
        assert rows["held out of ICLDist"].cells[slug].text == rows["atsa_rest16"].cells[slug].text
    assert rows["ICLDist tasks"].deltas["student-after"].significant
    assert rows["held out of ICLDist"].deltas["student-after"].text == "+0.0 [+0.0, +0.0]"


def test_other_items_are_not_paired(run_dir: RunDir, registry: TaskRegistry) -> None:
    fewer = [part(registry, "sst2", 42, answers(registry, 0.9, 100, 1), 100)]
    write_model(run_dir, registry, "fewer", fewer, [42])
    comp = compare.build(run_dir, ["student-before", "fewer"])
    rows = {r.name: r for r in comp.rows}
    assert rows["sst2"].deltas["fewer"].text == "n/a (other items)"
    assert rows["basic"].deltas["fewer"].text == "n/a (other items)"
    assert rows["SentiBench"].deltas["fewer"].text == "n/a (other tasks)"
    assert any(n.startswith("Seeds 42, 52, 62") for n in comp.notes)  # one model used fewer seeds


def test_cli_table_summary_and_chart_render_the_same_comparison(run_dir: RunDir) -> None:
    comp = compare.build(run_dir, ["student-before", "student-after"],
                         rerun=rerun_hint(["sentidistill", "run", "jobs/configs/local.yaml"], ["eval.limit=10"]))
    console = Console(file=io.StringIO(), width=200)
    print_comparison(console, comp)
    text = console.file.getvalue()
    assert "Δ student-after" in text and " *" in text and "multifaceted" not in text
    assert "`sentidistill run jobs/configs/local.yaml eval.limit=200 'eval.seeds=[42,52,62]'`" in text
    written = write_eval_report(run_dir, comp)
    summary = run_dir.read_text(written[0])
    assert comp.markdown() in summary and "`refs/student-after`" in summary
    assert run_dir.read_bytes(written[1])[:4] == b"\x89PNG"
