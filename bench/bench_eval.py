"""Eval: SentiBench classification by one forward pass (our path) vs the reference-style generate loop.

Same model, dtype and prompts: N items split over SST-2 and Twitter17, 4-shot raw prompts built by
`evaluation.items.part_items` (the reference's seeded demonstration sampling, seed 42).

- baseline (reference style): transformers `model.generate(max_new_tokens=2)` greedy, batch size 4,
  left padding with eos as pad, items in test-file order, then a string match of the 2 new tokens
  against the labels. Model load excluded (loaded before the clock starts).
- ours, UDF: the eval stage's `EvalUDF` in this process on the stage's batch order (part by part,
  longest prompt first) and batch size: one `score_next_token` forward pass per batch, label logits,
  argmax. Engine load excluded, as in the baseline.
- ours, stage: `stages.evaluate.run` on a fresh run dir (Ray Data actor pool; actor start-up, model
  load in the actor, scoring, part files, metrics, chart all included; Ray's start-up excluded).
  Its ratio is taken against the baseline plus its own model load.

Accuracy of both and their agreement are recorded as a check that they answer the same question, and
the padded token positions each path computes (its batches padded to their longest prompt): on a
compute-bound host that ratio, not batching itself, bounds the speed-up.

    .venv/bin/python bench/bench_eval.py                 # SmolLM2-135M, hf, 64 items
    .venv/bin/python bench/bench_eval.py --engine vllm   # our path on vllm(-cpu); the baseline stays transformers
    .venv/bin/python bench/bench_eval.py --smoke
"""

from __future__ import annotations

import gc
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from common import (
    CpuSampler, Row, base_parser, bench_model, chunks, environment, finish, per_s, start_ray, timed, warn_if_busy,
)

TASKS = ("sst2", "twitter17")
SEED = 42
UDF_COLUMNS = ("part", "idx", "kind", "prompt", "chat", "candidates", "max_new_tokens")


