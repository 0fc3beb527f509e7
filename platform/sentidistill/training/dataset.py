"""The stage's Parquet -> a packed Ray Dataset the workers shard, plus the counts the manifest keeps.

Read (only qc == "kept") -> optional KnowDist replay -> seeded shuffle -> tokenize (one actor
holding the student's tokenizer) -> pack per window -> materialize. Materializing once lets
the driver count rows (the step budget needs it) and lets every epoch reread the same rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from sentidistill.errors import StageInputError
from sentidistill.models import default_cache_dir, resolve_model
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
                                     "teacher": batch.column("teacher").to_pylist()}
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


def pack_batch(batch: pa.Table, max_seq_len: int, packing: bool) -> dict[str, list[Any]]:
    """Pack (or bucket) one window of kept examples into training rows."""
    pairs = list(zip(batch.column("input_ids").to_pylist(), batch.column("labels").to_pylist(), strict=True))
    rows = pack_examples(pairs, max_seq_len) if packing else bucket_examples(pairs)
    keys = ["input_ids", "labels", "position_ids", "num_examples", "num_tokens", "num_answer_tokens"]
    return {k: [r[k] for r in rows] for k in keys}


def read_kept(uri: str) -> Any:
    """The rows of one generation stage that passed quality control."""
    import ray.data
    from ray.data.expressions import col

    ds = ray.data.read_parquet(uri, file_extensions=["parquet"])
    missing = [c for c in REQUIRED_COLUMNS if c not in ds.schema().names]
    if missing:
        raise StageInputError(f"{uri}: Parquet rows lack columns {missing} (generation row schema, see docs)")
    return ds.filter(expr=col("qc") == "kept").select_columns(["id", "messages", "prompt", "response", "teacher"])


def scan(ds: Any, sums: list[str], distinct: list[str]) -> tuple[dict[str, int], dict[str, set[Any]]]:
    """Column sums and distinct values in one streaming pass on the driver (no shuffle, unlike Dataset.sum)."""
    totals = dict.fromkeys(sums, 0)
    seen: dict[str, set[Any]] = {c: set() for c in distinct}
    for batch in ds.select_columns(sums + distinct).iter_batches(batch_size=8192, batch_format="numpy"):
        for c in sums:
            totals[c] += int(batch[c].sum())
        for c in distinct:
            seen[c].update(batch[c].tolist())
    return totals, seen


def prepare(
    data_uri: str, spec: TokenizeSpec, *, packing: bool, pack_window: int, seed: int,
    replay_uri: str | None = None, replay_share: float = 0.0,
) -> PreparedData:
    """Build the packed dataset and its counts (examples kept/truncated/dropped, packing efficiency)."""
    import ray.data
    from ray.data.expressions import col

    ds = read_kept(data_uri)
    counts: dict[str, Any] = {"replay_examples": 0}
    if replay_uri and replay_share > 0:
        want = round(replay_share / (1 - replay_share) * ds.count())
        replay = read_kept(replay_uri).random_shuffle(seed=seed).limit(want).materialize()
        counts["replay_examples"] = replay.count()
        ds = ds.union(replay)
    tokenized = (
        ds.random_shuffle(seed=seed)
        .map_batches(Tokenize, fn_constructor_args=(spec,), batch_format="pyarrow", batch_size=64,
                     compute=ray.data.ActorPoolStrategy(size=1))
        .materialize()
    )
    n = tokenized.count()
    if n == 0:
        raise StageInputError(f"{data_uri}: no rows with qc == 'kept'; nothing to train on")
    flags, seen = scan(tokenized, ["is_truncated", "is_dropped"], ["teacher"])
    counts.update(stage_examples=n - counts["replay_examples"],
                  truncated_examples=flags["is_truncated"], dropped_too_long=flags["is_dropped"])
    packed = (
        tokenized.filter(expr=col("is_dropped") == 0)
        .map_batches(pack_batch, fn_kwargs={"max_seq_len": spec.max_seq_len, "packing": packing},
                     batch_format="pyarrow", batch_size=pack_window)
        .materialize()
    )
    rows = packed.count()
    if rows == 0:
        raise StageInputError(f"{data_uri}: every example is longer than train.max_seq_len={spec.max_seq_len}")
    sums, _ = scan(packed, ["num_examples", "num_tokens", "num_answer_tokens"], [])
    counts.update(
        train_examples=sums["num_examples"], rows=rows, tokens=sums["num_tokens"],
        answer_tokens=sums["num_answer_tokens"], packed=packing,
        packing_efficiency=round(sums["num_tokens"] / (rows * spec.max_seq_len), 4),
    )
    log.info("train data: %d examples -> %d rows of <= %d tokens (packing efficiency %.2f)",
             counts["train_examples"], rows, spec.max_seq_len, counts["packing_efficiency"])
    teachers = sorted(str(t) for t in seen["teacher"] if t)
    return PreparedData(packed.select_columns(["input_ids", "labels", "position_ids"]), counts, teachers)
