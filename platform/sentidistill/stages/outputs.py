"""Generation-stage output folders, shared by KnowDist (`generate`) and ICLDist (`build-icl`).

One artifact schema (`ROW_SCHEMA`), one writer, one generation loop, so both stages resume the
same way. The driver streams finished rows from the Ray Data engine pool with
`iter_batches(batch_size=rows_per_part)` and writes each chunk as one atomic Parquet part per
folder (data/ for qc == "kept", filtered/ for the rest) through RunDir (temp file + rename
locally, one object on s3/gs). A kill loses at most the chunks in flight; a row id lives in
exactly one part, so a rerun that generates only the missing ids can never duplicate one. Rows
whose engine call errored are not written: the next run retries them.

A folder made for other settings (config hash or input files), or any with `force`, is moved to
`<stage>.prev-<hash>/` before a fresh start: computed work is never mixed with answers to
different prompts, and never deleted.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sentidistill.config import EngineConfig
from sentidistill.engines.pool import map_batches_kwargs
from sentidistill.rundir import RunDir
from sentidistill.stages.generation import GenerateUDF
from sentidistill.stages.quality import KEPT

log = logging.getLogger("sentidistill")

DATA, FILTERED = "data", "filtered"
# Engine settings that change speed or resources but not the answers: excluded from stage hashes.
RESOURCE_FIELDS = {"batch_size", "concurrency", "num_cpus", "num_gpus", "accelerator_type", "gpu_memory_utilization",
                   "max_num_seqs", "cpu_kvcache_gb", "max_concurrent_requests", "timeout_s", "max_retries",
                   "retry_backoff_s", "retry_max_backoff_s", "api_key_env", "enforce_eager"}
ROW_SCHEMA = pa.schema([
    ("id", pa.string()), ("source_id", pa.string()), ("stage", pa.string()), ("perspective", pa.string()),
    ("variant", pa.string()), ("messages", pa.string()), ("prompt", pa.string()), ("response", pa.string()),
    ("finish_reason", pa.string()), ("prompt_tokens", pa.int64()), ("completion_tokens", pa.int64()),
    ("teacher", pa.string()), ("engine", pa.string()), ("latency_s", pa.float64()), ("qc", pa.string()),
    ("gold", pa.string()), ("meta", pa.string()),
])


def pair_id(source_id: str, variant: str) -> str:
    """Row id: sha256 of source id + perspective/variant (the artifact schema shared by both stages)."""
    return hashlib.sha256(f"{source_id}\x1f{variant}".encode()).hexdigest()[:16]


def parquet_bytes(rows: list[dict[str, Any]], schema: pa.Schema) -> bytes:
    """Rows -> one Parquet file in memory (keys outside the schema are ignored)."""
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buf)
    return buf.getvalue()


def part_stamp() -> str:
    """Unique prefix of the parts one run writes (time + random: parallel or repeated runs never clash)."""
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"


class StageFolder:
    """The `<run_dir>/<stage>/` of a generation stage: its data/ and filtered/ Parquet parts."""

    def __init__(self, rd: RunDir, stage: str):
        self.rd, self.stage = rd, stage

    def parts(self, folder: str) -> list[str]:
        """Run-dir relative paths of the finished parts in one folder."""
        return [f"{self.stage}/{folder}/{f}" for f in self.rd.list_files(f"{self.stage}/{folder}", ".parquet")]

    def outputs(self) -> list[str]:
        """Stage-relative paths of every data/ and filtered/ part (the manifest's outputs)."""
        return [p.removeprefix(f"{self.stage}/") for p in self.parts(DATA) + self.parts(FILTERED)]

    def read(self, columns: list[str]) -> pa.Table:
        tables = [pq.read_table(self.rd.path(p), filesystem=self.rd.fs, columns=columns)
                  for p in self.parts(DATA) + self.parts(FILTERED)]
        return pa.concat_tables(tables) if tables else ROW_SCHEMA.empty_table().select(columns)

    def done_ids(self) -> set[str]:
        return set(self.read(["id"]).column("id").to_pylist())

    def drop_partial_writes(self, folders: tuple[str, ...] = (DATA, FILTERED)) -> None:
        """Temp files of a write that was killed before its rename: never complete, never read."""
        for folder in folders:
            for f in self.rd.list_files(f"{self.stage}/{folder}"):
                if ".tmp-" in f:
                    self.rd.delete(f"{self.stage}/{folder}/{f}")

    def set_aside(self, chash: str, inputs: dict[str, str], force: bool) -> None:
        """Move a folder made for other settings (or any, with force) to `<stage>.prev-<hash>/`."""
        rd, stage = self.rd, self.stage
        if not rd.exists(stage):
            return
        old = rd.manifest(stage)
        if not force and old is not None and old.config_hash == chash and old.inputs == inputs:
            return
        base = f"{stage}.prev-{old.config_hash if old else 'unknown'}"
        dst, n = base, 2
        while rd.exists(dst):
            dst, n = f"{base}-{n}", n + 1
        if rd.remote:
            pafs.copy_files(rd.path(stage), rd.path(dst), source_filesystem=rd.fs, destination_filesystem=rd.fs)
            rd.delete(stage)
        else:
            rd.fs.move(rd.path(stage), rd.path(dst))
        why = "--force" if force else "the config or the input files changed"
        log.warning("%s: %s; previous results moved to %s", stage, why, rd.uri(dst))

    def write_rows(self, rows: list[dict[str, Any]], name: str) -> None:
        """One part per folder: rows with qc == "kept" to data/, the others to filtered/."""
        for folder, keep in ((DATA, True), (FILTERED, False)):
            part = [r for r in rows if (r["qc"] == KEPT) == keep]
            if part:
                self.rd.write_bytes(f"{self.stage}/{folder}/{name}.parquet", parquet_bytes(part, ROW_SCHEMA))


def generate_parts(folder: StageFolder, todo: list[dict[str, Any]], engine_cfg: EngineConfig,
                   cache_dir: str | None, data_dir: str | None, rows_per_part: int,
                   finish: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Answer `todo` rows on an engine actor pool; `finish(row)` sets each answered row's qc (and may
    rewrite its response) before the chunk is written. Returns counts and throughput."""
    import ray.data

    stamp = part_stamp()
    ds = ray.data.from_items(todo).map_batches(
        GenerateUDF,
        fn_constructor_kwargs={"engine_cfg": engine_cfg, "cache_dir": cache_dir, "data_dir": data_dir},
        batch_format="pyarrow", **map_batches_kwargs(engine_cfg),
    )
    stats: dict[str, Any] = {"generated": 0, "errors": 0, "completion_tokens": 0, "error_samples": []}
    t0 = time.perf_counter()
    for seq, batch in enumerate(ds.iter_batches(batch_size=rows_per_part, batch_format="pyarrow")):
        rows = batch.to_pylist()
        failed = [r for r in rows if r["finish_reason"] == "error"]
        answered = [r for r in rows if r["finish_reason"] != "error"]
        for r in answered:
            finish(r)
        folder.write_rows(answered, f"part-{stamp}-{seq:05d}")
        stats["generated"] += len(answered)
        stats["completion_tokens"] += sum(r["completion_tokens"] for r in answered)
        stats["errors"] += len(failed)
        stats["error_samples"] += [f"{r['id']}: {r['error']}" for r in failed[: 5 - len(stats["error_samples"])]]
    stats["generate_s"] = round(time.perf_counter() - t0, 3)
    stats["completion_tokens_per_s"] = round(stats["completion_tokens"] / max(stats["generate_s"], 1e-9), 2)
    return stats