def eval_config(args: Any, model: str, run_dir: Path) -> Any:
    from sentidistill.config import PipelineConfig

    return PipelineConfig.model_validate({
        "run_dir": str(run_dir), "data_dir": args.data_dir, "cache_dir": args.cache_dir,
        "train": {"model": {"student": model}},
        "eval": {"tasks": list(TASKS), "seeds": [SEED], "limit": max(1, args.n // len(TASKS)),
                 "engine": {"kind": args.engine, "dtype": args.dtype, "max_model_len": args.max_model_len,
                            "resources": {"batch_size": args.batch_size, "concurrency": 1,
                                          "num_cpus": args.actor_cpus, "num_gpus": args.gpus_per_actor}}},
    })


def build_items(cfg: Any, model: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(items in test order, items in the stage's batch order, gold and labels per part) with the stage's code."""
    from transformers import AutoTokenizer

    from sentidistill.tasks.splits import load_split
    from sentidistill.evaluation.items import Part, TaskInputs, batch_order, measure, part_items
    from sentidistill.stages.evaluate import protocol
    from sentidistill.tasks import load_registry

    proto = protocol(cfg)
    items: list[dict[str, Any]] = []
    parts, info = [], {}
    for task in load_registry(cfg).select(list(TASKS)):
        inputs = TaskInputs(task, load_split(task, "train", cfg.data_dir, cfg.cache_dir),
                            load_split(task, "test", cfg.data_dir, cfg.cache_dir, limit=cfg.eval.limit))
        part = Part(task, SEED, "bench")
        parts.append(part)
        items += part_items(part, inputs, proto)
        info[part.name] = {"labels": task.labels, "gold": [str(ex.gold).lower() for ex in inputs.test]}
    measure(items, AutoTokenizer.from_pretrained(model))
    return items, batch_order(items, parts), info


def padded_tokens(items: list[dict[str, Any]], batch_size: int) -> int:
    """Token positions a batched forward pass computes: each batch is padded to its longest prompt."""
    return sum(len(b) * max(it["prompt_tokens"] for it in b) for b in chunks(items, batch_size))


def accuracy(preds: dict[tuple[str, int], str | None], info: dict[str, Any]) -> float:
    hits = [preds.get((part, i)) == gold for part, v in info.items() for i, gold in enumerate(v["gold"])]
    return round(sum(hits) / max(len(hits), 1), 4)


def reference_loop(model_dir: str, items: list[dict[str, Any]], info: dict[str, Any], dtype: Any,
                   batch_size: int) -> tuple[dict[str, Any], dict[tuple[str, int], str | None]]:
    """generate(max_new_tokens=2) at batch size 4 in test order, then string match: the upstream scripts' way."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side, tok.pad_token = "left", tok.eos_token
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out: dict[str, Any] = {"batch_size": batch_size}
    with timed(out, "load_s"):
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, use_safetensors=True).to(device).eval()
    preds: dict[tuple[str, int], str | None] = {}
    with timed(out, "loop_s"), torch.inference_mode():
        for batch in chunks(items, batch_size):
            enc = tok([it["prompt"] for it in batch], return_tensors="pt", padding=True).to(device)
            seqs = model.generate(**enc, max_new_tokens=2, do_sample=False, pad_token_id=tok.eos_token_id)
            texts = tok.batch_decode(seqs[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            for it, text in zip(batch, texts, strict=True):
                answer = text.strip().lower()
                labels = sorted(info[it["part"]]["labels"], key=len, reverse=True)
                preds[(it["part"], it["idx"])] = next((lab for lab in labels if answer.startswith(lab)), None)
    del model
    gc.collect()
    out["items"] = len(items)
    out["items_per_s"] = per_s(len(items), out["loop_s"])
    out["items_per_s_with_load"] = per_s(len(items), out["load_s"] + out["loop_s"])
    out["accuracy"] = accuracy(preds, info)
    return out, preds


def udf_path(cfg: Any, model: str, ordered: list[dict[str, Any]],
             info: dict[str, Any]) -> tuple[dict[str, Any], dict[tuple[str, int], str | None]]:
    """The stage's EvalUDF in-process, fed the stage's batch order in engine-sized batches."""
    from sentidistill.evaluation.udf import EvalUDF
    from sentidistill.stages.evaluate import model_engine

    engine_cfg = model_engine(cfg.eval.engine, model)
    out: dict[str, Any] = {"batch_size": engine_cfg.resources.batch_size}
    with timed(out, "load_s"):
        udf = EvalUDF(engine_cfg, cfg.cache_dir)
    preds: dict[tuple[str, int], str | None] = {}
    with timed(out, "loop_s"):
        for batch in chunks(ordered, engine_cfg.resources.batch_size):
            res = udf({c: [it[c] for it in batch] for c in UDF_COLUMNS})
            for part, idx, scores in zip(res["part"], res["idx"], res["scores"], strict=True):
                values = [float("-inf") if v is None else v for v in json.loads(scores)]
                preds[(part, idx)] = info[part]["labels"][max(range(len(values)), key=values.__getitem__)]
    out["dtype"] = udf.dtype
    udf.close()
    gc.collect()
    out["items"] = len(ordered)
    out["items_per_s"] = per_s(len(ordered), out["loop_s"])
    out["accuracy"] = accuracy(preds, info)
    return out, preds


def stage_path(cfg: Any, model: str) -> dict[str, Any]:
    from sentidistill.stages import evaluate

    out: dict[str, Any] = {}
    with timed(out, "total_s"), CpuSampler({"engine actors": "EvalUDF"}) as cpu:
        manifest = evaluate.run(cfg, {"bench": model}).parts[0]
    out["cpu"] = cpu.result
    out.update(items=manifest.counts["items_scored_this_run"], errors=manifest.counts["errors"],
               score_s=manifest.timings.get("score_s"))
    out["items_per_s"] = per_s(out["items"], out["total_s"])
    return out


def main() -> None:
    cores = os.cpu_count() or 1
    p = base_parser(__doc__.splitlines()[0], n=64)
    p.add_argument("--batch-size", type=int, default=8, help="Our engine batch size (eval.engine.resources.batch_size).")
    p.add_argument("--baseline-batch-size", type=int, default=4, help="Reference loop batch size (default 4).")
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--actor-cpus", type=float, default=float(cores),
                   help=f"CPUs of the stage's engine actor (its torch threads on CPU; default {cores}).")
    p.add_argument("--gpus-per-actor", type=float, default=0.0)
    args = p.parse_args()
    if args.smoke:
        args.n = 8
    warn_if_busy()
    env = environment()
    model = bench_model(args)
    from sentidistill.engines.hf import resolve_dtype

    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        cfg = eval_config(args, model, Path(tmp) / "run")
        items, ordered, info = build_items(cfg, model)
        print(f"[bench] eval: {len(items)} items of {', '.join(TASKS)}, model {model}", flush=True)
        import torch

        dtype = resolve_dtype(args.dtype, "cuda" if torch.cuda.is_available() else "cpu")
        base, base_preds = reference_loop(model, items, info, dtype, args.baseline_batch_size)
        print(f"[bench] reference loop: {base}", flush=True)
        ours, our_preds = udf_path(cfg, model, ordered, info)
        print(f"[bench] ours (EvalUDF): {ours}", flush=True)
        raw: dict[str, Any] = {"model": model, "engine": args.engine, "items": len(items), "tasks": list(TASKS),
                               "prompt_tokens": sum(it["prompt_tokens"] for it in items),
                               "padded_tokens": {"ours": padded_tokens(ordered, args.batch_size),
                                                 "baseline": padded_tokens(items, args.baseline_batch_size)},
                               "baseline": base,
                               "udf": ours, "agreement": round(sum(our_preds[k] == v for k, v in base_preds.items())
                                                                / max(len(base_preds), 1), 4)}
        raw["ray_start_s"] = start_ray(args)
        raw["stage"] = stage_path(cfg, model)
        print(f"[bench] ours (stage): {raw['stage']}", flush=True)

    rows = [
        Row("items/s, EvalUDF forward pass vs generate(2) loop, model loaded", ours["items_per_s"],
            base["items_per_s"], "items/s", 3.0),
        Row("items/s, eval stage end to end vs loop + model load", raw["stage"]["items_per_s"],
            base["items_per_s_with_load"], "items/s", 3.0),
        Row("token positions computed (batches padded to their longest prompt)", raw["padded_tokens"]["ours"],
            raw["padded_tokens"]["baseline"], "tokens", lower_is_better=True),
        Row("accuracy on the same items (a check, not a speed)", ours["accuracy"], base["accuracy"], check=True),
    ]
    title = (f"eval: first-token scoring (batch {args.batch_size}, {args.engine}) vs reference generate(2) loop "
             f"(batch {args.baseline_batch_size}); {len(items)} items, {raw['prompt_tokens']} prompt tokens; "
             f"Ray start-up {raw['ray_start_s']:.1f}s excluded")
    finish(args, "eval", title, rows, raw, env)


if __name__ == "__main__":
    main()
