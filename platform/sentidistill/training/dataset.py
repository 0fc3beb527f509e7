"""The stage's Parquet -> a packed Ray Dataset the workers shard, plus the counts the manifest keeps.

Read (only qc == "kept") -> optional KnowDist replay -> seeded window assignment -> tokenize (a pool
of `train.data.tokenize_workers` actors, each holding the student's tokenizer) -> pack per window ->
Parquet parts under `train/<stage>/packed/`, written by Ray Data's writer on the workers. Nothing
is materialized on the head: the counts the step budget needs come from a stats pass over the
written parts (small rows to the driver), and every epoch streams the same parts into
`get_dataset_shard`. An example's window and its place in it come from a seeded hash of its content,
not from Ray Data's block or batch boundaries (which vary with timing and pool size), so the rows
are the same for a given seed on any cluster. `packed/counts.json`, written last, lets a resumed
stage reuse the parts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from sentidistill.config import TrainDataConfig
from sentidistill.errors import StageInputError
from sentidistill.models import default_cache_dir, resolve_model
from sentidistill.rundir import RunDir
from sentidistill.training.data import bucket_examples, pack_examples, parse_messages, tokenize_example

log = logging.getLogger("sentidistill")

REQUIRED_COLUMNS = ["id", "messages", "prompt", "response", "qc", "teacher"]


@dataclass
class TokenizeSpec:
    """What the tokenizer actor needs; plain values so it ships to any node."""

    student: str
    cache_dir: str | None
    max_seq_len: int
    apply_chat_template: bool
    trust_remote_code: bool


@dataclass
class PreparedData:
    dataset: Any  # ray.data.Dataset of packed rows (over a materialized one)
    counts: dict[str, Any] = field(default_factory=dict)
    teachers: list[str] = field(default_factory=list)


class Tokenize:
    """Ray Data actor: loads the tokenizer once, emits one tokenized row per input row."""

    def __init__(self, spec: TokenizeSpec):
        from transformers import AutoTokenizer

        self.spec = spec
        path = resolve_model(spec.student, default_cache_dir(spec.cache_dir))
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=spec.trust_remote_code)

    def __call__(self, batch: pa.Table) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"input_ids": [], "labels": [], "is_truncated": [], "is_dropped": [],
                                     **{c: batch.column(c).to_pylist() for c in ("teacher", "order", "window")}}
        cols = {c: batch.column(c).to_pylist() for c in ("id", "messages", "prompt", "response")}
        for row_id, messages, prompt, response in zip(*cols.values(), strict=True):
            ex = tokenize_example(
                self.tokenizer, parse_messages(messages, row_id), prompt, response or "",
                apply_chat_template=self.spec.apply_chat_template, max_seq_len=self.spec.max_seq_len,
            )
            out["input_ids"].append(ex.input_ids)
            out["labels"].append(ex.labels)
            out["is_truncated"].append(int(ex.status == "truncated"))
            out["is_dropped"].append(int(ex.status == "dropped"))
        return out


def seeded_order(batch: pa.Table, seed: int, n_windows: int) -> pa.Table:
    """Shuffle by content: a seeded hash of each example picks its window and its place in the window."""
    keys = [int.from_bytes(hashlib.blake2b(f"{seed}\x1f{i}\x1f{r}".encode(), digest_size=8).digest(), "big") >> 1
            for i, r in zip(batch.column("id").to_pylist(), batch.column("response").to_pylist(), strict=True)]
    return batch.append_column("order", pa.array(keys, pa.int64())) \
        .append_column("window", pa.array([k % n_windows for k in keys], pa.int64()))


PACKED_COLUMNS = ["input_ids", "labels", "position_ids"]
_STAT_COLUMNS = ["num_examples", "num_tokens", "num_answer_tokens", "window_seen", "window_truncated",
                 "window_dropped", "window_teachers"]


def pack_batch(batch: pa.Table, max_seq_len: int, packing: bool) -> dict[str, list[Any]]:
    """Pack (or bucket) one window of tokenized examples into training rows. Examples too long to keep
    are left out here; the window's counts ride on its first row (the `window_*` columns)."""
    batch = batch.sort_by([("order", "ascending")]) if "order" in batch.column_names else batch
    dropped = batch.column("is_dropped").to_pylist()
    pairs = [(ids, labels) for ids, labels, d in zip(batch.column("input_ids").to_pylist(),
                                                     batch.column("labels").to_pylist(), dropped, strict=True)
             if not d]
    rows = pack_examples(pairs, max_seq_len) if packing else bucket_examples(pairs)
    keys = ["input_ids", "labels", "position_ids", "num_examples", "num_tokens", "num_answer_tokens"]
    out: dict[str, list[Any]] = {k: [r[k] for r in rows] for k in keys}
    n = max(len(rows), 1)  # a window of only dropped examples still reports its counts, on an empty row
    if not rows:
        out = {k: [[]] if k in PACKED_COLUMNS else [0] for k in keys}
    teachers = sorted({str(t) for t in batch.column("teacher").to_pylist() if t})
    window = batch.column("window")[0].as_py() if "window" in batch.column_names and batch.num_rows else 0
    out["window"], out["row"] = [window] * n, list(range(n))
    out["window_seen"] = [batch.num_rows] + [0] * (n - 1)
    out["window_truncated"] = [sum(batch.column("is_truncated").to_pylist())] + [0] * (n - 1)
    out["window_dropped"] = [sum(dropped)] + [0] * (n - 1)
    out["window_teachers"] = [json.dumps(teachers)] + ["[]"] * (n - 1)
    return out


