"""200k texts through `generate` with the replay engine, end to end, in a child process: every pair
answered exactly once, and the driver's peak memory no larger than for a 2k-text corpus (within 30%):
the corpus, prompts and answers live on Ray Data's workers, never in the driver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench" / "bench_scale.py"
sys.path.insert(0, str(REPO / "bench"))


def generate_in_child(tmp_path: Path, n: int) -> dict:
    from bench_scale import write_replay

    replay = write_replay(tmp_path / f"replay-{n}.jsonl", n)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a private local cluster
    proc = subprocess.run([sys.executable, str(BENCH), "--child", "generate", "--input", str(replay), "--run-dir",
                           str(tmp_path / f"run-{n}"), "--actors", "1", "--batch-size", "512", "--ray-cpus", "4"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=3000)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_SCALE ")), None)
    assert proc.returncode == 0 and line, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(line.removeprefix("BENCH_SCALE "))


@pytest.mark.slow
def test_200k_rows_end_to_end_with_flat_driver_memory(tmp_path: Path) -> None:
    small = generate_in_child(tmp_path, 2_000)
    big = generate_in_child(tmp_path, 200_000)
    parts = sorted((tmp_path / "run-200000" / "knowdist").glob("[df]*/part-*.parquet"))
    ids = [i for p in parts for i in pq.read_table(p, columns=["id"]).column("id").to_pylist()]
    assert len(ids) == len(set(ids)) == big["rows"] == 200_000
    corpus = sorted((tmp_path / "run-200000" / "knowdist" / "corpus").glob("part-*.parquet"))
    assert len(corpus) > 1, "the clean corpus is written in parts by Ray Data tasks"
    assert big["peak_rss_mb"] <= 1.3 * small["peak_rss_mb"], (small, big)
