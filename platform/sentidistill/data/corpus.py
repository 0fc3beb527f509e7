"""Unlabeled corpus for KnowDist: many formats in, clean (source_id, text, meta) rows out, on Ray Data.

Formats: JSONL, JSON arrays, Parquet, CSV/TSV (optionally .gz), a HF `datasets` name or a
`save_to_disk` folder; local paths, folders, globs and s3:// / gs:// URIs through pyarrow
filesystems; `data://` paths through the data-dir lookup.

Scale: the driver only lists files. `ray.data.read_datasource(CorpusDatasource)` reads one file per
read task on the workers; row checks run inside those tasks, dedup and id conflicts are two
bucketed `groupby().map_groups()` shuffles, per-source limits a distributed `sort().limit()`, and
`prepare_corpus` writes the clean rows and the rejects as Parquet parts from the workers (atomic
per part). The driver sees counts, never rows; `load_corpus` collects rows for small corpora only.

Bad rows never stop the job: missing text, wrong type, undecodable bytes, invalid JSON lines and
malformed CSV rows are returned as `rejected` with a reason. That is why JSON text is parsed line
by line here rather than with pyarrow's JSON reader (`ray.data.read_json`), which fails a whole
block on one bad line; Parquet and CSV go through pyarrow (CSV's `invalid_row_handler` reports
bad rows), HF datasets through `datasets`. A column name that matches nothing in a source is a
config error instead, because every row would be rejected for the same typo.

Order and dedup: every row carries `order` = (file number in sorted file order, record number), so
ids, dedup and `limit` are deterministic however the work is spread. The first row (by order) of
an id or (with dedup) of a text wins; dedup is global over everything read, then each source's
`limit` keeps its first N surviving texts. Unlike a sequential reader, a text past one source's
limit still counts as seen for the sources after it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sentidistill.config import CorpusConfig, CorpusSource, ReplayConfig
from sentidistill.data.locate import resolve_data_path
from sentidistill.errors import ConfigError, DataNotFoundError
from sentidistill.readers import BadRecord, iter_json_records, list_files, split_glob_uri
from sentidistill.rundir import RunDir, fingerprint_path, split_uri

if TYPE_CHECKING:
    import ray.data

RAW_CHARS = 500
_COMPRESSED = (".gz", ".bz2", ".zst", ".lz4")
_EXT_FORMAT = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".pq": "parquet",
               ".csv": "csv", ".tsv": "csv"}
_HF_DISK_MARKERS = ("dataset_dict.json", "state.json")


@dataclass(frozen=True)
class SourceFile:
    """One concrete input: a file (or a HF dataset) and the source config it belongs to."""

    index: int
    uri: str
    format: str

    @property
    def label(self) -> str:
        return f"corpus.sources[{self.index}]"


@dataclass
class CorpusResult:
    """Clean rows (`source_id`, `text`, `meta` JSON), rejected rows (`source`, `raw`, `reason`), counts."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)


def text_hash(text: str) -> str:
    """Stable id of a text: sha256 of its whitespace-normalised form."""
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()[:16]


def normalise(text: str) -> str:
    return " ".join(text.split())


def _safe(value: Any) -> str:
    """Any raw value as printable, UTF-8-encodable text, truncated (for rejected/ inspection)."""
    if isinstance(value, bytes):
        text = value.decode("utf-8", "backslashreplace")
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, ensure_ascii=False, default=str)
    try:  # bytes kept by surrogateescape come back as \xff
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")[:RAW_CHARS]
    except UnicodeEncodeError:  # other lone surrogates (bad \u escapes)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")[:RAW_CHARS]


# -- resolving sources -----------------------------------------------------------------------------
def _guess_format(path: str) -> str | None:
    name = path.lower()
    for suffix in _COMPRESSED:
        name = name.removesuffix(suffix)
    return next((fmt for ext, fmt in _EXT_FORMAT.items() if name.endswith(ext)), None)


