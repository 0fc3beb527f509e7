"""Unlabeled corpus for KnowDist: many formats in, one clean list of (source_id, text, meta) out.

Formats: JSONL, JSON arrays, Parquet, CSV/TSV (optionally .gz), a HF `datasets` name or a
`save_to_disk` folder; local paths, folders, globs and s3:// / gs:// URIs through pyarrow
filesystems; `data://` paths through the data-dir lookup.

Bad rows never stop the job: missing text, wrong type, undecodable bytes, invalid JSON lines and
malformed CSV rows are returned as `rejected` with a reason. That is why JSON text is parsed line
by line here rather than with pyarrow's JSON reader, which fails a whole block on one bad line;
Parquet and CSV go through pyarrow (CSV's `invalid_row_handler` reports bad rows), HF datasets
through `datasets`. A column name that matches nothing in a source is a config error instead,
because every row would be rejected for the same typo.

Files are read in sorted order, so ids, dedup and `limit` are deterministic.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sentidistill.config import CorpusConfig, CorpusSource
from sentidistill.data.locate import resolve_data_path
from sentidistill.errors import ConfigError, DataNotFoundError
from sentidistill.rundir import fingerprint_path, split_uri

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


@dataclass
class _Bad:
    where: str
    raw: str
    reason: str


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


def _glob_at(path: str) -> int:
    return min((path.find(c) for c in "*?[" if c in path), default=-1)


def _split(path: str) -> tuple[pafs.FileSystem, str]:
    """split_uri that also takes globs in URIs (pyarrow cannot parse `[` in a URI)."""
    glob_at = _glob_at(path)
    if "://" not in path or glob_at < 0:
        return split_uri(path)
    head = path[:glob_at].rsplit("/", 1)[0]
    fs, base = split_uri(head)
    return fs, base.rstrip("/") + path[len(head):]


def _list_matches(fs: pafs.FileSystem, path: str) -> list[str]:
    """Files matched by a glob (`*`, `?`, `[`) or held in a folder (recursive), sorted."""
    glob_at = _glob_at(path)
    base = path if glob_at < 0 else path[:glob_at].rsplit("/", 1)[0]
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    files = [i.path for i in infos if i.type == pafs.FileType.File]
    if glob_at >= 0:
        return sorted(p for p in files if fnmatch.fnmatch(p, path))
    return sorted(p for p in files if _guess_format(p) and not p.rsplit("/", 1)[-1].startswith((".", "_")))


def resolve_sources(corpus: CorpusConfig, data_dir: str | None, cache_dir: str | None) -> list[SourceFile]:
    """Every concrete file (or HF dataset) of every source, with its format; misses raise naming the source."""
    out: list[SourceFile] = []
    for i, src in enumerate(corpus.sources):
        label = f"corpus.sources[{i}]"
        path = resolve_data_path(src.path, data_dir, cache_dir)
        if src.format == "hf":
            out.append(SourceFile(i, path, "hf"))
            continue
        fs, fs_path = _split(path)
        scheme = path.split("://", 1)[0] + "://" if "://" in path else ""
        info = fs.get_file_info(fs_path)
        if info.type == pafs.FileType.Directory and (src.format == "hf_disk" or any(
                fs.get_file_info(f"{fs_path}/{m}").type == pafs.FileType.File for m in _HF_DISK_MARKERS)):
            out.append(SourceFile(i, path, "hf_disk"))
            continue
        files = [fs_path] if info.type == pafs.FileType.File else _list_matches(fs, fs_path)
        if not files:
            raise DataNotFoundError(f"{label}.path: {src.path!r} matches no file (looked at {path})")
        for f in files:
            fmt = src.format if src.format != "auto" else _guess_format(f)
            if fmt is None:
                raise ConfigError(f"{label}.format: cannot guess the format of {f!r} from its name; "
                                  "set format to jsonl, json, parquet, csv, hf or hf_disk")
            out.append(SourceFile(i, scheme + f if scheme and not f.startswith(scheme) else f, fmt))
    return out


def fingerprint_sources(files: list[SourceFile]) -> dict[str, str]:
    """Input fingerprints for the manifest: files by name/size/mtime, hub datasets by name."""
    return {f"{f.label}:{f.uri}": (f"hf:{f.uri}" if f.format == "hf" else fingerprint_path(f.uri)) for f in files}


# -- readers: yield dict records or _Bad -------------------------------------------------------------
def _read_bytes(uri: str) -> bytes:
    fs, path = split_uri(uri)
    with fs.open_input_stream(path, compression="detect") as f:
        return f.read()


def _iter_json_text(sf: SourceFile) -> Iterator[dict[str, Any] | _Bad]:
    # surrogateescape keeps undecodable bytes in the string; they are rejected per row later.
    text = _read_bytes(sf.uri).decode("utf-8", "surrogateescape").lstrip("\ufeff")
    if sf.format == "json" and text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except ValueError as e:
            yield _Bad("file", _safe(str(e)), "invalid_json_file")
            return
        for n, item in enumerate(items):
            yield item if isinstance(item, dict) else _Bad(f"item {n}", _safe(item), "not_an_object")
        return
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            yield _Bad(f"line {n}", _safe(line), "invalid_json")
            continue
        yield item if isinstance(item, dict) else _Bad(f"line {n}", _safe(item), "not_an_object")


def _iter_parquet(sf: SourceFile) -> Iterator[dict[str, Any] | _Bad]:
    fs, path = split_uri(sf.uri)
    try:
        reader = pq.ParquetFile(fs.open_input_file(path))
        batches = reader.iter_batches(batch_size=4096)
        for batch in batches:
            yield from batch.to_pylist()
    except (pa.ArrowException, OSError) as e:
        yield _Bad("file", _safe(str(e)), "unreadable_file")


def _iter_csv(sf: SourceFile, src: CorpusSource) -> Iterator[dict[str, Any] | _Bad]:
    bad: list[_Bad] = []

    def on_invalid(row: Any) -> str:
        bad.append(_Bad(f"line {row.number}" if row.number else "row", _safe(row.text), "malformed_csv_row"))
        return "skip"

    delimiter = "\t" if sf.uri.lower().removesuffix(".gz").endswith(".tsv") else ","
    # text and id stay bytes so undecodable values are rejected per row instead of failing the file.
    raw_cols = {c: pa.binary() for c in (src.text_column, src.id_column) if c}
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
        yield _Bad("file", _safe(str(e)), "unreadable_file")
    yield from bad


def _iter_hf(sf: SourceFile, src: CorpusSource) -> Iterator[dict[str, Any] | _Bad]:
    import datasets

    if sf.format == "hf":
        try:
            ds = datasets.load_dataset(sf.uri, split=src.split)
        except Exception as e:  # noqa: BLE001 - hub/network/format errors all become one clear message
            raise DataNotFoundError(f"{sf.label}.path: cannot load HF dataset {sf.uri!r} split "
                                    f"{src.split!r}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    else:
        ds = datasets.load_from_disk(sf.uri)
        if isinstance(ds, datasets.DatasetDict):
            if src.split not in ds:
                raise ConfigError(f"{sf.label}.split: {src.split!r} not in {sf.uri}; splits: {sorted(ds)}")
            ds = ds[src.split]
    for batch in ds.iter(batch_size=1024):
        keys = list(batch)
        yield from (dict(zip(keys, values, strict=True)) for values in zip(*batch.values(), strict=True))


def iter_records(sf: SourceFile, src: CorpusSource) -> Iterator[dict[str, Any] | _Bad]:
    if sf.format in ("json", "jsonl"):
        return _iter_json_text(sf)
    if sf.format == "parquet":
        return _iter_parquet(sf)
    if sf.format == "csv":
        return _iter_csv(sf, src)
    return _iter_hf(sf, src)


# -- cleaning ------------------------------------------------------------------------------------
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


class _Cleaner:
    """Validation, dedup, length limits and counts across all sources (dedup is global)."""

    def __init__(self, corpus: CorpusConfig):
        self.corpus = corpus
        self.result = CorpusResult()
        self.seen_text: set[str] = set()
        self.seen_id: dict[str, str] = {}
        self.reasons: Counter[str] = Counter()
        self.duplicates = self.truncated = self.read = 0

    def reject(self, sf: SourceFile, bad: _Bad) -> None:
        self.reasons[bad.reason] += 1
        self.result.rejected.append({"source": f"{sf.uri} ({bad.where})", "raw": bad.raw, "reason": bad.reason})

    def add(self, sf: SourceFile, src: CorpusSource, record: dict[str, Any], n: int) -> bool:
        """True when the record became a row."""
        text, reason = _as_text(record.get(src.text_column))
        source_id = None
        if text is not None and len(text.strip()) < self.corpus.min_chars:
            reason = "too_short"
        if reason is None and src.id_column:
            source_id = _as_id(record.get(src.id_column))
            reason = None if source_id is not None else "missing_id"
        if reason:
            self.reject(sf, _Bad(f"row {n}", _safe(record), reason))
            return False
        assert text is not None
        norm = normalise(text)
        source_id = source_id or text_hash(text)
        if source_id in self.seen_id and self.seen_id[source_id] != norm:
            self.reject(sf, _Bad(f"row {n}", _safe(record), "duplicate_id"))
            return False
        if (self.corpus.dedup and norm in self.seen_text) or source_id in self.seen_id:
            self.duplicates += 1
            return False
        self.seen_text.add(norm)
        self.seen_id[source_id] = norm
        text = text.strip()
        if len(text) > self.corpus.max_chars:
            text, self.truncated = text[: self.corpus.max_chars].rstrip(), self.truncated + 1
        meta = {c: record.get(c) for c in src.meta_columns}
        self.result.rows.append({"source_id": source_id, "text": text,
                                 "meta": json.dumps(meta, ensure_ascii=False, default=str) if meta else None})
        return True


def _check_columns(src: CorpusSource, label: str, keys: set[str], uri: str) -> None:
    wanted = [("text_column", src.text_column), ("id_column", src.id_column)]
    wanted += [("meta_columns", c) for c in src.meta_columns]
    for key, col in wanted:
        if col and col not in keys:
            raise ConfigError(f"{label}.{key}: column {col!r} is in no row of {uri}; columns seen: {sorted(keys)}")


def load_corpus(corpus: CorpusConfig, data_dir: str | None, cache_dir: str | None) -> CorpusResult:
    """Read every source into clean rows; bad rows are returned as `rejected`, never raised.

    >>> res = load_corpus(cfg.corpus, cfg.data_dir, cfg.cache_dir)
    >>> res.rows[0].keys(), res.counts["rejected_by_reason"]
    """
    files = resolve_sources(corpus, data_dir, cache_dir)
    cleaner = _Cleaner(corpus)
    per_source = []
    for i, src in enumerate(corpus.sources):
        kept = read = 0
        keys: set[str] = set()
        src_files = [f for f in files if f.index == i]
        for sf in src_files:
            for n, rec in enumerate(iter_records(sf, src)):
                if src.limit is not None and kept >= src.limit:
                    break
                read += 1
                if isinstance(rec, _Bad):
                    cleaner.reject(sf, rec)
                    continue
                keys.update(rec)
                kept += cleaner.add(sf, src, rec, n)
            if src.limit is not None and kept >= src.limit:
                break
        if keys:
            _check_columns(src, f"corpus.sources[{i}]", keys, src_files[0].uri if len(src_files) == 1 else src.path)
        cleaner.read += read
        per_source.append({"source": f"corpus.sources[{i}]", "path": src.path, "read": read, "kept": kept})
    res = cleaner.result
    res.counts = {
        "read": cleaner.read, "kept": len(res.rows), "rejected": len(res.rejected),
        "rejected_by_reason": dict(sorted(cleaner.reasons.items())), "duplicates": cleaner.duplicates,
        "truncated": cleaner.truncated, "per_source": per_source,
    }
    return res
