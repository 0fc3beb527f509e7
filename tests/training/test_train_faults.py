"""Faults: a killed worker restarts the run from its last checkpoint; a killed driver's rerun resumes.

Real Ray Train (FailureConfig, CheckpointConfig), real DeepSpeed checkpoints, 2 CPU workers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import ray
from train_helpers import knowdist_rows, train_config, write_stage_data

from sentidistill.config import dump_config
from sentidistill.rundir import RunDir
from sentidistill.stages import train

STEPS = 10


def _rows(run_dir: Path) -> list[dict]:
    path = run_dir / "train" / "knowdist" / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait_for_checkpoint(run_dir: Path, min_step: int, stop: threading.Event | None = None,
                         timeout_s: float = 600) -> bool:
    """Block until Ray Train has registered a checkpoint and metrics.jsonl shows step >= min_step."""
    snapshot = run_dir / "train" / "ray" / "knowdist" / "checkpoint_manager_snapshot.json"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not (stop and stop.is_set()):
        if snapshot.is_file() and any(r["step"] >= min_step for r in _rows(run_dir)):
            return True
        time.sleep(0.2)
    return False


def _train_worker_pids() -> list[int]:
    """PIDs of live Ray Train workers in the test cluster, from the GCS actor table.

    (The state API would need the dashboard, which the shared ray_local fixture does not start.)
    """
    from ray._private.state import actors

    return [a["Pid"] for a in actors().values() if a["ActorClassName"] == "RayTrainWorker" and a["State"] == "ALIVE"]


def _config(run_dir: Path, tiny_model: Path, *extra: str):
    write_stage_data(run_dir, "knowdist", knowdist_rows(), with_manifest=True)
    return train_config(run_dir, tiny_model, run_dir / "cache", "train.knowdist.epochs=20",
                        f"train.knowdist.max_steps={STEPS}", "train.checkpoint.every_steps=2",
                        "train.icldist.enabled=false", *extra)


def test_killed_worker_resumes_from_checkpoint(tmp_path, tiny_model, ray_local):
    cfg = _config(tmp_path, tiny_model, "train.checkpoint.max_failures=2")
    killed: list[int] = []
    done = threading.Event()

    def kill_one_worker() -> None:
        if _wait_for_checkpoint(tmp_path, 3, stop=done):
            pid = _train_worker_pids()[-1]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    killer = threading.Thread(target=kill_one_worker, daemon=True)
    killer.start()
    try:
        manifest = train.run(cfg, "knowdist")
    finally:
        done.set()
        killer.join()
    assert killed, "the run finished before a worker could be killed"
    rows = _rows(tmp_path)
    assert manifest.status == "complete" and manifest.counts["steps"] == STEPS
    assert rows[-1]["step"] == STEPS
    restarts = [r for r in rows if r["resumed_from"] > 0]
    assert restarts, "no metrics row came from a resumed attempt"
    assert restarts[0]["step"] == restarts[0]["resumed_from"] + 1  # picked up right after the checkpoint
    first_attempt = {r["step"]: r["loss"] for r in rows if r["resumed_from"] == 0}
    redone = [r for r in restarts if r["step"] in first_attempt]
    assert redone, "no step was trained in both attempts"
    for r in redone:  # weights, optimizer, LR schedule and data position all came back exactly
        assert r["loss"] == pytest.approx(first_attempt[r["step"]], rel=1e-5)
    assert manifest.extra["resumed_from_step"] >= 2  # the final attempt started from a checkpoint, not step 0
    assert (tmp_path / "train" / "knowdist" / "model" / "model.safetensors").is_file()


@pytest.mark.slow  # a second driver process; a few minutes on 2 shared cores
def test_rerun_after_driver_crash_resumes(tmp_path, tiny_model, ray_local):
    cfg = _config(tmp_path, tiny_model, "train.checkpoint.max_failures=0")
    config_file = tmp_path / "config.yaml"
    config_file.write_text(dump_config(cfg))
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    driver = subprocess.Popen(
        [sys.executable, "-m", "sentidistill", "train", str(config_file), "--stage", "knowdist"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        assert _wait_for_checkpoint(tmp_path, 5), "the first driver never reached a checkpoint"
    finally:
        driver.kill()
        driver.wait()
    deadline = time.monotonic() + 120
    while _train_worker_pids() and time.monotonic() < deadline:  # the dead driver's workers go with it
        time.sleep(1)
    assert RunDir(str(tmp_path)).manifest("train/knowdist").status == "running"  # it really died mid-run
    assert _rows(tmp_path)[-1]["step"] < STEPS

    manifest = train.run(cfg, "knowdist")  # the same command again
    assert manifest.status == "complete" and manifest.counts["steps"] == STEPS
    assert manifest.extra["resumed_from_step"] >= 2
    assert _rows(tmp_path)[-1]["step"] == STEPS
