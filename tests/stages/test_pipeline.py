"""The whole pipeline on the tiny model: every stage once, resume after an interruption, status."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sentidistill.cli import app
from sentidistill.config import load_config
from sentidistill.rundir import RunDir
from sentidistill.stages import pipeline

REVIEWS = [
    "The pasta was cold and the waiter ignored us for twenty minutes.",
    "Lovely staff, fresh bread, and the view over the harbour is superb.",
    "Battery died after two days; support never answered my emails.",
    "Great screen, crisp sound, and it arrived a day early.",
    "The room smelled of smoke and the shower barely worked.",
    "A touching film with superb acting and a clever script.",
]


def pipeline_config(tiny_config) -> Path:
    """jobs/configs/tiny.yaml (the `tiny_config` fixture) reading REVIEWS, written as a YAML file."""
    corpus = tiny_config.root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"review": t, "stars": i % 5 + 1}) + "\n" for i, t in enumerate(REVIEWS)))
    return tiny_config.write(f"cache_dir={tiny_config.root / 'cache'}", corpus={
        "sources": [{"path": str(corpus), "text_column": "review", "meta_columns": ["stars"]}]})


def test_select_steps_validates_names() -> None:
    assert pipeline.select_steps("train-knowdist", "eval") == ["train-knowdist", "train-icldist", "eval"]
    assert pipeline.select_steps("build-icl", "icl") == ["icl"]  # the old name still works
    with pytest.raises(Exception, match="--from 'trian'.*steps: generate"):
        pipeline.select_steps("trian", None)
    with pytest.raises(Exception, match="comes after"):
        pipeline.select_steps("eval", "generate")


@pytest.mark.slow  # CI covers the same on real models: tests/test_default_pipeline.py (e2e) and the cluster rehearsal
def test_whole_pipeline_then_noop_rerun(tiny_config, ray_local) -> None:
    cfg = load_config(pipeline_config(tiny_config))
    first = pipeline.run(cfg)
    assert [s.step for s in first.steps] == pipeline.STEPS
    assert all(s.status == "ran" for s in first.steps), first.steps
    rd = RunDir(cfg.run_dir)
    for folder in ("knowdist", "icldist", "train/knowdist", "train/icldist", "eval/teacher",
                   "eval/student-before", "eval/student-after", "report"):
        assert rd.manifest(folder).status == "complete", folder
    assert set(first.eval_models) == {"teacher", "student-before", "student-after"}
    html = rd.read_text("report/index.html")
    assert "student-after" in html and "sentibench-table" in html and "overall" + "" in html

    second = pipeline.run(cfg)
    statuses = {s.step: s.status for s in second.steps}
    assert all(statuses[s] == "skipped" for s in pipeline.STEPS if s != "report"), statuses

    result = CliRunner().invoke(app, ["status", cfg.run_dir], env={"COLUMNS": "250"})
    assert result.exit_code == 0 and "train/icldist" in result.output and "complete" in result.output


# slow: CI's budget. Resume is covered piecewise in the default set: tests/stages/test_generate_resume.py (killed
# generation), tests/training/test_train_faults.py (killed Train worker), complete stages skipped in
# tests/test_default_pipeline.py.
@pytest.mark.slow
def test_interrupted_run_resumes_without_redoing_generation(tiny_config) -> None:
    """Kill `sentidistill run` once training has checkpointed; the rerun skips generation and resumes training."""
    path = pipeline_config(tiny_config)
    cfg = load_config(path)
    rd = RunDir(cfg.run_dir)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "sentidistill", "run", str(path), "ray.num_cpus=4", "train.optimizer.max_steps=6",
           "--until", "train-knowdist"]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    metrics = Path(cfg.run_dir) / "train/knowdist/metrics.jsonl"
    deadline = time.time() + 600
    try:
        while time.time() < deadline and proc.poll() is None:
            # metrics.jsonl gets a step's line just before its checkpoint is reported: once step 2 is
            # logged, step 1's checkpoint is safely registered.
            rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()] if metrics.exists() else []
            if any(r.get("step", 0) >= 2 for r in rows):
                break
            time.sleep(1)
        assert proc.poll() is None, "the run ended before training checkpointed; nothing to interrupt"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    generated = rd.manifest("knowdist")
    assert generated.status == "complete"
    assert rd.manifest("train/knowdist").status == "running"  # killed mid-stage

    status = CliRunner().invoke(app, ["status", cfg.run_dir], env={"COLUMNS": "250"})
    assert "running or interrupted" in status.output

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rd.manifest("knowdist").finished_at == generated.finished_at  # generation not redone
    trained = rd.manifest("train/knowdist")
    assert trained.status == "complete" and trained.extra["resumed_from_step"] > 0
