"""Serve: throughput and p50/p99 latency of `POST /v1/sentiment` with dynamic batching vs max_batch_size=1.

The real Serve app (`serving.launch.start`: FastAPI ingress + batching StudentModel deployment) is
started twice on 127.0.0.1, on the same model and engine settings: once with serve.max_batch_size
from the config schema (ours) and once with max_batch_size=1 (baseline: one request per forward
pass). A real HTTP load generator (httpx, asyncio) runs closed-loop clients at each concurrency level
(`--levels`, default 1, 8, 32, 64): each client sends its next request when the previous one answered,
until the level's request budget or time limit is spent. Every request is one SST-2 test sentence
labelled by the `sentiment` task with the served k=4 demonstrations (one forward pass per text).

Throughput counts answered requests per second of the level's wall time; latencies are per request,
client side. The batch sizes the model deployment really ran are read from `GET /v1/stats`. App start
(replica start-up, model load) and Ray start-up are reported, not timed with the load. The load
generator runs on the same machine as the server: on a small CPU host it competes for the cores, and
the CPU seconds of each role (model replica, ingress, HTTP proxy, this driver = the load generator)
are recorded per level.

    .venv/bin/python bench/bench_serve.py                    # SmolLM2-135M, hf
    .venv/bin/python bench/bench_serve.py --engine vllm
    .venv/bin/python bench/bench_serve.py --smoke
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import Counter
from typing import Any

from common import CpuSampler, Row, base_parser, bench_model, environment, finish, per_s, start_ray, timed, warn_if_busy

ROUTE = "/v1/sentiment"
ROLES = {"model replica": "StudentModel", "ingress": "Ingress", "http proxy": "ProxyActor",
         "serve controller": "ServeController"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_config(args: Any, model: str, max_batch_size: int) -> Any:
    from sentidistill.config import PipelineConfig

    return PipelineConfig.model_validate({
        "data_dir": args.data_dir, "cache_dir": args.cache_dir, "train": {"model": {"student": model}},
        "serve": {"host": "127.0.0.1", "port": free_port(), "app_name": "sentidistill-bench", "tasks": ["sst2"],
                  "engine": {"kind": args.engine, "dtype": args.dtype, "max_model_len": args.max_model_len,
                             "resources": {"batch_size": args.engine_batch_size, "num_cpus": args.replica_cpus,
                                           "num_gpus": args.gpus_per_replica}},
                  "max_batch_size": max_batch_size, "max_ongoing_requests": args.max_ongoing_requests},
    })


def texts(args: Any) -> list[str]:
    from sentidistill.tasks.splits import load_split
    from sentidistill.tasks import load_registry

    task = load_registry(data_dir=args.data_dir, cache_dir=args.cache_dir).get("sst2")
    return [ex.text for ex in load_split(task, "test", args.data_dir, args.cache_dir, limit=args.n)]


async def closed_loop(url: str, bodies: list[dict[str, Any]], clients: int, budget: int,
                      limit_s: float) -> dict[str, Any]:
    """`clients` concurrent clients, each sending its next request when the last one answered."""
    import httpx
    import numpy as np

    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    sent = 0
    t_start = time.perf_counter()

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < budget and time.perf_counter() - t_start < limit_s:
            body = bodies[sent % len(bodies)]
            sent += 1
            t0 = time.perf_counter()
            try:
                r = await http.post(ROUTE, json=body)
                statuses[r.status_code] += 1
            except httpx.HTTPError as e:
                statuses[-1] += 1
                print(f"[bench] request failed: {type(e).__name__}: {e}", flush=True)
                continue
            if r.status_code == 200:
                latencies.append(time.perf_counter() - t0)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        t_start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - t_start
    lat = np.array(latencies) * 1000 if latencies else np.array([0.0])
    return {"clients": clients, "requests": sent, "ok": len(latencies), "statuses": dict(statuses),
            "wall_s": round(wall, 3), "throughput_rps": per_s(len(latencies), wall),
            "p50_ms": round(float(np.percentile(lat, 50)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1),
            "mean_ms": round(float(lat.mean()), 1)}


def batch_counts(url: str) -> Counter[int]:
    import httpx

    sizes = httpx.get(f"{url}/v1/stats", timeout=30).json()["batches"]["score"]["by_size"]
    return Counter({int(k): v for k, v in sizes.items()})


def run_app(args: Any, model: str, max_batch_size: int, bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """Start the app, warm it up, run every concurrency level, stop it."""
    import httpx

    from sentidistill.serving import launch

    cfg = serve_config(args, model, max_batch_size)
    out: dict[str, Any] = {"max_batch_size": max_batch_size, "batch_wait_timeout_s": cfg.serve.batch_wait_timeout_s,
                           "max_ongoing_requests": cfg.serve.replica_max_ongoing_requests,
                           "levels": []}
    with timed(out, "start_s"):
        endpoint = launch.start(cfg, model)
    try:
        httpx.get(f"{endpoint.url}/healthz", timeout=120).raise_for_status()
        asyncio.run(closed_loop(endpoint.url, bodies, 4, 8, 120))  # warm-up: first forward passes, connections
        before = batch_counts(endpoint.url)
        for clients in args.levels:
            budget = max(args.min_requests, args.requests_per_client * clients)
            with CpuSampler(ROLES) as cpu:
                level = asyncio.run(closed_loop(endpoint.url, bodies, clients, budget, args.level_seconds))
            level["cpu"] = cpu.result
            after = batch_counts(endpoint.url)
            ran = after - before
            before = after
            level["batch_sizes"] = {str(k): v for k, v in sorted(ran.items())}
            level["mean_batch"] = round(sum(k * v for k, v in ran.items()) / max(sum(ran.values()), 1), 2)
            print(f"[bench] max_batch_size={max_batch_size}, {clients} clients: {level}", flush=True)
            out["levels"].append(level)
    finally:
        launch.stop(cfg.serve.app_name)
    return out


def main() -> None:
    from sentidistill.config import ServeConfig

    cores = os.cpu_count() or 1
    default_mbs = ServeConfig.model_fields["max_batch_size"].default
    p = base_parser(__doc__.splitlines()[0], n=256)  # n: distinct SST-2 test sentences sent
    p.add_argument("--levels", default="1,8,32,64", help="Concurrent clients per level, comma separated.")
    p.add_argument("--requests-per-client", type=int, default=4, help="Request budget per client per level.")
    p.add_argument("--min-requests", type=int, default=16, help="Smallest request budget of a level.")
    p.add_argument("--level-seconds", type=float, default=120.0, help="Time limit of one level.")
    p.add_argument("--max-batch-size", type=int, default=default_mbs,
                   help=f"serve.max_batch_size of our path (default: the schema's, {default_mbs}).")
    p.add_argument("--max-ongoing-requests", type=int, default=None,
                   help="serve.max_ongoing_requests of both apps (default: the schema's, 8 x max_batch_size; "
                        "32 reproduces the old default behind the 64-client slowdown).")
    p.add_argument("--engine-batch-size", type=int, default=16, help="serve.engine.resources.batch_size (local.yaml: 16).")
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--replica-cpus", type=float, default=float(cores),
                   help=f"CPUs of the model replica (its torch threads on CPU; default {cores}).")
    p.add_argument("--gpus-per-replica", type=float, default=0.0)
    args = p.parse_args()
    args.levels = [int(x) for x in args.levels.split(",")]
    if args.smoke:
        args.requests_per_client, args.min_requests, args.level_seconds = 1, 2, 60.0
    warn_if_busy()
    env = environment()
    model = bench_model(args)
    bodies = [{"texts": [t], "task": "sentiment"} for t in texts(args)]
    raw: dict[str, Any] = {"model": model, "engine": args.engine, "route": ROUTE, "ray_start_s": start_ray(args)}
    raw["batched"] = run_app(args, model, args.max_batch_size, bodies)
    raw["unbatched"] = run_app(args, model, 1, bodies)

    rows = []
    for ours, base in zip(raw["batched"]["levels"], raw["unbatched"]["levels"], strict=True):
        c = ours["clients"]
        target = 3.0 if c == max(args.levels) and c >= 32 else None
        rows.append(Row(f"throughput, {c} clients", ours["throughput_rps"], base["throughput_rps"], "req/s", target))
        rows.append(Row(f"p50 latency, {c} clients", ours["p50_ms"], base["p50_ms"], "ms", lower_is_better=True))
        rows.append(Row(f"p99 latency, {c} clients", ours["p99_ms"], base["p99_ms"], "ms", lower_is_better=True))
    title = (f"serve: {ROUTE} with @serve.batch max_batch_size={args.max_batch_size} vs 1 ({args.engine}, "
             f"engine batch {args.engine_batch_size}); closed-loop HTTP clients on 127.0.0.1; Ray start-up "
             f"{raw['ray_start_s']:.1f}s and app start-up excluded")
    finish(args, "serve", title, rows, raw, env)


if __name__ == "__main__":
    main()
