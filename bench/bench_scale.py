"""Scale: driver memory and worker scaling of generation and training-data preparation at corpus scale.

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
- training data (`--parts train`): `training.dataset.prepare` (seeded windows, tokenizer actor pool,
  packing, Parquet parts) on `--train-sizes` kept generation rows, in a fresh child each: driver peak
  RSS per size (target largest / smallest <= 1.3) and wall time with 1 vs 2 tokenizer actors
  (`--tokenize-workers`) on the largest size; the tokenizer is SmolLM2's (the tiny test Llama's),
  chat template on. Each child checks that every example was packed exactly once.

    .venv/bin/python bench/bench_scale.py                          # 10k vs 200k rows, 1 vs 2 actors / tokenizers
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


def write_train_rows(folder: Path, n: int, rows_per_part: int = 50_000) -> Path:
    """n kept generation rows (the shared artifact schema) as Parquet parts: chat prompts of ~60 tokens
    and answers of ~40, distinct texts, what a KnowDist data/ folder holds."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sentidistill.generation.outputs import ROW_SCHEMA

    folder.mkdir(parents=True, exist_ok=True)
    for start in range(0, n, rows_per_part):
        rows = []
        for i in range(start, min(n, start + rows_per_part)):
            text = (f"Review {i}: the ramen at table {i % 97} was {'great' if i % 3 else 'cold'}, the broth "
                    f"{'rich' if i % 5 else 'thin'} and the staff member number {i % 7} was friendly enough.")
            msgs = [{"role": "user", "content": f"Rewrite this review in the first person: {text}"}]
            rows.append({"id": f"{i:016x}", "source_id": str(i), "stage": "knowdist", "perspective": "rewrite",
                         "messages": json.dumps(msgs), "response": f"I went there for visit {i} and my ramen "
                         f"was {'great' if i % 3 else 'cold'}; I felt the broth was {'rich' if i % 5 else 'thin'} "
                         "and I was glad the staff were friendly.", "qc": "kept", "teacher": "bench"})
        pq.write_table(pa.Table.from_pylist(rows, schema=ROW_SCHEMA), folder / f"part-{start // rows_per_part:05d}.parquet")
    return folder


def child_train(args: Any) -> None:
    """One training-data preparation in this process; prints one JSON line with its numbers."""
    from common import tiny_model

    from sentidistill.config import TrainDataConfig
    from sentidistill.models import default_cache_dir
    from sentidistill.training.dataset import TokenizeSpec, prepare

    tokenizer = tiny_model(default_cache_dir(args.cache_dir) / "bench" / "tiny-llama")
    spec = TokenizeSpec(student=str(tokenizer), cache_dir=args.cache_dir, max_seq_len=1024,
                        apply_chat_template=True, trust_remote_code=False)
    ray_start_s = start_ray(args)
    out: dict[str, Any] = {"tokenize_workers": args.actors, "ray_start_s": ray_start_s}
    t0 = time.perf_counter()
    with CpuSampler({"tokenizer actors": "Tokenize"}) as cpu:
        data = prepare(args.input, spec, packing=True, pack_window=1024, seed=0, out_uri=args.run_dir,
                       resources=TrainDataConfig(tokenize_workers=args.actors, num_cpus=1, batch_size=256))
    out["total_s"] = round(time.perf_counter() - t0, 3)
    c = data.counts
    if not (c["stage_examples"] == c["train_examples"] == args.rows and c["dropped_too_long"] == 0):
        raise SystemExit(f"bench_scale: training examples lost or duplicated: {json.dumps(c)}")
    out.update(rows=c["train_examples"], packed_rows=c["rows"], tokens=c["tokens"],
               packing_efficiency=c["packing_efficiency"], cpu=cpu.result,
               examples_per_s=per_s(c["train_examples"], out["total_s"]),
               peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
    print("BENCH_SCALE " + json.dumps(out), flush=True)


def child(args: Any) -> None:
    """One generate run in this process; prints one JSON line with its numbers."""
    from sentidistill.stages import generate

    cfg = child_config(Path(args.input), Path(args.run_dir), args.actors, args.batch_size)
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


def run_child(args: Any, replay: Path, run_dir: Path, actors: int, part: str = "generate",
              rows: int = 0) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", part, "--input", str(replay), "--run-dir", str(run_dir),
           "--actors", str(actors), "--batch-size", str(args.batch_size), "--rows", str(rows)]
    for flag, value in (("--ray-cpus", args.ray_cpus), ("--cache-dir", args.cache_dir)):
        if value:
            cmd += [flag, str(value)]
    for _ in range(3):  # on a crowded host Ray's node start can time out (a fixed 30 s): try again
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.child_timeout)
        if "timed out during startup" not in proc.stderr:
            break
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_SCALE ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"bench_scale child failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    result = json.loads(line.removeprefix("BENCH_SCALE "))
    print(f"[bench] {part} {replay.stem} x{actors} workers: {result}", flush=True)
    return result


