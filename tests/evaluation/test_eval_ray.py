"""SentiBench evaluation through a real local Ray with the tiny model: all 12 tasks, files consistent with
the predictions, resumable per (task, seed), a user task from YAML + JSONL via the CLI, colliding labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sentidistill.cli import app
from sentidistill.config import PipelineConfig
from sentidistill.errors import ConfigError
from sentidistill.rundir import RunDir
from sentidistill.stages.evaluate import run
from sentidistill.evaluation.scoring import stored_prediction
from sentidistill.tasks import load_registry
from sentidistill.tasks.reference import scorer
from user_tasks import REVIEWS_YAML, write_reviews_task

TASKS_12 = ["imdb", "yelp2", "sst2", "twitter17", "irony18", "emotion20", "pstance", "intimacy", "atsa_rest16",
            "acsa_rest16", "asqp_rest16", "ssa_opener"]


def make_cfg(tiny: Any, run_dir: Path, data_dir: Path, **eval_over: Any) -> PipelineConfig:
    """jobs/configs/tiny.yaml (`tiny`: a TinyConfig) with this eval section: the 12 SentiBench tasks, 2 items."""
    ev = {"seeds": [42], "limit": 2, "max_new_tokens": 12,
          "engine": {"kind": "hf", "resources": {"batch_size": 4}, "max_model_len": 1024}, **eval_over}
    return tiny.load(f"run_dir={run_dir}", f"data_dir={data_dir}", replace={"eval": ev})


def read_predictions(run_dir: Path, slug: str) -> list[dict[str, Any]]:
    text = (run_dir / "eval" / slug / "predictions.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, tiny_configs, shared_data: Path,
             ray_local):
    root = tmp_path_factory.mktemp("eval")
    cfg = make_cfg(tiny_configs(root), root / "run", shared_data)
    return cfg, run(cfg, {"tiny": str(tiny_model)}).parts[0]


def test_twelve_tasks_files_and_metrics_agree_with_predictions(full_run) -> None:
    cfg, manifest = full_run
    run_dir = Path(cfg.run_dir)
    folder = run_dir / "eval" / "tiny"
    assert manifest.status == "complete" and manifest.stage == "eval/tiny"
    assert manifest.counts["parts"] == 12 and manifest.counts["missing_parts"] == 0
    assert manifest.counts["parts_scored_this_run"] == 12 and manifest.counts["items_scored_this_run"] == 24
    for name in ("predictions.jsonl", "metrics.json", "metrics.md", "scores.png", "manifest.json", "config.yaml"):
        assert (folder / name).is_file(), name
    assert (folder / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    metrics = json.loads((folder / "metrics.json").read_text())
    assert list(metrics["tasks"]) == TASKS_12
    assert metrics["k_per_task"] == {t: 4 for t in TASKS_12} and metrics["seeds"] == [42]
    assert metrics["dtype"] == "float32" and metrics["engine"] == "hf" and metrics["prompt_variant"] == "raw"
    assert metrics["items_per_task"] == {t: 2 for t in TASKS_12}
    assert set(metrics["categories"]) == {"basic", "multifaceted", "fine-grained"}
    sb = metrics["sentibench"]
    assert sb["complete"] and sb["tasks_scored"] == 12
    assert sb["score"] == pytest.approx(100 * sum(t["mean"] for t in metrics["tasks"].values()) / 12)

    preds = read_predictions(run_dir, "tiny")
    assert len(preds) == 24 and {p["task"] for p in preds} == set(TASKS_12)
    registry = load_registry(cfg)
    for name in TASKS_12:
        task, rows = registry.get(name), [p for p in preds if p["task"] == name]
        test = registry.load_split(name, "test", limit=2)
        assert [r["id"] for r in rows] == [ex.id for ex in test]
        # the metric recomputed from predictions.jsonl alone equals metrics.json (SentiBench: reference mode)
        assert {r["scoring"] for r in rows} == {"reference"} and metrics["tasks"][name]["scoring"] == "reference"
        recomputed = scorer("reference")(task, test, [stored_prediction(task, r) for r in rows])
        seed = metrics["tasks"][name]["seeds"]["42"]
        assert recomputed["score"] == pytest.approx(seed["score"]) and "tolerant/score" in seed
        too_long = [r for r in rows if r["finish_reason"] == "too_long"]
        assert metrics["prompts_too_long"][name] == seed["prompts_too_long"] == len(too_long)
        for r in rows:
            assert len(r["prompt_sha256"]) == 64 and r["prompt_tokens"] > 0
            if r in too_long:  # never run, never cut: wrong in both modes
                assert r["prompt_tokens"] + (1 if task.kind == "classify" else 12) > 1024
                assert not r["correct"] and not r["alt"]["correct"] and r["scores"] is None
            elif task.kind == "classify":
                assert set(r["scores"]) == set(task.labels) and r["parsed"] in task.labels
                assert r["parsed"] == max(task.labels, key=lambda lab: r["scores"][lab])
                assert r["correct"] == (r["parsed"] == r["gold"]) and r["finish_reason"] == "scored"
            else:
                assert r["finish_reason"] in ("stop", "length") and isinstance(r["raw_output"], str)
    # classification accuracy is recorded, and parse failures for extraction
    assert metrics["tasks"]["imdb"]["means"]["accuracy"] == pytest.approx(
        sum(r["correct"] for r in preds if r["task"] == "imdb") / 2)
    assert "parse_failure_rate" in metrics["tasks"]["asqp_rest16"]["means"]
    assert metrics["max_model_len"] == 1024 and metrics["prompts_too_long"]["imdb"] > 0  # 4 IMDb reviews > 1024
    assert manifest.counts["prompts_too_long"] == sum(metrics["prompts_too_long"].values())
    md = (folder / "metrics.md").read_text()
    assert "scored as wrong (never cut): imdb" in md and "Scoring: reference" in md


def test_second_run_is_a_no_op_and_a_deleted_part_alone_reruns(full_run, tiny_model: Path) -> None:
    cfg, first = full_run
    again = run(cfg, {"tiny": str(tiny_model)}).parts[0]
    assert again.finished_at == first.finished_at  # skipped: the manifest was not rewritten

    rd = RunDir(cfg.run_dir)
    parts = {p: (Path(cfg.run_dir) / "eval" / "tiny" / "parts" / p).stat().st_mtime_ns
             for p in rd.list_files("eval/tiny/parts", ".json")}
    gone = next(p for p in parts if p.startswith("sst2/"))
    before = (Path(cfg.run_dir) / "eval" / "tiny" / "metrics.json").read_text()
    rd.delete(f"eval/tiny/parts/{gone}")
    third = run(cfg, {"tiny": str(tiny_model)}).parts[0]
    assert third.counts["parts_scored_this_run"] == 1 and third.counts["items_scored_this_run"] == 2
    after = {p: (Path(cfg.run_dir) / "eval" / "tiny" / "parts" / p).stat().st_mtime_ns for p in parts}
    assert [p for p in parts if after[p] != parts[p]] == [gone]
    # same model, same prompts: the rescored part reproduces the scores exactly
    assert json.loads((Path(cfg.run_dir) / "eval" / "tiny" / "metrics.json").read_text())["tasks"] == \
        json.loads(before)["tasks"]


def test_custom_yaml_task_end_to_end_through_the_cli(tmp_path: Path, tiny_model: Path, shared_data: Path,
                                                     ray_local) -> None:
    task_file = write_reviews_task(tmp_path / "tasks")
    config = tmp_path / "cfg.yaml"
    config.write_text(f"run_dir: {tmp_path / 'run'}\ntrain: {{model: {{student: unused}}}}\n"
                      f"tasks: {{extra_files: [{task_file}]}}\n"
                      "eval: {engine: {kind: hf, max_model_len: 512, resources: {batch_size: 8}}}\n")
    result = CliRunner().invoke(app, ["eval", str(config), "--model", f"mine={tiny_model}", "--tasks", "my_reviews",
                                      "--seeds", "1,2"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "eval" / "mine" / "metrics.json").read_text())
    task = metrics["tasks"]["my_reviews"]
    assert task["items"] == 20 and task["n_seeds"] == 2 and set(task["seeds"]) == {"1", "2"}
    assert metrics["k_per_task"] == {"my_reviews": 2} and metrics["sentibench"] is None
    assert metrics["categories"] == {"product": pytest.approx(100 * task["mean"])}
    assert len(read_predictions(tmp_path / "run", "mine")) == 40
    summary = (tmp_path / "run" / "eval" / "summary.md").read_text()
    assert "| my_reviews |" in summary and "| **product** |" in summary and "imdb" not in summary  # scored rows only
    assert task["ci"][0] <= task["mean"] <= task["ci"][1] and set(task["seed_ci"]) == {"1", "2"}
    assert (tmp_path / "run" / "eval" / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    assert "my_reviews" in result.output and "SentiBench" in result.output


def test_labels_sharing_a_first_token_fail_before_any_scoring(tiny_config, tmp_path: Path, tiny_model: Path,
                                                               ray_local) -> None:
    clash = (REVIEWS_YAML.replace("name: my_reviews", "name: unsure")
             .replace("[bad, good]", "[not intimate, not sure]")
             .replace('{"0": bad, "1": good}', '{"0": not intimate, "1": not sure}')
             .replace("['bad', 'good']", "['not intimate', 'not sure']"))
    task_file = write_reviews_task(tmp_path / "tasks", clash, "unsure")
    cfg = tiny_config.load(replace={"tasks": {"extra_files": [str(task_file)]},
                                    "eval": {"tasks": ["unsure"], "seeds": [1]}})
    with pytest.raises(ConfigError) as e:
        run(cfg, [str(tiny_model)])
    msg = str(e.value)
    assert "task 'unsure'" in msg and "unsure.yaml" in msg and "' not intimate'" in msg and "' not sure'" in msg
    assert "first token" in msg
    manifest = RunDir(str(tmp_path / "run")).manifest(f"eval/{tiny_model.name}")
    assert manifest is not None and manifest.status == "failed" and "not sure" in manifest.error
    assert not list((tmp_path / "run").rglob("parts"))

