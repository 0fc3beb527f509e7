"""Train: tokens/s per worker of our Ray Train + DeepSpeed loop vs a plain PyTorch loop; packing efficiency.

Data: KnowDist-like rows from the shared Yelp file (the `rewrite` perspective's chat messages, the
Mixtral rewrite as the answer), written as a generation-stage Parquet part.

- ours: `stages.train.run(cfg, "knowdist")` on a fresh run dir, once per worker count (`--workers`),
  each worker holding cores/workers CPUs (Ray sets its torch threads to that). tokens/s comes from the
  loop's own per-step metrics (train/knowdist/metrics.jsonl, summed over workers by the loop), the
  first `--warmup-steps` steps left out; per worker = total / workers.
- baseline: one process, `torch.set_num_threads(cores/workers)` (what one worker gets), the same
  student in fp32, torch AdamW, gradient clipping 1.0, the same packed micro-batches (from our data
  path, `training.dataset.prepare`) of the same size and sequence length, same warm-up rule.
- packing: the non-pad share of our rows (`training.data.pack_examples` over windows of
  train.data.pack_window, rows of max_seq_len) vs naive padding of every example to max_seq_len, and vs
  padding random batches of `--naive-batch` examples to their longest; on the same tokenized examples.

    .venv/bin/python bench/bench_train.py                    # SmolLM2-135M, seq 1024, 1 and 2 workers
    .venv/bin/python bench/bench_train.py --workers 2 --steps 12
    .venv/bin/python bench/bench_train.py --smoke
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    CpuSampler, Row, base_parser, bench_model, chunks, environment, finish, start_ray, timed, warn_if_busy,
)

YELP = "data://teacher-samples/yelp_mixtral_rewrite_500.jsonl"


def knowdist_rows(args: Any) -> list[dict[str, Any]]:
    """Generation rows in the shared schema: rewrite prompts (chat messages) with the Mixtral answers."""
    from sentidistill.data.locate import resolve_data_path
    from sentidistill.perspectives import select_perspectives

    rewrite = select_perspectives(["rewrite"])[0]
    path = resolve_data_path(YELP, args.data_dir, args.cache_dir)
    with open(path, encoding="utf-8-sig") as f:
        records = [json.loads(line) for line in f if line.strip()][: args.n]
    return [{
        "id": hashlib.sha256(f"{r['ID']}\x1frewrite".encode()).hexdigest()[:16], "source_id": str(r["ID"]),
        "stage": "knowdist", "perspective": "rewrite", "variant": rewrite.variant,
        "messages": json.dumps(rewrite.messages(r["Text"]), ensure_ascii=False), "prompt": None,
        "response": r["mixtral_response"].strip(), "finish_reason": "stop", "prompt_tokens": 0,
        "completion_tokens": 0, "teacher": "mixtral-8x7b", "engine": "replay", "latency_s": 0.0, "qc": "kept",
        "gold": None, "meta": None,
    } for r in records]


def train_config(args: Any, model: str, run_dir: Path, workers: int) -> Any:
    from sentidistill.config import PipelineConfig

    cores = os.cpu_count() or 1
    return PipelineConfig.model_validate({
        "run_dir": str(run_dir), "data_dir": args.data_dir, "cache_dir": args.cache_dir,
        "train": {
            "model": {"student": model},
            "optimizer": {"micro_batch_size": args.micro_batch_size, "max_steps": args.steps, "epochs": 1,
                          "effective_batch_size": args.micro_batch_size * workers},
            "data": {"max_seq_len": args.seq_len, "pack_window": args.pack_window},
            "deepspeed": {"zero_stage": args.zero_stage},
            "resources": {"num_workers": workers, "use_gpu": args.gpu,
                          "resources_per_worker": {"CPU": args.cpus_per_worker or max(1, cores // workers),
                                                   **({"GPU": 1} if args.gpu else {})}},
            "checkpoint": {"log_every_steps": 1, "every_steps": 10**6},
            "icldist": {"enabled": False},
        },
    })


def write_data(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    from sentidistill.rundir import RunDir
    from sentidistill.generation.outputs import ROW_SCHEMA, parquet_bytes

    RunDir(str(run_dir)).write_bytes("knowdist/data/part-00000.parquet", parquet_bytes(rows, ROW_SCHEMA))


def packing(args: Any, model: str, rows: list[dict[str, Any]], max_seq_len: int) -> dict[str, Any]:
    """Non-pad share of our packed rows vs naive padding, on the same tokenized examples."""
    from transformers import AutoTokenizer

    from sentidistill.training.data import pack_examples, parse_messages, tokenize_example

    tok = AutoTokenizer.from_pretrained(model)
    examples = [tokenize_example(tok, parse_messages(r["messages"], r["id"]), r["prompt"], r["response"],
                                 apply_chat_template=True, max_seq_len=max_seq_len) for r in rows]
    pairs = [(e.input_ids, e.labels) for e in examples if e.status != "dropped"]
    random.Random(0).shuffle(pairs)  # the stage shuffles before packing
    packed = [row for window in chunks(pairs, args.pack_window) for row in pack_examples(window, max_seq_len)]
    tokens = sum(len(ids) for ids, _ in pairs)
    dynamic = sum(len(b) * max(len(ids) for ids, _ in b) for b in chunks(pairs, args.naive_batch))
    collated = sum(len(b) * max(r["num_tokens"] for r in b) for b in chunks(packed, args.micro_batch_size))
    return {
        "max_seq_len": max_seq_len, "examples": len(pairs), "truncated": sum(e.status == "truncated" for e in examples),
        "tokens": tokens, "packed_rows": len(packed),
        "ours_rows_of_max_seq_len": round(tokens / (len(packed) * max_seq_len), 4),
        "ours_as_collated": round(tokens / collated, 4),
        "naive_pad_to_max_seq_len": round(tokens / (len(pairs) * max_seq_len), 4),
        "naive_batch": args.naive_batch, "naive_pad_to_longest_in_batch": round(tokens / dynamic, 4),
    }


def micro_batches(cfg: Any, model: str, count: int) -> list[tuple[dict[str, Any], int]]:
    """The first `count` packed micro-batches of our data path, collated as the loop collates them."""
    from transformers import AutoTokenizer

    from sentidistill.rundir import RunDir
    from sentidistill.training.data import collate
    from sentidistill.training.dataset import TokenizeSpec, prepare

    t = cfg.train
    spec = TokenizeSpec(student=model, cache_dir=cfg.cache_dir, max_seq_len=t.data.max_seq_len,
                        apply_chat_template=t.data.apply_chat_template, trust_remote_code=False)
    rd = RunDir(cfg.run_dir)
    data = prepare(rd.uri("knowdist", "data"), spec, packing=True, pack_window=t.data.pack_window, seed=t.seed,
                   resources=t.data, out_uri=rd.uri("bench", "packed"))
    rows = data.dataset.take(count * t.optimizer.micro_batch_size)
    tok = AutoTokenizer.from_pretrained(model)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out = []
    for batch in chunks(rows, t.optimizer.micro_batch_size):
        cols = {k: [r[k] for r in batch] for k in ("input_ids", "labels", "position_ids")}
        out.append((collate(cols, pad, packed=True), sum(len(ids) for ids in cols["input_ids"])))
    return out


def plain_loop(model: str, batches: list[tuple[dict[str, Any], int]], threads: int, warmup: int,
               lr: float, bf16: bool) -> dict[str, Any]:
    """Single-process PyTorch: forward, backward, clip, AdamW step per micro-batch (no accumulation);
    bf16 autocast where our DeepSpeed config trains in bf16 (GPU), fp32 otherwise."""
    import contextlib

    import torch

    from sentidistill.training.model import load_student

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    student = load_student(Path(model)).to(device)
    student.train()
    opt = torch.optim.AdamW(student.parameters(), lr=lr)
    times, tokens = [], []
    with CpuSampler({}) as sampler:
        for batch, n in batches:
            t0 = time.perf_counter()
            cast = torch.autocast(device, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
            with cast:
                out = student(**{k: v.to(device) for k, v in batch.items()}, use_cache=False)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            tokens.append(n)
    torch.set_num_threads(before)
    del student, opt
    measured_s, measured_tokens = sum(times[warmup:]), sum(tokens[warmup:])
    return {"threads": threads, "bf16": bf16, "steps": len(times), "warmup_steps": warmup, "cpu": sampler.result,
            "step_s": [round(x, 3) for x in times], "tokens": measured_tokens, "seconds": round(measured_s, 3),
            "tokens_per_s": round(measured_tokens / measured_s, 2) if measured_s else 0.0}


def stage(cfg: Any, workers: int, warmup: int) -> dict[str, Any]:
    """The real train stage; throughput from the loop's own per-step metrics."""
    from sentidistill.rundir import RunDir
    from sentidistill.stages import train

    out: dict[str, Any] = {"workers": workers, "cpus_per_worker": cfg.train.resources.resources_per_worker.get("CPU")}
    with timed(out, "stage_s"), CpuSampler({"train workers": "RayTrainWorker"}) as cpu:
        manifest = train.run(cfg, "knowdist")
    out["cpu"] = cpu.result
    lines = RunDir(cfg.run_dir).read_text("train/knowdist/metrics.jsonl").splitlines()
    steps = [json.loads(line) for line in lines if line.strip()]
    seconds = [s["tokens"] / s["tokens_per_s"] for s in steps if s["tokens_per_s"]]
    measured_s, measured_tokens = sum(seconds[warmup:]), sum(s["tokens"] for s in steps[warmup:])
    total = measured_tokens / measured_s if measured_s else 0.0
    out.update(steps=len(steps), warmup_steps=warmup, step_s=[round(x, 3) for x in seconds],
               tokens=measured_tokens, seconds=round(measured_s, 3), tokens_per_s=round(total, 2),
               tokens_per_s_per_worker=round(total / workers, 2),
               packing_efficiency=manifest.counts.get("packing_efficiency"), loss=[s["loss"] for s in steps])
    return out


