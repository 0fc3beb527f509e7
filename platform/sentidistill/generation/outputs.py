"""Generation-stage output folders, shared by KnowDist (`generate`) and ICLDist (`icl`).

One artifact schema (`ROW_SCHEMA`), one writer, one generation loop, so both stages resume the
same way. Work rows flow through the Ray Data engine actor pool into writer actors
(`PartWriter`, `rows_per_part` rows per call) that run QC and write one atomic Parquet part per
folder (data/ for qc == "kept", filtered/ for the rest) through RunDir (temp file + rename
locally, one object on s3/gs), on the workers: the driver only sums the small stats rows they
return. A kill loses at most the chunks in flight; a row id lives in exactly one part, so a rerun
that generates only the missing ids can never duplicate one. Rows whose engine call errored are
not written: the next run retries them.

A folder made for other settings (config hash or input files), or any with `force`, is moved to
`<stage>.prev-<hash>/` before a fresh start: computed work is never mixed with answers to
different prompts, and never deleted.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from sentidistill import console
from sentidistill.config import EngineConfig
from sentidistill.engines import capabilities
from sentidistill.engines.pool import batches_in_flight, map_batches_kwargs
from sentidistill.generation.generation import ContinuousGenerateUDF, GenerateUDF
from sentidistill.generation.quality import KEPT
from sentidistill.layout import RunLayout
from sentidistill.rundir import RunDir

if TYPE_CHECKING:
    import ray.data

log = logging.getLogger("sentidistill")

DATA, FILTERED = "data", "filtered"
# Writer actors encode and upload Parquet parts: light I/O next to an engine. They reserve no CPU, so
# engine actors plus the reads feeding them can never leave the pipeline waiting for a CPU slot.
WRITER_CPUS = 0
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
            RunLayout(self.rd).drop_partial_writes(f"{self.stage}/{folder}")

    def set_aside(self, chash: str, inputs: dict[str, str], force: bool) -> None:
        """Move a folder made for other settings (or any, with force) to `<stage>.prev-<hash>/`."""
        RunLayout(self.rd).set_aside(self.stage, chash, inputs, force)

    def write_rows(self, rows: list[dict[str, Any]], name: str) -> None:
        """One part per folder: rows with qc == "kept" to data/, the others to filtered/."""
        for folder, keep in ((DATA, True), (FILTERED, False)):
            part = [r for r in rows if (r["qc"] == KEPT) == keep]
            if part:
                self.rd.write_bytes(f"{self.stage}/{folder}/{name}.parquet", parquet_bytes(part, ROW_SCHEMA))


def part_uris(folder: StageFolder) -> list[str]:
    """URIs of every finished data/ and filtered/ part, for Ray Data readers."""
    return [folder.rd.uri(p) for p in folder.parts(DATA) + folder.parts(FILTERED)]


_TALLY_COLUMNS = ["perspective", "qc", "prompt_tokens", "completion_tokens"]
TALLY_SCHEMA = pa.schema([("perspective", pa.string()), ("qc", pa.string()), ("rows", pa.int64()),
                          ("prompt_tokens", pa.int64()), ("completion_tokens", pa.int64())])


def tally_rows(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows and tokens by (perspective, qc): what the summaries need, without moving rows to the driver."""
    sums: dict[tuple[str, str], list[int]] = {}
    for r in rows:
        acc = sums.setdefault((r["perspective"], r["qc"]), [0, 0, 0])
        acc[0], acc[1], acc[2] = acc[0] + 1, acc[1] + r["prompt_tokens"], acc[2] + r["completion_tokens"]
    return pa.Table.from_pylist([{"perspective": p, "qc": q, "rows": a[0], "prompt_tokens": a[1],
                                  "completion_tokens": a[2]} for (p, q), a in sums.items()], schema=TALLY_SCHEMA)