def resolve_source(index: int, src: CorpusSource, data_dir: str | None,
                   cache_dir: str | None, label: str | None = None) -> list[SourceFile]:
    """Every concrete file (or HF dataset) of one source, with its format; a miss raises naming the source
    (`label`, default `corpus.sources[<index>]`)."""
    label = label or f"corpus.sources[{index}]"
    path = resolve_data_path(src.path, data_dir, cache_dir)
    if src.format == "hf":
        return [SourceFile(index, path, "hf")]
    fs, fs_path = split_glob_uri(path)
    scheme = path.split("://", 1)[0] + "://" if "://" in path else ""
    info = fs.get_file_info(fs_path)
    if info.type == pafs.FileType.Directory and (src.format == "hf_disk" or any(
            fs.get_file_info(f"{fs_path}/{m}").type == pafs.FileType.File for m in _HF_DISK_MARKERS)):
        return [SourceFile(index, path, "hf_disk")]
    files = [fs_path] if info.type == pafs.FileType.File else list_files(
        fs, fs_path, lambda f: _guess_format(f) is not None)
    if not files:
        raise DataNotFoundError(f"{label}.path: {src.path!r} matches no file (looked at {path})")
    out = []
    for f in files:
        fmt = src.format if src.format != "auto" else _guess_format(f)
        if fmt is None:
            raise ConfigError(f"{label}.format: cannot guess the format of {f!r} from its name; "
                              "set format to jsonl, json, parquet, csv, hf or hf_disk")
        out.append(SourceFile(index, scheme + f if scheme and not f.startswith(scheme) else f, fmt))
    return out


def resolve_sources(corpus: CorpusConfig, data_dir: str | None, cache_dir: str | None) -> list[SourceFile]:
    """Every concrete file (or HF dataset) of every source, in source then sorted-file order."""
    return [f for i, src in enumerate(corpus.sources) for f in resolve_source(i, src, data_dir, cache_dir)]


def fingerprint_sources(files: list[SourceFile]) -> dict[str, str]:
    """Input fingerprints for the manifest: files by name/size/mtime, hub datasets by name."""
    return {f"{f.label}:{f.uri}": (f"hf:{f.uri}" if f.format == "hf" else fingerprint_path(f.uri)) for f in files}


# -- readers: yield dict records or BadRecord -------------------------------------------------------
def _read_bytes(uri: str) -> bytes:
    fs, path = split_uri(uri)
    with fs.open_input_stream(path, compression="detect") as f:
        return f.read()


def _iter_json_text(sf: SourceFile) -> Iterator[dict[str, Any] | BadRecord]:
    # surrogateescape keeps undecodable bytes in the string; they are rejected per row later.
    text = _read_bytes(sf.uri).decode("utf-8", "surrogateescape")
    yield from iter_json_records(text, sf.format)


def _iter_parquet(sf: SourceFile) -> Iterator[dict[str, Any] | BadRecord]:
    fs, path = split_uri(sf.uri)
    try:
        reader = pq.ParquetFile(fs.open_input_file(path))
        batches = reader.iter_batches(batch_size=4096)
        for batch in batches:
            yield from batch.to_pylist()
    except (pa.ArrowException, OSError) as e:
        yield BadRecord("file", str(e), "unreadable_file")


def _iter_csv(sf: SourceFile, spec: ReadSpec) -> Iterator[dict[str, Any] | BadRecord]:
    bad: list[BadRecord] = []

    def on_invalid(row: Any) -> str:
        bad.append(BadRecord(f"line {row.number}" if row.number else "row", row.text, "malformed_csv_row"))
        return "skip"

    delimiter = "\t" if sf.uri.lower().removesuffix(".gz").endswith(".tsv") else ","
    # text and id stay bytes so undecodable values are rejected per row instead of failing the file.
    raw_cols = {c: pa.binary() for c in (spec.text_column, spec.id_column) if c}
    fs, path = split_uri(sf.uri)
    try:
        with fs.open_input_stream(path, compression="detect") as stream:
            reader = pacsv.open_csv(
                stream,
                parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid,
                                                  newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(column_types=raw_cols),
            )
            for batch in reader:
                yield from bad
                bad.clear()
                yield from batch.to_pylist()
    except (pa.ArrowException, OSError) as e:
        yield BadRecord("file", str(e), "unreadable_file")
    yield from bad


