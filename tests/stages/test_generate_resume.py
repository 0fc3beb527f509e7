"""Kill `sentidistill generate` mid-run (SIGKILL, whole process group), rerun: exactly the expected rows,
no duplicates, and a third run is a no-op that writes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from sentidistill.config import load_config
from sentidistill.data.corpus import text_hash
from sentidistill.rundir import RunDir
from sentidistill.stages.generate import pair_id, run

REPO = Path(__file__).resolve().parents[2]
PERSPECTIVES = ["emotions", "stance"]
TEXTS = [f"Visit {i}: the {dish} was {mood}, and I would {verdict} come back."
         for i, (dish, mood, verdict) in enumerate(
             [(d, m, v) for d in ("ramen", "curry", "salad", "steak") for m in ("great", "awful", "fine")
              for v in ("gladly", "never")])]


def write_config(tiny_config) -> Path:
    """jobs/configs/tiny.yaml generating every perspective of PERSPECTIVES for TEXTS, default quality filters."""
    corpus = tiny_config.root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    return tiny_config.write(
        "generate.per_text=null", "generate.quality={}", name="cfg.yaml",
        ray={"num_cpus": 2, "include_dashboard": False},
        teacher={"name": "tiny", "max_model_len": 512, "resources": {"batch_size": 2}},
        corpus={"sources": [{"path": str(corpus)}], "min_chars": 10},
        generate={"perspectives": PERSPECTIVES, "max_new_tokens": 48, "temperature": 0.0, "rows_per_part": 2})


def parts(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "knowdist").glob("[df]*/part-*.parquet"))


def stamp(part_name: str) -> str:
    return part_name.rsplit("-", 1)[0]


def start(config: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sentidistill", "generate", str(config)], cwd=REPO,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def test_kill_then_resume_gives_exactly_the_expected_rows(tiny_config, tmp_path: Path) -> None:
    config = write_config(tiny_config)
    run_dir = tmp_path / "run"
    proc = start(config, tmp_path / "first.log")
    try:
        deadline = time.monotonic() + 600  # the corpus step (Ray Data shuffle) comes first; slow on a busy host
        while len(parts(run_dir)) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its local Ray and the engine actor
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    manifest = RunDir(str(run_dir)).manifest("knowdist")
    assert manifest is not None and manifest.status == "running"  # really killed mid-run
    written_before = {p.name for p in parts(run_dir)}
    expected = {pair_id(text_hash(t), p) for t in TEXTS for p in PERSPECTIVES}
    assert 0 < len(written_before) and len(expected) == 48

    second = start(config, tmp_path / "second.log")
    assert second.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-3000:]
    ids = [i for p in parts(run_dir) for i in pq.read_table(p, columns=["id"]).column("id").to_pylist()]
    assert len(ids) == len(set(ids)) == 48 and set(ids) == expected
    assert written_before <= {p.name for p in parts(run_dir)}  # finished parts were kept, not redone
    final = RunDir(str(run_dir)).manifest("knowdist")
    assert final.status == "complete" and final.counts["missing"] == 0
    # Writer actors may finish a part already in flight after the kill, so the first run's rows are
    # counted by its part stamp (part-<stamp>-<uuid>), not by the parts seen at the kill.
    first_stamps = {stamp(name) for name in written_before}
    assert final.counts["generated_this_run"] == 48 - sum(pq.read_metadata(p).num_rows
                                                          for p in parts(run_dir) if stamp(p.name) in first_stamps)
    assert not [f for f in (run_dir / "knowdist").rglob("*") if ".tmp-" in f.name]

    files = sorted((run_dir / "knowdist").rglob("*"))
    again = run(load_config(config))  # complete for this config and corpus: returns before any Ray work
    assert again.finished_at == final.finished_at and sorted((run_dir / "knowdist").rglob("*")) == files
