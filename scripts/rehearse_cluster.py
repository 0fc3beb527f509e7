"""Helpers of scripts/rehearse-cluster.sh: put its inputs on the S3 server, and check what the cluster did.

`prepare` creates the bucket, builds two tiny random Llamas (SmolLM2's tokenizer, runnable on CPU)
and a two-source review corpus, and uploads them, so every node reads models, corpus and
SentiBench from s3:// as on a real cluster. `check` reads the outcome from storage and from Ray's
state API (not from our logs): stage manifests, 12 tasks of metrics, the exported student, where
each GPU actor and Train worker ran, and that no secret appears in any log or artifact.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

REVIEWS = [
    "The pasta was cold and the waiter ignored us for twenty minutes. Never again.",
    "Lovely little place, friendly staff and the best dumplings I have had in years!",
    "Average food, fair prices, nothing memorable but nothing to complain about either.",
    "The battery died after two days and support never answered my emails about it.",
    "Crisp screen, light as a feather, and it charges in under an hour. Great buy.",
    "It works, I suppose, though the cable feels cheap and the box arrived crushed.",
]


def _fs() -> pafs.S3FileSystem:
    """S3 through the same environment a user sets (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...)."""
    fs, _ = pafs.FileSystem.from_uri("s3://bucket")
    return fs  # type: ignore[return-value]


def _tiny_llama(out: Path, seed: int, tok: Any) -> None:
    """A 2-layer random Llama with SmolLM2's tokenizer, as tests/conftest.py's `tiny_model`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=4096, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def _put_dir(fs: pafs.FileSystem, local: Path, dest: str) -> None:
    fs.create_dir(dest, recursive=True)
    pafs.copy_files(str(local), dest, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def prepare(bucket: str, work: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs = pafs.S3FileSystem(allow_bucket_creation=True, endpoint_override=os.environ["AWS_ENDPOINT_URL"])
    fs.create_dir(bucket)
    fs = _fs()
    from transformers import AutoTokenizer

    from sentidistill.models import NAMED_MODELS

    gguf = NAMED_MODELS["smollm2-135m-instruct"]()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    for name, seed in (("tiny-teacher", 0), ("tiny-student", 1)):
        local = work / "models" / name
        _tiny_llama(local, seed, tok)
        _put_dir(fs, local, f"{bucket}/models/{name}")
    corpora = work / "corpora"
    (corpora / "yelp-reviews").mkdir(parents=True, exist_ok=True)
    (corpora / "amazon-electronics").mkdir(parents=True, exist_ok=True)
    (corpora / "yelp-reviews" / "part-0.jsonl").write_text(
        "".join(json.dumps({"text": t, "stars": 1 + i % 5}) + "\n" for i, t in enumerate(REVIEWS[:3])))
    pq.write_table(pa.table({"reviewText": REVIEWS[3:], "overall": [2.0, 5.0, 3.0]}),
                   corpora / "amazon-electronics" / "part-0.parquet")
    _put_dir(fs, corpora, f"{bucket}/corpora")
    print(f"prepared s3://{bucket}: models/tiny-teacher, models/tiny-student, corpora/")


# -- checks ------------------------------------------------------------------------------------
def _node_kinds(address: str) -> dict[str, str]:
    """node id -> 'head' / 'H100' / 'A100' from each node's advertised resources."""
    from ray.util.state import list_nodes

    kinds = {}
    for n in list_nodes(address=address, detail=True, raise_on_missing_output=False):
        res = n.resources_total or {}
        acc = [k.split(":", 1)[1] for k in res if k.startswith("accelerator_type:")]
        kinds[n.node_id] = "head" if n.is_head_node else (acc[0] if acc else "cpu")
    return kinds


def placement(address: str) -> dict[str, Any]:
    """Every actor and task that asked for a GPU, by the node type it ran on (Ray's state API)."""
    from ray.util.state import list_actors, list_tasks

    kinds = _node_kinds(address)
    used: dict[str, dict[str, int]] = {}
    wrong: list[str] = []
    actors = [(a.class_name, a.repr_name, a.required_resources, a.node_id)
              for a in list_actors(address=address, detail=True, limit=10000, raise_on_missing_output=False)]
    tasks = [(f"task:{t.func_or_class_name}", t.name, t.required_resources, t.node_id)
             for t in list_tasks(address=address, detail=True, limit=10000, raise_on_missing_output=False)
             if t.type == "NORMAL_TASK"]
    for name, label, req, node_id in actors + tasks:
        # placement-group demands (Ray Train workers) read 'GPU_group_<i>_<pg id>': keep the resource name
        req = {k.split("_group_", 1)[0]: v for k, v in (req or {}).items()}
        if not req.get("GPU"):
            continue
        where = kinds.get(node_id or "", "unscheduled")
        wanted = next((k.split(":", 1)[1] for k in req if k.startswith("accelerator_type:")), None)
        used.setdefault(where, {}).setdefault(name, 0)
        used[where][name] += 1
        if where == "head" or (wanted and where != wanted):
            wrong.append(f"{label or name} asked for {wanted or 'a GPU'} and ran on {where}")
    return {"gpu_actors_by_node": used, "wrong": wrong}


def _grep_secrets(paths: list[Path], fs: pafs.FileSystem, bucket: str, secrets: list[str]) -> list[str]:
    hits = []
    needles = [s.encode() for s in secrets if s]
    for root in paths:
        for f in (p for p in root.rglob("*") if p.is_file()):
            try:
                data = f.read_bytes()
            except OSError:
                continue
            hits += [f"{f}" for n in needles if n in data]
    for info in fs.get_file_info(pafs.FileSelector(bucket, recursive=True)):
        if info.type == pafs.FileType.File:
            with fs.open_input_stream(info.path) as s:
                data = s.read()
            hits += [f"s3://{info.path}" for n in needles if n in data]
    return sorted(set(hits))


def check(run_dir: str, address: str, logs: list[Path], secrets_env: list[str]) -> int:
    from sentidistill.layout import RunLayout
    from sentidistill.rundir import RunDir

    rd = RunDir(run_dir)
    problems: list[str] = []
    states = RunLayout(rd).stage_states()
    for folder, m in states:
        if m.status != "complete":
            problems.append(f"stage {folder}: {m.status} {m.error or ''}")
    folders = {f for f, _ in states}
    for need in ("knowdist", "icldist", "train/knowdist", "train/icldist", "report"):
        if need not in folders:
            problems.append(f"stage {need}: no manifest in {run_dir}")
    evals = sorted(f for f in folders if f.startswith("eval/"))
    for folder in evals:
        tasks = len(rd.read_json(f"{folder}/metrics.json").get("items_per_task", {}))
        if tasks != 12:
            problems.append(f"{folder}: metrics for {tasks} tasks, not 12")
    if not {"eval/teacher", "eval/student-before", "eval/student-after"} <= set(evals):
        problems.append(f"eval stages {evals}: teacher, student-before and student-after expected")
    model = "train/icldist/model"
    if not (rd.exists(model, "config.json") and rd.list_files(model, ".safetensors")):
        problems.append(f"no exported student (config.json + safetensors) at {rd.uri(model)}")
    where = placement(address)
    problems += where["wrong"]
    by_node = where["gpu_actors_by_node"]
    if not by_node.get("H100"):
        problems.append("no GPU actor ran on an H100 node (teacher, eval and serve engines should)")
    if sum(n for c, n in by_node.get("A100", {}).items() if "Train" in c) < 2:
        problems.append(f"fewer than 2 Ray Train workers ran on A100 nodes: {by_node.get('A100')}")
    secrets = [os.environ.get(name, "") for name in secrets_env]
    if not all(secrets):
        problems.append(f"secrets {secrets_env} are not all set in the checker's environment")
    bucket = run_dir.split("://", 1)[1].split("/", 1)[0]
    leaks = _grep_secrets(logs, _fs(), bucket, secrets)
    problems += [f"a secret appears in {hit}" for hit in leaks]
    print(json.dumps({"stages": {f: m.status for f, m in states}, "gpu_actors_by_node": by_node,
                      "secret_leaks": leaks}, indent=2))
    for p in problems:
        print(f"CHECK FAILED: {p}", file=sys.stderr)
    return 1 if problems else 0


def wait_nodes(address: str, count: int, timeout_s: float = 300.0) -> int:
    """Block until the dashboard answers and `count` nodes are alive (a busy machine starts raylets slowly)."""
    import time

    from ray.util.state import list_nodes

    deadline, last = time.monotonic() + timeout_s, "dashboard not up"
    while time.monotonic() < deadline:
        try:
            alive = list_nodes(address=address, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)
            if len(alive) >= count:
                print(f"{len(alive)} nodes alive")
                return 0
            last = f"{len(alive)} of {count} nodes alive"
        except Exception as e:  # noqa: BLE001 - the dashboard is still starting
            last = f"{type(e).__name__}: {str(e)[:120]}"
        time.sleep(2)
    print(f"cluster not ready after {timeout_s:.0f} s: {last}", file=sys.stderr)
    return 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--bucket", required=True)
    p.add_argument("--work", type=Path, required=True)
    w = sub.add_parser("wait")
    w.add_argument("--address", required=True)
    w.add_argument("--nodes", type=int, required=True)
    c = sub.add_parser("check")
    c.add_argument("--run-dir", required=True)
    c.add_argument("--address", required=True)
    c.add_argument("--logs", type=Path, nargs="+", required=True)
    c.add_argument("--secret-env", nargs="+", required=True, help="names of the variables holding the secrets")
    args = ap.parse_args()
    if args.cmd == "prepare":
        prepare(args.bucket, args.work)
        return 0
    if args.cmd == "wait":
        return wait_nodes(args.address, args.nodes)
    return check(args.run_dir, args.address, args.logs, args.secret_env)


if __name__ == "__main__":
    sys.exit(main())