def add_tallies(into: dict[tuple[str, str], dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    for r in rows:
        acc = into.setdefault((r["perspective"], r["qc"]), {"perspective": r["perspective"], "qc": r["qc"],
                                                             "rows": 0, "prompt_tokens": 0, "completion_tokens": 0})
        for k in ("rows", "prompt_tokens", "completion_tokens"):
            acc[k] += r[k]


def tally(folder: StageFolder) -> list[dict[str, Any]]:
    """Per (perspective, qc): rows, prompt and completion tokens over every part, counted by Ray Data tasks."""
    import ray.data

    uris = part_uris(folder)
    if not uris:
        return []
    ds = ray.data.read_parquet(uris, filesystem=folder.rd.fs if folder.rd.remote else None) \
        .select_columns(_TALLY_COLUMNS)
    totals: dict[tuple[str, str], dict[str, Any]] = {}
    for batch in ds.map_batches(lambda b: tally_rows(b.to_pylist()), batch_format="pyarrow") \
            .iter_batches(batch_format="pyarrow", batch_size=None):
        add_tallies(totals, batch.to_pylist())
    return list(totals.values())


def write_answered(batch: pa.Table, run_dir: str, stage: str, stamp: str,
                   finish: Callable[[dict[str, Any]], None]) -> pa.Table:
    """Sink task: QC (`finish`) one chunk of answered rows and write it as one atomic part per folder.
    Rows whose engine call errored are not written (the next run retries them). Returns the chunk's
    tally, with its error count and samples on the first row."""
    rows = batch.to_pylist()
    failed = [r for r in rows if r["finish_reason"] == "error"]
    answered = [r for r in rows if r["finish_reason"] != "error"]
    for r in answered:
        finish(r)
    StageFolder(RunDir(run_dir), stage).write_rows(answered, f"part-{stamp}-{uuid.uuid4().hex[:8]}")
    out = tally_rows(answered)
    if not out.num_rows:
        out = pa.Table.from_pylist([{"rows": 0, "prompt_tokens": 0, "completion_tokens": 0}], schema=TALLY_SCHEMA)
    errors = [len(failed)] + [0] * (out.num_rows - 1)
    samples = [json.dumps([f"{r['id']}: {r['error']}" for r in failed[:5]])] + [None] * (out.num_rows - 1)
    return out.append_column("errors", pa.array(errors, pa.int64())).append_column(
        "error_samples", pa.array(samples, pa.string()))


class PartWriter:
    """Ray Data actor around `write_answered`: started with the pipeline, so parts land as soon as their
    rows are answered (a task pool would first have to start a worker process per burst of tasks)."""

    def __init__(self, run_dir: str, stage: str, stamp: str, finish: Callable[[dict[str, Any]], None]):
        self.kwargs = {"run_dir": run_dir, "stage": stage, "stamp": stamp, "finish": finish}

    def __call__(self, batch: pa.Table) -> pa.Table:
        return write_answered(batch, **self.kwargs)


def generate_parts(folder: StageFolder, work: ray.data.Dataset | list[dict[str, Any]], engine_cfg: EngineConfig,
                   cache_dir: str | None, data_dir: str | None, rows_per_part: int,
                   finish: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Answer the `work` rows on the engine actor pool; `finish(row)` sets each answered row's qc (and may
    rewrite its response). Sink tasks write each chunk of `rows_per_part` rows straight to the stage folder;
    the driver only sums their stats. Returns counts, this run's tally by (perspective, qc), throughput."""
    import ray.data

    ds = ray.data.from_items(work) if isinstance(work, list) else work
    continuous = capabilities(engine_cfg.kind).continuous_batching  # several batches in one actor's engine
    answered = ds.map_batches(
        ContinuousGenerateUDF if continuous else GenerateUDF,
        fn_constructor_kwargs={"engine_cfg": engine_cfg, "cache_dir": cache_dir, "data_dir": data_dir},
        batch_format="pyarrow", **map_batches_kwargs(engine_cfg, batches_in_flight(engine_cfg)),
    )
    from ray.data import ActorPoolStrategy

    sink = answered.map_batches(
        PartWriter, batch_size=rows_per_part, batch_format="pyarrow", num_cpus=WRITER_CPUS,
        compute=ActorPoolStrategy(min_size=1, max_size=max(2, engine_cfg.actor_range[1])),
        fn_constructor_kwargs={"run_dir": folder.rd.uri(), "stage": folder.stage, "stamp": part_stamp(),
                               "finish": finish})
    stats: dict[str, Any] = {"generated": 0, "errors": 0, "completion_tokens": 0, "error_samples": []}
    tallies: dict[tuple[str, str], dict[str, Any]] = {}
    t0, answered_rows = time.perf_counter(), 0
    for batch in sink.iter_batches(batch_format="pyarrow", batch_size=None):
        for r in batch.to_pylist():
            stats["errors"] += r["errors"]
            stats["error_samples"] += json.loads(r["error_samples"] or "[]")[: 5 - len(stats["error_samples"])]
            if r["rows"]:
                add_tallies(tallies, [r])
            answered_rows += r["rows"]
        console.update(answered_rows, note="answers written")  # the stage line, per part written
    stats["tally"] = list(tallies.values())
    stats["generated"] = sum(t["rows"] for t in stats["tally"])
    stats["completion_tokens"] = sum(t["completion_tokens"] for t in stats["tally"])
    stats["generate_s"] = round(time.perf_counter() - t0, 3)
    stats["completion_tokens_per_s"] = round(stats["completion_tokens"] / max(stats["generate_s"], 1e-9), 2)
    return stats
