"""Scale: driver memory and engine-pool throughput of `sentidistill generate` at corpus scale.

The replay engine answers from a file, so no model runs and what is measured is the orchestration:
the corpus read and dedup on Ray Data, the resume anti-join, the engine actor pool and the sink tasks
that write the Parquet parts.

- driver peak RSS: `stages.generate.run` in a fresh child process per corpus size (`--sizes`), on a
  fresh run dir; the child's own peak RSS (`ru_maxrss`; Ray's processes are not in it). Memory that
  does not grow with the corpus means the driver never holds its rows. Target: largest / smallest <= 1.3.
- rows/s with 2 engine actors vs 1 (`--pools`) on `--rate-size` rows, same child set-up; timed over
  the whole `run` call (corpus preparation included). Target >= 1.6 where cores allow: the CPU split per
  role (engine actors, driver, rest of Ray, unrelated processes) is recorded to show where time went.
- every child checks its own result: texts == pairs == rows written, 0 missing (no lost or duplicated id).

    .venv/bin/python bench/bench_scale.py                          # 10k vs 200k rows, 1 vs 2 actors
    .venv/bin/python bench/bench_scale.py --sizes 10000,1000000 --rate-size 200000 --pools 1,2,4   # a cluster
    .venv/bin/python bench/bench_scale.py --smoke                  # 300 vs 3000 rows, seconds
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import CpuSampler, Row, base_parser, environment, finish, per_s, start_ray, warn_if_busy


def write_replay(path: Path, n: int) -> Path:
    """n distinct texts with recorded first-person answers (the `rewrite` perspective's check passes)."""
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            text = f"Visit {i}: the ramen at table {i % 97} was {'great' if i % 3 else 'cold'} and the staff {i % 7}."
            f.write(json.dumps({"ID": i, "Text": text, "response": f"I loved visit {i}; my ramen was warm."}) + "\n")
    return path


def child_config(replay: Path, run_dir: Path, actors: int, batch_size: int) -> Any:
    from sentidistill.config import PipelineConfig

    return PipelineConfig.model_validate({
        "run_dir": str(run_dir),
        "teacher": {"kind": "replay", "resources": {"batch_size": batch_size, "concurrency": actors, "num_cpus": 1},
                    "replay": {"path": str(replay), "text_column": "Text", "response_column": "response",
                               "id_column": "ID", "perspective": "rewrite"}},
        "generate": {"rows_per_part": 5000},
        "train": {"model": {"student": "unused"}},
    })


def child(args: Any) -> None:
    """One generate run in this process; prints one JSON line with its numbers."""
    from sentidistill.stages import generate

    cfg = child_config(Path(args.replay), Path(args.run_dir), args.actors, args.batch_size)
    ray_start_s = start_ray(args)
    out: dict[str, Any] = {"actors": args.actors, "ray_start_s": ray_start_s}
    t0 = time.perf_counter()
    with CpuSampler({"engine actors": "GenerateUDF"}) as cpu:
        manifest = generate.run(cfg)
    out["total_s"] = round(time.perf_counter() - t0, 3)
    c = manifest.counts
    written = c["kept"] + c["filtered"]
    if not (c["texts"] == c["pairs"] == written == c["generated_this_run"] and c["missing"] == 0):
        raise SystemExit(f"bench_scale: rows lost or duplicated: {json.dumps(c)[:2000]}")
    out.update(rows=written, generate_s=manifest.timings.get("generate_s"), cpu=cpu.result,
               rows_per_s=per_s(written, out["total_s"]),
               peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
    print("BENCH_SCALE " + json.dumps(out), flush=True)


def run_child(args: Any, replay: Path, run_dir: Path, actors: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", "--replay", str(replay), "--run-dir", str(run_dir),
           "--actors", str(actors), "--batch-size", str(args.batch_size)]
    if args.ray_cpus:
        cmd += ["--ray-cpus", str(args.ray_cpus)]
    for _ in range(3):  # on a crowded host Ray's node start can time out (a fixed 30 s): try again
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.child_timeout)
        if "timed out during startup" not in proc.stderr:
            break
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_SCALE ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"bench_scale child failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    result = json.loads(line.removeprefix("BENCH_SCALE "))
    print(f"[bench] {replay.stem} x{actors} actors: {result}", flush=True)
    return result


def main() -> None:
    p = base_parser(__doc__.splitlines()[0], n=0, engine=False)
    p.add_argument("--sizes", default="10000,200000", help="Corpus sizes for the memory check (default 10000,200000).")
    p.add_argument("--rate-size", type=int, default=50000, help="Corpus size of the actor-pool comparison.")
    p.add_argument("--pools", default="1,2", help="Engine actor counts to compare (default 1,2; first is the base).")
    p.add_argument("--batch-size", type=int, default=256, help="Rows per engine call.")
    p.add_argument("--child-timeout", type=int, default=3600, help="Seconds one child run may take.")
    p.add_argument("--child", action="store_true", help=argparse_hidden())
    p.add_argument("--replay", help=argparse_hidden())
    p.add_argument("--run-dir", help=argparse_hidden())
    p.add_argument("--actors", type=int, default=1, help=argparse_hidden())
    args = p.parse_args()
    if args.child:
        child(args)
        return
    if args.smoke:
        args.sizes, args.rate_size = "300,3000", 3000
    sizes = sorted(int(s) for s in args.sizes.split(","))
    pools = [int(a) for a in args.pools.split(",")]
    warn_if_busy()
    env = environment()
    raw: dict[str, Any] = {"memory": [], "pools": []}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        root = Path(tmp)
        for n in sizes:
            replay = write_replay(root / f"replay-{n}.jsonl", n)
            raw["memory"].append({"size": n, **run_child(args, replay, root / f"mem-{n}", pools[0])})
        replay = write_replay(root / f"rate-{args.rate_size}.jsonl", args.rate_size)
        for actors in pools:
            raw["pools"].append(run_child(args, replay, root / f"rate-{actors}", actors))
    small, big = raw["memory"][0], raw["memory"][-1]
    rows = [Row(f"driver peak RSS, {big['size']} vs {small['size']} rows", big["peak_rss_mb"], small["peak_rss_mb"],
                "MB", target=round(1 / 1.3, 3), lower_is_better=True)]
    base = raw["pools"][0]
    for run in raw["pools"][1:]:
        rows.append(Row(f"rows/s, {run['actors']} engine actors vs {base['actors']}", run["rows_per_s"],
                        base["rows_per_s"], "rows/s", target=1.6 if run["actors"] == 2 * base["actors"] else None))
    title = (f"scale: generate with the replay engine; memory over {sizes} rows, pools {pools} on "
             f"{args.rate_size} rows; Ray start-up excluded; driver RSS target ratio >= 0.769 (= big/small <= 1.3)")
    finish(args, "scale", title, rows, raw, env)


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    main()