def _stats_batch(batch: pa.Table) -> pa.Table:
    """One row of sums per batch of packed rows (and the teachers seen)."""
    sums = {c: [sum(batch.column(c).to_pylist())] for c in _STAT_COLUMNS[:-1]}
    rows = [1 for n in batch.column("num_tokens").to_pylist() if n]
    teachers = sorted({t for raw in batch.column("window_teachers").to_pylist() for t in json.loads(raw)})
    return pa.table({**sums, "rows": [len(rows)], "teachers": [json.dumps(teachers)]})


def _count(out_uri: str) -> tuple[dict[str, int], list[str]]:
    """Sums over the written parts, computed by Ray Data tasks; only one small row per block reaches here."""
    import ray.data

    totals = dict.fromkeys([*_STAT_COLUMNS[:-1], "rows"], 0)
    teachers: set[str] = set()
    ds = ray.data.read_parquet(out_uri, file_extensions=["parquet"]).select_columns(_STAT_COLUMNS)
    for batch in ds.map_batches(_stats_batch, batch_format="pyarrow").iter_batches(batch_format="pyarrow",
                                                                                   batch_size=None):
        for r in batch.to_pylist():
            for k in totals:
                totals[k] += r[k]
            teachers.update(json.loads(r["teachers"]))
    return totals, sorted(teachers)


def read_kept(uri: str) -> Any:
    """The rows of one generation stage that passed quality control."""
    import ray.data
    from ray.data.expressions import col

    ds = ray.data.read_parquet(uri, file_extensions=["parquet"])
    missing = [c for c in REQUIRED_COLUMNS if c not in ds.schema().names]
    if missing:
        raise StageInputError(f"{uri}: Parquet rows lack columns {missing} (generation row schema, see docs)")
    return ds.filter(expr=col("qc") == "kept").select_columns(["id", "messages", "prompt", "response", "teacher"])


def _packed_rows(out_uri: str) -> Any:
    """The training rows, streamed from the written parts (empty rows of all-dropped windows skipped)."""
    import ray.data
    from ray.data.expressions import col

    return ray.data.read_parquet(out_uri, file_extensions=["parquet"]).filter(expr=col("num_tokens") > 0) \
        .select_columns(PACKED_COLUMNS)


def prepare(
    data_uri: str, spec: TokenizeSpec, *, packing: bool, pack_window: int, seed: int, resources: TrainDataConfig,
    out_uri: str, replay_uri: str | None = None, replay_share: float = 0.0,
) -> PreparedData:
    """Write the packed rows to `out_uri` and return them as a lazy dataset with their counts
    (examples kept/truncated/dropped, packing efficiency). A complete `out_uri` is reused."""
    import ray.data
    from ray.data.context import ShuffleStrategy

    out = RunDir(out_uri)
    if out.exists("counts.json"):
        saved = out.read_json("counts.json")
        return PreparedData(_packed_rows(out_uri), saved["counts"], saved["teachers"])
    out.delete("")
    ds = read_kept(data_uri)
    counts: dict[str, Any] = {"replay_examples": 0}
    n = ds.count()
    if replay_uri and replay_share > 0:
        want = round(replay_share / (1 - replay_share) * n)
        replay = read_kept(replay_uri).map_batches(seeded_order, fn_kwargs={"seed": seed, "n_windows": 1},
                                                   batch_format="pyarrow") \
            .sort("order").limit(want).drop_columns(["order", "window"]).materialize()
        counts["replay_examples"] = replay.count()
        ds = ds.union(replay)
        n += counts["replay_examples"]
    low, high = (resources.tokenize_workers,) * 2 if isinstance(resources.tokenize_workers, int) \
        else resources.tokenize_workers
    tokenized = (
        ds.map_batches(seeded_order, fn_kwargs={"seed": seed, "n_windows": max(1, math.ceil(n / pack_window))},
                       batch_format="pyarrow")
        .map_batches(Tokenize, fn_constructor_args=(spec,), batch_format="pyarrow", batch_size=resources.batch_size,
                     num_cpus=resources.num_cpus, compute=ray.data.ActorPoolStrategy(min_size=low, max_size=high))
    )
    tokenized.context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED  # no hash-shuffle actor pool
    packed = tokenized.groupby("window").map_groups(
        pack_batch, fn_kwargs={"max_seq_len": spec.max_seq_len, "packing": packing}, batch_format="pyarrow",
    ).sort(["window", "row"])
    packed.context.execution_options.preserve_order = True  # parts written in window order
    packed.write_parquet(out_uri)
    if not out.list_files("", ".parquet"):  # every window writes a row, so no part means no kept example
        raise StageInputError(f"{data_uri}: no rows with qc == 'kept'; nothing to train on")
    sums, teachers = _count(out_uri)
    if sums["window_seen"] == 0:
        raise StageInputError(f"{data_uri}: no rows with qc == 'kept'; nothing to train on")
    if sums["rows"] == 0:
        raise StageInputError(f"{data_uri}: every example is longer than train.data.max_seq_len={spec.max_seq_len}")
    rows = sums["rows"]
    counts.update(
        stage_examples=sums["window_seen"] - counts["replay_examples"], truncated_examples=sums["window_truncated"],
        dropped_too_long=sums["window_dropped"], train_examples=sums["num_examples"], rows=rows,
        tokens=sums["num_tokens"], answer_tokens=sums["num_answer_tokens"], packed=packing,
        packing_efficiency=round(sums["num_tokens"] / (rows * spec.max_seq_len), 4),
    )
    log.info("train data: %d examples -> %d rows of <= %d tokens (packing efficiency %.2f)",
             counts["train_examples"], rows, spec.max_seq_len, counts["packing_efficiency"])
    out.write_json("counts.json", {"counts": counts, "teachers": teachers})
    return PreparedData(_packed_rows(out_uri), counts, teachers)