def main() -> None:
    p = base_parser(__doc__.splitlines()[0], n=500, engine=False)
    p.add_argument("--workers", default="1,2", help="Ray Train worker counts to run, comma separated (default 1,2).")
    p.add_argument("--seq-len", type=int, default=1024, help="train.data.max_seq_len (default 1024).")
    p.add_argument("--micro-batch-size", type=int, default=1, help="train.optimizer.micro_batch_size (default 1).")
    p.add_argument("--steps", type=int, default=6, help="Optimizer steps per run (default 6).")
    p.add_argument("--warmup-steps", type=int, default=1, help="First steps left out of tokens/s (default 1).")
    p.add_argument("--pack-window", type=int, default=1024, help="train.data.pack_window (default 1024).")
    p.add_argument("--zero-stage", type=int, default=2, choices=[0, 1, 2, 3])
    p.add_argument("--gpu", action="store_true", help="One GPU per worker (GPU cluster).")
    p.add_argument("--naive-batch", type=int, default=8,
                   help="Examples per batch of the dynamic-padding baseline (padded to their longest; default 8).")
    p.add_argument("--cpus-per-worker", type=float, default=None,
                   help="Ray CPUs per train worker (default: this machine's cores / workers).")
    args = p.parse_args()
    if args.smoke:
        args.n, args.seq_len, args.steps, args.workers = 16, 256, 2, "1"
    from sentidistill.training.deepspeed_config import resolve_precision

    warn_if_busy()
    env = environment()
    model = bench_model(args)
    rows = knowdist_rows(args)
    worker_counts = [int(w) for w in args.workers.split(",")]
    raw: dict[str, Any] = {"model": model, "examples": len(rows), "packing": {}, "runs": [], "baselines": {}}
    for length in sorted({args.seq_len, 2048}):
        raw["packing"][str(length)] = packing(args, model, rows, length)
    print(f"[bench] packing: {raw['packing']}", flush=True)
    raw["ray_start_s"] = start_ray(args)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        for workers in worker_counts:
            run_dir = Path(tmp) / f"run-{workers}"
            write_data(run_dir, rows)
            cfg = train_config(args, model, run_dir, workers)
            threads = max(1, int(cfg.train.resources.resources_per_worker["CPU"]))  # what Ray gives one worker
            if str(threads) not in raw["baselines"]:
                batches = micro_batches(cfg, model, args.steps)
                bf16 = resolve_precision(cfg.train) == "bf16"
                raw["baselines"][str(threads)] = plain_loop(model, batches, threads, args.warmup_steps,
                                                            cfg.train.optimizer.lr, bf16)
                print(f"[bench] plain loop, {threads} threads: {raw['baselines'][str(threads)]}", flush=True)
            run = stage(cfg, workers, args.warmup_steps)
            run["baseline_threads"] = threads
            print(f"[bench] ours, {workers} workers: {run}", flush=True)
            raw["runs"].append(run)

    rows_out = []
    for run in raw["runs"]:
        base = raw["baselines"][str(run["baseline_threads"])]
        rows_out.append(Row(f"tokens/s per worker, {run['workers']} worker(s) x {run['cpus_per_worker']:g} CPU vs "
                            f"plain loop on {run['baseline_threads']} thread(s)", run["tokens_per_s_per_worker"],
                            base["tokens_per_s"], "tok/s", 0.90))
    for length, stats in raw["packing"].items():
        target = 0.95 if int(length) == args.seq_len else None
        rows_out.append(Row(f"non-pad share, packed rows of {length} vs every example padded to {length}",
                            stats["ours_rows_of_max_seq_len"], stats["naive_pad_to_max_seq_len"], "", target,
                            target_on="ours"))
        rows_out.append(Row(f"non-pad share, packed rows of {length} as collated vs random batches of "
                            f"{args.naive_batch} examples padded to their longest",
                            stats["ours_as_collated"], stats["naive_pad_to_longest_in_batch"]))
    title = (f"train: Ray Train + DeepSpeed ZeRO-{args.zero_stage} vs plain PyTorch; seq {args.seq_len}, micro-batch "
             f"{args.micro_batch_size}, {args.steps} steps ({args.warmup_steps} warm-up left out); "
             f"Ray start-up {raw['ray_start_s']:.1f}s excluded")
    finish(args, "train", title, rows_out, raw, env)


if __name__ == "__main__":
    main()
