"""Generate: `sentidistill generate` (Ray Data + engine actors) vs the bare engine in a plain loop.

Same model, same prompts (KnowDist prompts built by the stage's own `build_work` from the shared Yelp
texts, one perspective per text), greedy, a fixed answer budget, the same batch size.

- baseline: `build_engine(teacher)` in this process, then `engine.generate(chunk)` for each chunk of
  `batch_size` prompts. Timed from engine construction to the last answer (model load included).
- ours: `stages.generate.run(cfg)` on a fresh run dir, once per actor pool (`--pools`, ACTORSxCPUS).
  Timed from the call to the returned manifest: corpus read, actor start-up, model load in each actor,
  generation, quality control and Parquet writes included. Ray's own start-up (once per job) is
  measured separately and excluded.

CPU seconds used during each timed block are recorded per role (engine actors, this driver, the rest
of Ray, unrelated processes): on a small host that shows where a gap comes from.

Answers are greedy, so both paths must produce the same text: the share of identical answers is
recorded as a check that they did the same work.

    .venv/bin/python bench/bench_generate.py                      # SmolLM2-135M, hf, 64 prompts
    .venv/bin/python bench/bench_generate.py --engine vllm --pools 1x2
    .venv/bin/python bench/bench_generate.py --smoke              # tiny model, seconds
"""

from __future__ import annotations

import gc
import os
import tempfile
from pathlib import Path
from typing import Any

from common import (
    CpuSampler, Row, base_parser, bench_model, chunks, environment, finish, per_s, start_ray, timed, warn_if_busy,
)

YELP = "data://teacher-samples/yelp_mixtral_rewrite_500.jsonl"


def pipeline_config(args: Any, model: str, run_dir: Path, actors: int, cpus: float) -> Any:
    """The config `sentidistill generate` would get: teacher, corpus and generate as the bench fixes them."""
    from sentidistill.config import PipelineConfig

    return PipelineConfig.model_validate({
        "run_dir": str(run_dir), "data_dir": args.data_dir, "cache_dir": args.cache_dir,
        "teacher": {"kind": args.engine, "model": model, "name": "bench-teacher", "dtype": args.dtype,
                    "max_model_len": args.max_model_len,
                    "resources": {"batch_size": args.batch_size, "concurrency": actors, "num_cpus": cpus,
                                  "num_gpus": args.gpus_per_actor}},
        "corpus": {"sources": [{"path": YELP, "text_column": "Text", "id_column": "ID", "limit": args.n}],
                   "max_chars": 1200},
        "generate": {"per_text": 1, "temperature": 0.0, "max_new_tokens": args.max_new_tokens,
                     "rows_per_part": 256},
        "train": {"model": {"student": model}},
    })


def prompts(cfg: Any) -> list[dict[str, Any]]:
    """The stage's own work rows (same corpus reader, perspectives and prompt builder)."""
    from sentidistill.data.corpus import load_corpus
    from sentidistill.perspectives import select_perspectives
    from sentidistill.stages.generate import build_work

    corpus = load_corpus(cfg.corpus, cfg.data_dir, cfg.cache_dir)
    return build_work(corpus.rows, select_perspectives(cfg.generate.perspectives), cfg.generate)