def _iter_hf(sf: SourceFile, spec: ReadSpec) -> Iterator[dict[str, Any] | BadRecord]:
    import datasets

    if sf.format == "hf":
        try:
            ds = datasets.load_dataset(sf.uri, split=spec.split)
        except Exception as e:  # noqa: BLE001 - hub/network/format errors all become one clear message
            raise DataNotFoundError(f"{sf.label}.path: cannot load HF dataset {sf.uri!r} split "
                                    f"{spec.split!r}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    else:
        ds = datasets.load_from_disk(sf.uri)
        if isinstance(ds, datasets.DatasetDict):
            if spec.split not in ds:
                raise ConfigError(f"{sf.label}.split: {spec.split!r} not in {sf.uri}; splits: {sorted(ds)}")
            ds = ds[spec.split]
    for batch in ds.iter(batch_size=1024):
        keys = list(batch)
        yield from (dict(zip(keys, values, strict=True)) for values in zip(*batch.values(), strict=True))


def iter_records(sf: SourceFile, spec: ReadSpec) -> Iterator[dict[str, Any] | BadRecord]:
    if sf.format in ("json", "jsonl"):
        return _iter_json_text(sf)
    if sf.format == "parquet":
        return _iter_parquet(sf)
    if sf.format == "csv":
        return _iter_csv(sf, spec)
    return _iter_hf(sf, spec)


# -- one record -> one row (runs inside the read tasks) ---------------------------------------------
@dataclass(frozen=True)
class ReadSpec:
    """How the records of one source become corpus rows: corpus sources and the replay file alike."""

    label: str
    path: str
    text_column: str
    id_column: str | None = None
    meta_columns: tuple[str, ...] = ()
    meta_all_but: tuple[str, ...] | None = None  # replay: every column except these is meta
    split: str = "train"
    min_chars: int = 0
    max_chars: int | None = None  # None keeps the text whole (replayed answers were written for it)
    strip: bool = True
    limit: int | None = None


def corpus_specs(corpus: CorpusConfig) -> list[ReadSpec]:
    return [ReadSpec(label=f"corpus.sources[{i}]", path=s.path, text_column=s.text_column, id_column=s.id_column,
                     meta_columns=tuple(s.meta_columns), split=s.split, min_chars=corpus.min_chars,
                     max_chars=corpus.max_chars, limit=s.limit) for i, s in enumerate(corpus.sources)]


def replay_spec(replay: ReplayConfig) -> ReadSpec:
    """The replay file as a corpus: untruncated texts, every other column but the answer as meta."""
    skip = tuple(c for c in (replay.text_column, replay.response_column, replay.id_column) if c)
    return ReadSpec(label="teacher.replay", path=replay.path, text_column=replay.text_column,
                    id_column=replay.id_column, meta_all_but=skip, min_chars=1, max_chars=None, strip=False)


def replay_files(replay: ReplayConfig, data_dir: str | None, cache_dir: str | None) -> list[SourceFile]:
    """The replay file(s) resolved like a corpus source: the generate stage and the replay engine both read
    them through `replay_spec`, so the ids the stage gives texts are the ids the engine looks up."""
    src = CorpusSource(path=replay.path, text_column=replay.text_column, id_column=replay.id_column)
    return resolve_source(0, src, data_dir, cache_dir, label="teacher.replay")


def _as_text(value: Any) -> tuple[str | None, str | None]:
    """(text, None) or (None, reject reason)."""
    if value is None:
        return None, "missing_text"
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None, "undecodable"
    if not isinstance(value, str):
        return None, "wrong_type"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: undecodable bytes or bad \u escapes
        return None, "undecodable"
    return value, None


def _as_id(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value).strip() == "":
        return None
    return str(value).strip()


# Every stage of the corpus pipeline carries rows of this one schema. status: kept | duplicate |
# rejected | columns (one row per file listing the columns it had, for the typo check).
PIPELINE_SCHEMA = pa.schema([
    ("order", pa.int64()), ("source", pa.int64()), ("status", pa.string()), ("source_id", pa.string()),
    ("text", pa.string()), ("norm_key", pa.string()), ("meta", pa.string()), ("truncated", pa.bool_()),
    ("where", pa.string()), ("raw", pa.string()), ("reason", pa.string()), ("bucket", pa.int64()),
])
CORPUS_SCHEMA = pa.schema([("order", pa.int64()), ("source_id", pa.string()), ("text", pa.string()),
                           ("meta", pa.string())])
REJECTED_SCHEMA = pa.schema([("source", pa.string()), ("raw", pa.string()), ("reason", pa.string())])
_FILE_BITS = 40  # order = file number << 40 | record number
_BUCKETS = 256  # dedup groups: all rows of one key land in one bucket, ~rows/256 rows per group call
_ROWS_PER_BLOCK = 4096


def _rejected(order: int, source: int, where: str, raw: str, reason: str) -> dict[str, Any]:
    return {"order": order, "source": source, "status": "rejected", "where": where, "raw": raw, "reason": reason}


def clean_record(spec: ReadSpec, record: dict[str, Any], order: int, source: int, where: str) -> dict[str, Any]:
    """One record -> a kept row (id, cleaned text, meta JSON, text key) or a rejected row with its reason."""
    text, reason = _as_text(record.get(spec.text_column))
    source_id = None
    if text is not None and len(text.strip()) < spec.min_chars:
        reason = "too_short"
    if reason is None and spec.id_column:
        source_id = _as_id(record.get(spec.id_column))
        reason = None if source_id is not None else "missing_id"
    if reason:
        return _rejected(order, source, where, _safe(record), reason)
    assert text is not None
    norm_key = text_hash(text)
    clean = text.strip() if spec.strip else text
    truncated = spec.max_chars is not None and len(clean) > spec.max_chars
    if truncated:
        clean = clean[: spec.max_chars].rstrip()
    if spec.meta_all_but is not None:
        meta = {k: v for k, v in record.items() if k not in spec.meta_all_but}
    else:
        meta = {c: record.get(c) for c in spec.meta_columns}
    return {"order": order, "source": source, "status": "kept", "source_id": source_id or norm_key, "text": clean,
            "norm_key": norm_key, "meta": json.dumps(meta, ensure_ascii=False, default=str) if meta else None,
            "truncated": truncated}


def _read_file(sf: SourceFile, file_no: int, spec: ReadSpec) -> Iterator[pa.Table]:
    """Read task of one file: rows in blocks, then one `columns` row with every column name seen."""
    rows: list[dict[str, Any]] = []
    keys: set[str] = set()
    for n, rec in enumerate(iter_records(sf, spec)):
        order = file_no << _FILE_BITS | n
        if isinstance(rec, BadRecord):
            rows.append(_rejected(order, sf.index, f"{sf.uri} ({rec.where})", _safe(rec.raw), rec.reason))
        else:
            keys.update(rec)
            rows.append(clean_record(spec, rec, order, sf.index, f"{sf.uri} (row {n})"))
        if len(rows) >= _ROWS_PER_BLOCK:
            yield pa.Table.from_pylist(rows, schema=PIPELINE_SCHEMA)
            rows = []
    rows.append({"order": (file_no + 1 << _FILE_BITS) - 1, "source": sf.index, "status": "columns",
                 "raw": json.dumps(sorted(keys)), "where": sf.uri})
    yield pa.Table.from_pylist(rows, schema=PIPELINE_SCHEMA)


def _datasource(files: list[SourceFile], specs: list[ReadSpec]) -> Any:
    """A Ray Data datasource with one read task per file (or HF dataset), run on the workers."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class CorpusDatasource(Datasource):
        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context: Any = None) -> list[ReadTask]:
            return [ReadTask(functools.partial(_read_file, sf, n, specs[sf.index]),
                             BlockMetadata(num_rows=None, size_bytes=None, input_files=[sf.uri], exec_stats=None),
                             schema=PIPELINE_SCHEMA) for n, sf in enumerate(files)]

    return CorpusDatasource()


# -- dedup and id conflicts: two bucketed shuffles ---------------------------------------------------
def _with_bucket(batch: pa.Table, key: str) -> pa.Table:
    """Rows sharing `key` share a bucket; rejected and columns rows are spread by their order."""
    status, keys, order = (batch.column(c).to_pylist() for c in ("status", key, "order"))
    buckets = [zlib.crc32(k.encode()) % _BUCKETS if s == "kept" else o % _BUCKETS
               for s, k, o in zip(status, keys, order, strict=True)]
    return batch.set_column(batch.schema.get_field_index("bucket"), "bucket", pa.array(buckets, pa.int64()))


def _first_wins(group: pa.Table, key: str, files: list[str]) -> pa.Table:
    """Within one bucket, in corpus order: the first kept row of each key stays kept. With key
    source_id, a later row with the same text is a duplicate and one with another text is rejected
    as duplicate_id; with key norm_key (text dedup), later rows are duplicates."""
    rows = sorted(group.to_pylist(), key=lambda r: r["order"])
    owner: dict[str, str] = {}
    for r in rows:
        if r["status"] != "kept":
            continue
        k = r[key]
        if k not in owner:
            owner[k] = r["norm_key"]
        elif key == "source_id" and owner[k] != r["norm_key"]:
            where = f"{files[r['order'] >> _FILE_BITS]} (row {r['order'] & ((1 << _FILE_BITS) - 1)})"
            r.update(_rejected(r["order"], r["source"], where, _safe({"id": k, "text": r["text"]}), "duplicate_id"))
        else:
            r["status"] = "duplicate"
    return pa.Table.from_pylist(rows, schema=PIPELINE_SCHEMA)


def shuffle_partitions() -> int:
    """Hash-shuffle partitions: one per cluster CPU, 2 to 64 (Ray's default of 200 swamps a small cluster)."""
    import ray

    return min(64, max(2, int(ray.cluster_resources().get("CPU", 2)))) if ray.is_initialized() else 2


def corpus_dataset(files: list[SourceFile], specs: list[ReadSpec], dedup: bool,
                   partitions: int | None = None) -> ray.data.Dataset:
    """Read + per-row checks + id conflicts (+ text dedup): a lazy Dataset of PIPELINE_SCHEMA rows, limits not applied."""
    import ray.data

    parts = partitions or shuffle_partitions()
    uris = [sf.uri for sf in files]
    ds = ray.data.read_datasource(_datasource(files, specs))
    keys = ["source_id"] + (["norm_key"] if dedup and any(s.id_column for s in specs) else [])
    for key in keys:  # without an id column the id IS the text hash: one pass does both
        ds = ds.map_batches(_with_bucket, fn_kwargs={"key": key}, batch_format="pyarrow")
        ds = ds.groupby("bucket", num_partitions=parts).map_groups(
            _first_wins, fn_kwargs={"key": key, "files": uris}, batch_format="pyarrow")
    return ds


# -- limits: first N surviving texts per source, by order ----------------------------------------------
def _kept_orders(batch: pa.Table, source: int) -> pa.Table:
    mask = pc.and_(pc.equal(batch.column("status"), "kept"),
                           pc.equal(batch.column("source"), source))
    return batch.filter(mask).select(["order"])


def limit_cutoffs(ds: ray.data.Dataset, specs: list[ReadSpec]) -> tuple[ray.data.Dataset, dict[int, int]]:
    """{source: order of its limit-th kept row}; rows after it count as never read. Materializes `ds` in
    the object store (on the workers) when a limit is set, so the corpus is read once."""
    limited = [(i, s.limit) for i, s in enumerate(specs) if s.limit is not None]
    if not limited:
        return ds, {}
    ds = ds.materialize()
    cutoffs = {}
    for i, limit in limited:
        top = ds.map_batches(_kept_orders, fn_kwargs={"source": i}, batch_format="pyarrow").sort("order").limit(limit)
        top = top.materialize()
        if top.count() == limit:
            cutoffs[i] = int(top.max("order"))
    return ds, cutoffs


def within_limits(batch: pa.Table, cutoffs: dict[int, int]) -> pa.Table:
    if not cutoffs:
        return batch
    keep = [st == "columns" or o <= cutoffs.get(s, o)
            for st, s, o in zip(*(batch.column(c).to_pylist() for c in ("status", "source", "order")), strict=True)]
    return batch.filter(pa.array(keep))


# -- counts (from small per-batch stats, never from rows on the driver) ----------------------------------
STATS_SCHEMA = pa.schema([("source", pa.int64()), ("status", pa.string()), ("reason", pa.string()),
                          ("rows", pa.int64()), ("truncated", pa.int64()), ("columns", pa.string())])


def batch_stats(batch: pa.Table) -> pa.Table:
    """Counts of one batch by (source, status, reason); `columns` rows pass their column lists on."""
    counts: Counter[tuple[int, str, str | None]] = Counter()
    truncated: Counter[tuple[int, str, str | None]] = Counter()
    out: list[dict[str, Any]] = []
    for r in batch.select(["source", "status", "reason", "truncated", "raw"]).to_pylist():
        if r["status"] == "columns":
            out.append({"source": r["source"], "status": "columns", "rows": 0, "truncated": 0, "columns": r["raw"]})
            continue
        k = (r["source"], r["status"], r["reason"])
        counts[k] += 1
        truncated[k] += bool(r["truncated"])
    out += [{"source": s, "status": st, "reason": reason, "rows": n, "truncated": truncated[(s, st, reason)]}
            for (s, st, reason), n in counts.items()]
    return pa.Table.from_pylist(out, schema=STATS_SCHEMA)


def _check_columns(spec: ReadSpec, keys: set[str], uri: str) -> None:
    wanted = [("text_column", spec.text_column), ("id_column", spec.id_column)]
    wanted += [("meta_columns", c) for c in spec.meta_columns]
    for key, col in wanted:
        if col and col not in keys:
            raise ConfigError(f"{spec.label}.{key}: column {col!r} is in no row of {uri}; columns seen: {sorted(keys)}")


def summarise_stats(stats: list[dict[str, Any]], specs: list[ReadSpec], files: list[SourceFile]) -> dict[str, Any]:
    """Counts for the manifest from every batch's stats; a column that no row of a source has raises."""
    reasons: Counter[str] = Counter()
    per = [{"source": s.label, "path": s.path, "read": 0, "kept": 0} for s in specs]
    keys: dict[int, set[str]] = {}
    duplicates = truncated = 0
    tally: Counter[str] = Counter()
    for st in stats:
        if st["status"] == "tally":
            tally[st["reason"]] += st["rows"]
            continue
        if st["status"] == "columns":
            keys.setdefault(st["source"], set()).update(json.loads(st["columns"]))
            continue
        per[st["source"]]["read"] += st["rows"]
        if st["status"] == "kept":
            per[st["source"]]["kept"] += st["rows"]
            truncated += st["truncated"]
        elif st["status"] == "duplicate":
            duplicates += st["rows"]
        else:
            reasons[st["reason"]] += st["rows"]
    for i, spec in enumerate(specs):
        if keys.get(i):
            src_files = [f for f in files if f.index == i]
            _check_columns(spec, keys[i], src_files[0].uri if len(src_files) == 1 else spec.path)
    kept = sum(p["kept"] for p in per)
    return {"read": sum(p["read"] for p in per), "kept": kept, "rejected": sum(reasons.values()),
            "rejected_by_reason": dict(sorted(reasons.items())), "duplicates": duplicates, "truncated": truncated,
            "per_source": per, **({"kept_tally": dict(tally)} if tally else {})}


# -- entry points ------------------------------------------------------------------------------------
def _write_parts(batch: pa.Table, run_dir: str, corpus_rel: str, rejected_rel: str, cutoffs: dict[int, int],
                 stamp: str, count_kept: Callable[[list[str]], dict[str, int]] | None) -> pa.Table:
    """Sink task: this batch's kept rows and rejects as one atomic Parquet part each; returns its stats
    (with `count_kept(kept source ids)` as `tally` rows, e.g. the prompts each text will get)."""
    batch = within_limits(batch, cutoffs)
    rd, name = RunDir(run_dir), f"part-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
    kept = batch.filter(pc.equal(batch.column("status"), "kept"))
    rejected = batch.filter(pc.equal(batch.column("status"), "rejected"))
    for rel, table in ((corpus_rel, kept.select(CORPUS_SCHEMA.names)),
                       (rejected_rel, rejected.select(["where", "raw", "reason"]).rename_columns(REJECTED_SCHEMA.names))):
        if table.num_rows:
            buf = pa.BufferOutputStream()
            pq.write_table(table.cast(CORPUS_SCHEMA if rel == corpus_rel else REJECTED_SCHEMA), buf)
            rd.write_bytes(f"{rel}/{name}", buf.getvalue().to_pybytes())
    stats = batch_stats(batch)
    if count_kept is None:
        return stats
    extra = count_kept(kept.column("source_id").to_pylist())
    return pa.concat_tables([stats, pa.Table.from_pylist(
        [{"source": -1, "status": "tally", "reason": k, "rows": n, "truncated": 0} for k, n in extra.items()],
        schema=STATS_SCHEMA)])


def prepare_corpus(files: list[SourceFile], specs: list[ReadSpec], dedup: bool, run_dir: str, corpus_rel: str,
                   rejected_rel: str, stamp: str, count_kept: Callable[[list[str]], dict[str, int]] | None = None,
                   rows_per_part: int = 50_000) -> dict[str, Any]:
    """Clean corpus -> `<run_dir>/<corpus_rel>/part-*.parquet` (order, source_id, text, meta), rejects ->
    `<rejected_rel>/`, written by Ray Data tasks on the workers; returns the counts (driver sees only those),
    with the summed `count_kept` results as `kept_tally` when given."""
    ds, cutoffs = limit_cutoffs(corpus_dataset(files, specs, dedup), specs)
    sink = ds.map_batches(_write_parts, batch_size=rows_per_part, batch_format="pyarrow", fn_kwargs={
        "run_dir": run_dir, "corpus_rel": corpus_rel, "rejected_rel": rejected_rel, "cutoffs": cutoffs,
        "stamp": stamp, "count_kept": count_kept})
    stats = [row for batch in sink.iter_batches(batch_format="pyarrow", batch_size=None) for row in batch.to_pylist()]
    return summarise_stats(stats, specs, files)


def _kept_text_sums(batch: pa.Table, cutoffs: dict[int, int]) -> pa.Table:
    batch = within_limits(batch, cutoffs)
    kept = batch.filter(pc.equal(batch.column("status"), "kept"))
    chars = pc.sum(pc.utf8_length(kept.column("text"))).as_py() or 0
    return pa.table({"texts": [kept.num_rows], "chars": [chars]})


def text_stats(corpus: CorpusConfig, data_dir: str | None, cache_dir: str | None) -> tuple[int, float]:
    """(texts `generate` will keep, their mean length in characters): the same pipeline as `prepare_corpus`
    (reads, checks, dedup, limits) summed by Ray Data tasks, so a plan of any corpus size holds no rows."""
    files = resolve_sources(corpus, data_dir, cache_dir)
    specs = corpus_specs(corpus)
    ds, cutoffs = limit_cutoffs(corpus_dataset(files, specs, corpus.dedup), specs)
    texts = chars = 0
    for batch in ds.map_batches(_kept_text_sums, fn_kwargs={"cutoffs": cutoffs}, batch_format="pyarrow") \
            .iter_batches(batch_format="pyarrow", batch_size=None):
        texts += sum(batch.column("texts").to_pylist())
        chars += sum(batch.column("chars").to_pylist())
    return texts, chars / texts if texts else 0.0


def load_corpus(corpus: CorpusConfig, data_dir: str | None, cache_dir: str | None) -> CorpusResult:
    """Every source as clean rows in corpus order, rejects with reasons (never raised), counts: the same
    Ray Data pipeline as `prepare_corpus`, collected on the driver, so for small corpora and tests.

    >>> res = load_corpus(cfg.corpus, cfg.data_dir, cfg.cache_dir)
    >>> res.rows[0].keys(), res.counts["rejected_by_reason"]
    """
    files = resolve_sources(corpus, data_dir, cache_dir)
    specs = corpus_specs(corpus)
    ds, cutoffs = limit_cutoffs(corpus_dataset(files, specs, corpus.dedup), specs)
    table = pa.concat_tables([PIPELINE_SCHEMA.empty_table(), *(
        b for b in ds.map_batches(within_limits, fn_kwargs={"cutoffs": cutoffs}, batch_format="pyarrow")
        .iter_batches(batch_format="pyarrow", batch_size=None))])
    table = table.sort_by("order")
    res = CorpusResult()
    for r in table.to_pylist():
        if r["status"] == "kept":
            res.rows.append({"source_id": r["source_id"], "text": r["text"], "meta": r["meta"]})
        elif r["status"] == "rejected":
            res.rejected.append({"source": r["where"], "raw": r["raw"], "reason": r["reason"]})
    res.counts = summarise_stats(batch_stats(table).to_pylist(), specs, files)
    return res