def generate_part(args: Any, root: Path, sizes: list[int], pools: list[int], raw: dict[str, Any]) -> list[Row]:
    for n in sizes:
        replay = write_replay(root / f"replay-{n}.jsonl", n)
        raw["memory"].append({"size": n, **run_child(args, replay, root / f"mem-{n}", pools[0])})
    replay = write_replay(root / f"rate-{args.rate_size}.jsonl", args.rate_size)
    for actors in pools:
        raw["pools"].append(run_child(args, replay, root / f"rate-{actors}", actors))
    small, big = raw["memory"][0], raw["memory"][-1]
    rows = [Row(f"generate: driver peak RSS, {big['size']} vs {small['size']} rows", big["peak_rss_mb"],
                small["peak_rss_mb"], "MB", target=round(1 / 1.3, 3), lower_is_better=True)]
    base = raw["pools"][0]
    for run in raw["pools"][1:]:
        rows.append(Row(f"generate: rows/s, {run['actors']} engine actors vs {base['actors']}", run["rows_per_s"],
                        base["rows_per_s"], "rows/s", target=1.6 if run["actors"] == 2 * base["actors"] else None))
    return rows


def train_part(args: Any, root: Path, sizes: list[int], workers: list[int], raw: dict[str, Any]) -> list[Row]:
    """Memory over sizes at workers[0]; then each worker count on the largest size (the memory run reused)."""
    runs: dict[tuple[int, int], dict[str, Any]] = {}
    for n in sizes:
        data = write_train_rows(root / f"train-{n}", n)
        for w in (workers if n == sizes[-1] else workers[:1]):
            runs[(n, w)] = {"size": n, **run_child(args, data, root / f"packed-{n}-{w}", w, "train", n)}
    raw["train_memory"] = [runs[(n, workers[0])] for n in sizes]
    raw["train_workers"] = [runs[(sizes[-1], w)] for w in workers]
    small, big = raw["train_memory"][0], raw["train_memory"][-1]
    rows = [Row(f"train data: driver peak RSS, {big['size']} vs {small['size']} examples", big["peak_rss_mb"],
                small["peak_rss_mb"], "MB", target=round(1 / 1.3, 3), lower_is_better=True)]
    base = raw["train_workers"][0]
    for run in raw["train_workers"][1:]:
        rows.append(Row(f"train data: examples/s, {run['tokenize_workers']} tokenizer actors vs "
                        f"{base['tokenize_workers']} ({big['size']} examples)", run["examples_per_s"],
                        base["examples_per_s"], "examples/s"))
    return rows


def main() -> None:
    p = base_parser(__doc__.splitlines()[0], n=0, engine=False)
    p.add_argument("--parts", default="generate,train", help="What to measure: generate, train or both (default).")
    p.add_argument("--sizes", default="10000,200000", help="Corpus sizes for the memory check (default 10000,200000).")
    p.add_argument("--rate-size", type=int, default=50000, help="Corpus size of the actor-pool comparison.")
    p.add_argument("--pools", default="1,2", help="Engine actor counts to compare (default 1,2; first is the base).")
    p.add_argument("--batch-size", type=int, default=256, help="Rows per engine call.")
    p.add_argument("--train-sizes", default="10000,200000",
                   help="Kept examples for training-data preparation (default 10000,200000); workers on the largest.")
    p.add_argument("--tokenize-workers", default="1,2", help="Tokenizer actor counts to compare (default 1,2).")
    p.add_argument("--work-dir", default=None,
                   help="Where inputs and run dirs go (default a local temp dir); on a cluster a path every node mounts.")
    p.add_argument("--child-timeout", type=int, default=3600, help="Seconds one child run may take.")
    p.add_argument("--child", choices=["generate", "train"], help=argparse_hidden())
    p.add_argument("--input", help=argparse_hidden())
    p.add_argument("--run-dir", help=argparse_hidden())
    p.add_argument("--actors", type=int, default=1, help=argparse_hidden())
    p.add_argument("--rows", type=int, default=0, help=argparse_hidden())
    args = p.parse_args()
    if args.child:
        (child if args.child == "generate" else child_train)(args)
        return
    if args.smoke:
        args.sizes, args.rate_size, args.train_sizes = "300,3000", 3000, "300,3000"
    parts = set(args.parts.split(","))
    if not parts or parts - {"generate", "train"}:
        raise SystemExit(f"--parts: {args.parts!r}; use generate, train or generate,train")
    sizes = sorted(int(s) for s in args.sizes.split(","))
    pools = [int(a) for a in args.pools.split(",")]
    train_sizes = sorted(int(s) for s in args.train_sizes.split(","))
    workers = [int(w) for w in args.tokenize_workers.split(",")]
    warn_if_busy()
    env = environment()
    raw: dict[str, Any] = {"memory": [], "pools": []}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-", dir=args.work_dir) as tmp:
        if "generate" in parts:
            rows += generate_part(args, Path(tmp), sizes, pools, raw)
        if "train" in parts:
            rows += train_part(args, Path(tmp), train_sizes, workers, raw)
    measured = ([f"generate (replay engine; memory over {sizes} rows, pools {pools} on {args.rate_size} rows)"]
                if "generate" in parts else [])
    measured += [f"training data (memory over {train_sizes} examples, tokenizers {workers})"] if "train" in parts else []
    title = f"scale: {' and '.join(measured)}; Ray start-up excluded; RSS target ratio >= 0.769 (= big/small <= 1.3)"
    finish(args, "scale", title, rows, raw, env)


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    main()