def baseline(cfg: Any, work: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
    """The bare engine in a plain loop, one `generate` call per batch; returns numbers and answers by id."""
    from sentidistill.engines import build_engine
    from sentidistill.generation.generation import to_request

    out: dict[str, Any] = {}
    with timed(out, "load_s"):
        engine = build_engine(cfg.teacher, cfg.cache_dir)
    completions = []
    with timed(out, "loop_s"), CpuSampler({}) as cpu:
        for batch in chunks(work, cfg.teacher.resources.batch_size):
            completions += engine.generate([to_request(w) for w in batch])
    out["cpu"] = cpu.result
    engine.shutdown()
    del engine
    gc.collect()
    out["rows"] = sum(c.finish_reason != "error" for c in completions)
    out["errors"] = len(completions) - out["rows"]
    out["completion_tokens"] = sum(c.completion_tokens for c in completions)
    out["prompt_tokens"] = sum(c.prompt_tokens for c in completions)
    out["total_s"] = round(out["load_s"] + out["loop_s"], 4)
    out["rows_per_s"] = per_s(out["rows"], out["total_s"])
    out["tokens_per_s"] = per_s(out["completion_tokens"], out["total_s"])
    out["loop_rows_per_s"] = per_s(out["rows"], out["loop_s"])
    out["loop_tokens_per_s"] = per_s(out["completion_tokens"], out["loop_s"])
    return out, {w["id"]: c.text for w, c in zip(work, completions, strict=True)}


def stage(cfg: Any, answers: dict[str, str]) -> dict[str, Any]:
    """`stages.generate.run` on a fresh run dir; throughput over the whole call."""
    from sentidistill.rundir import RunDir
    from sentidistill.stages import generate
    from sentidistill.generation.outputs import StageFolder

    out: dict[str, Any] = {"actors": cfg.teacher.resources.concurrency, "cpus_per_actor": cfg.teacher.resources.num_cpus}
    with timed(out, "total_s"), CpuSampler({"engine actors": "GenerateUDF"}) as cpu:
        manifest = generate.run(cfg)
    out["cpu"] = cpu.result
    c = manifest.counts
    out.update(rows=c["generated_this_run"], errors=c["errors"], completion_tokens=c["completion_tokens"],
               prompt_tokens=c["prompt_tokens"], generate_s=manifest.timings.get("generate_s"))
    out["rows_per_s"] = per_s(out["rows"], out["total_s"])
    out["tokens_per_s"] = per_s(out["completion_tokens"], out["total_s"])
    got = StageFolder(RunDir(cfg.run_dir), generate.STAGE).read(["id", "response"]).to_pydict()
    same = sum(answers.get(i) == r for i, r in zip(got["id"], got["response"], strict=True))
    out["identical_answers"] = round(same / max(len(answers), 1), 4)
    return out


def parse_pools(spec: str) -> list[tuple[int, float]]:
    pools = []
    for item in spec.split(","):
        actors, _, cpus = item.strip().partition("x")
        pools.append((int(actors), float(cpus or 1)))
    return pools


def main() -> None:
    cores = os.cpu_count() or 1
    p = base_parser(__doc__.splitlines()[0], n=64)
    p.add_argument("--batch-size", type=int, default=8, help="Prompts per engine call, both paths (default 8).")
    p.add_argument("--max-new-tokens", type=int, default=128, help="Greedy answer budget (default 128).")
    p.add_argument("--max-model-len", type=int, default=2048, help="Engine prompt + answer budget.")
    p.add_argument("--pools", default=f"1x{cores},2x{max(1, cores // 2)},1x1",
                   help="Actor pools of our path, ACTORSxCPUS_PER_ACTOR, comma separated; the first one is held to "
                   "the 0.90 target. Ray gives each actor OMP_NUM_THREADS=floor(CPUs), so CPUs decide torch's "
                   f"threads on a CPU host (default 1x{cores},2x{max(1, cores // 2)},1x1 on this machine).")
    p.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPUs per engine actor (GPU cluster: 1).")
    args = p.parse_args()
    if args.smoke:
        args.n, args.max_new_tokens, args.batch_size, args.pools = 8, 8, 4, "1x1"
    warn_if_busy()
    env = environment()
    model = bench_model(args)
    pools = parse_pools(args.pools)
    with tempfile.TemporaryDirectory(prefix="bench-generate-") as tmp:
        cfg = pipeline_config(args, model, Path(tmp) / "base", 1, 1.0)
        work = prompts(cfg)
        print(f"[bench] generate: {len(work)} prompts, {args.engine} engine, model {model}", flush=True)
        base, answers = baseline(cfg, work)
        print(f"[bench] baseline: {base}", flush=True)
        raw: dict[str, Any] = {"model": model, "engine": args.engine, "prompts": len(work), "baseline": base,
                               "ray_start_s": start_ray(args), "pools": []}
        for i, (actors, cpus) in enumerate(pools):
            run = stage(pipeline_config(args, model, Path(tmp) / f"run-{i}", actors, cpus), answers)
            print(f"[bench] ours {actors}x{cpus:g}: {run}", flush=True)
            raw["pools"].append(run)

    rows = []
    for i, run in enumerate(raw["pools"]):
        label = f"{run['actors']} actor{'s' if run['actors'] > 1 else ''} x {run['cpus_per_actor']:g} CPU"
        target = 0.90 if i == 0 and run["actors"] == 1 else None
        rows.append(Row(f"rows/s, {label}", run["rows_per_s"], base["rows_per_s"], "rows/s", target))
        rows.append(Row(f"generated tokens/s, {label}", run["tokens_per_s"], base["tokens_per_s"], "tok/s", target))
    if raw["pools"]:
        first = raw["pools"][0]
        rows.append(Row("rows/s, first pool vs baseline loop without its model load", first["rows_per_s"],
                        base["loop_rows_per_s"], "rows/s"))
    title = (f"generate: stage (Ray Data + {args.engine} actors) vs bare engine loop; {len(work)} prompts, "
             f"batch {args.batch_size}, {args.max_new_tokens} new tokens, greedy; Ray start-up "
             f"{raw['ray_start_s']:.1f}s excluded")
    finish(args, "generate", title, rows, raw, env)


if __name__ == "__main__":
    main()
