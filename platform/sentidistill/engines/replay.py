"""Replay engine: answers from an existing teacher corpus (e.g. Mixtral rewrites) instead of a model.

Lets KnowDist reuse outputs someone already paid for, and makes stage tests cheap. Requests are
matched by `source_id`, then by whitespace-normalised `source_text`; sampling parameters are
ignored. Token counts are whitespace word counts (no tokenizer is involved), documented as such.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sentidistill.config import EngineConfig, ReplayConfig
from sentidistill.data.locate import resolve_data_path
from sentidistill.engines.base import Completion, Engine, GenerationRequest
from sentidistill.errors import ConfigError, DataNotFoundError, StageInputError
from sentidistill.rundir import split_uri

log = logging.getLogger("sentidistill")

_FORMATS = (".jsonl", ".json", ".parquet", ".csv")


def normalise_text(text: str) -> str:
    return " ".join(text.split())


def text_id(text: str) -> str:
    """Source id of a row without an id column: hash of its whitespace-normalised text."""
    return hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest()[:16]


def _expand(path: str) -> list[tuple[pafs.FileSystem, str]]:
    """A file, a glob or a folder (local or cloud) -> the data files it names, sorted."""
    fs, base = split_uri(path)
    if isinstance(fs, pafs.LocalFileSystem) and glob.has_magic(base):
        return [(fs, p) for p in sorted(glob.glob(base)) if p.endswith(_FORMATS)]
    if glob.has_magic(base):
        parent = base[:min(i for i, ch in enumerate(base) if ch in "*?[")].rsplit("/", 1)[0]
        infos = fs.get_file_info(pafs.FileSelector(parent, recursive=True, allow_not_found=True))
        return sorted((fs, i.path) for i in infos if fnmatch.fnmatch(i.path, base) and i.path.endswith(_FORMATS))
    info = fs.get_file_info(base)
    if info.type == pafs.FileType.Directory:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
        return sorted((fs, i.path) for i in infos if i.type == pafs.FileType.File and i.path.endswith(_FORMATS))
    return [(fs, base)] if info.type == pafs.FileType.File else []


def _read_file(fs: pafs.FileSystem, path: str) -> list[dict[str, Any]]:
    if path.endswith(".parquet"):
        return pq.read_table(path, filesystem=fs).to_pylist()
    with fs.open_input_stream(path) as f:
        data = f.read()
    if path.endswith(".csv"):
        return pacsv.read_csv(io.BytesIO(data)).to_pylist()
    text = data.decode("utf-8-sig")  # teacher dumps often start with a BOM
    if path.endswith(".json") and text.lstrip().startswith("["):
        return json.loads(text)
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line.lstrip("\ufeff")))
            except json.JSONDecodeError as e:
                raise StageInputError(f"replay file {path!r} line {n} is not valid JSON: {e}") from None
    return rows


def read_replay_table(cfg: ReplayConfig, data_dir: str | None = None,
                      cache_dir: str | None = None) -> list[dict[str, Any]]:
    """Every row of every file `cfg.path` names, as dicts, in file order; checks the configured columns."""
    resolved = resolve_data_path(cfg.path, data_dir, cache_dir)
    files = _expand(resolved)
    if not files:
        raise DataNotFoundError(f"replay.path {cfg.path!r} names no {'/'.join(_FORMATS)} file (resolved: {resolved})")
    rows = [row for fs, p in files for row in _read_file(fs, p)]
    columns = set().union(*(r.keys() for r in rows[:100])) if rows else set()
    wanted = {"replay.text_column": cfg.text_column, "replay.response_column": cfg.response_column,
              "replay.id_column": cfg.id_column}
    missing = [f"{k}={v!r}" for k, v in wanted.items() if v is not None and rows and v not in columns]
    if missing:
        raise ConfigError(f"replay file {resolved!r} lacks the columns {', '.join(missing)}; "
                          f"it has {sorted(columns)}")
    return rows


def iter_replay_rows(cfg: ReplayConfig, data_dir: str | None = None,
                     cache_dir: str | None = None) -> Iterator[dict[str, Any]]:
    """Yield `{source_id, text, response, meta}` once per source (first row wins), rows without text skipped.

    The generation stage builds its corpus from this, so replayed answers line up with its requests.
    `meta` is a JSON string of the remaining columns (e.g. Yelp stars), or None.
    """
    seen: set[str] = set()
    dropped = 0
    for row in read_replay_table(cfg, data_dir, cache_dir):
        text = row.get(cfg.text_column)
        if not isinstance(text, str) or not text.strip():
            dropped += 1
            continue
        raw_id = row.get(cfg.id_column) if cfg.id_column else None
        # the same id rule as data.corpus (stripped string; the text hash without an id column), so the
        # generate stage's corpus ids are exactly the keys looked up here
        source_id = str(raw_id).strip() if raw_id is not None else text_id(text)
        if source_id in seen:
            dropped += 1
            continue
        seen.add(source_id)
        rest = {k: v for k, v in row.items() if k not in {cfg.text_column, cfg.response_column, cfg.id_column}}
        response = row.get(cfg.response_column)
        yield {"source_id": source_id, "text": text, "response": response if isinstance(response, str) else None,
               "meta": json.dumps(rest, ensure_ascii=False, default=str) if rest else None}
    if dropped:
        log.warning("replay %s: skipped %d rows without text or with a repeated source id", cfg.path, dropped)


class ReplayEngine(Engine):
    """Looks answers up in `cfg.replay`; cannot score (a corpus has no logits)."""

    kind = "replay"

    def __init__(self, cfg: EngineConfig, cache_dir: str | None = None, data_dir: str | None = None):
        super().__init__(cfg, cache_dir)
        if cfg.replay is None:
            raise ConfigError("engine 'replay' needs a 'replay' section (path, text_column, response_column)")
        self.replay = cfg.replay
        rows = list(iter_replay_rows(cfg.replay, data_dir, cache_dir))
        self._by_id = {r["source_id"]: r["response"] for r in rows}
        self._by_text: dict[str, str | None] = {}
        for r in rows:
            self._by_text.setdefault(normalise_text(r["text"]), r["response"])

    def __len__(self) -> int:
        return len(self._by_id)

    def _lookup(self, req: GenerationRequest) -> Completion:
        if req.source_id is None and req.source_text is None:
            return Completion("", "error", error="replay needs GenerationRequest.source_id or source_text")
        found = req.source_id is not None and req.source_id in self._by_id
        if found:
            response = self._by_id[req.source_id]
        else:
            key = normalise_text(req.source_text) if req.source_text is not None else None
            found = key is not None and key in self._by_text
            response = self._by_text[key] if found and key is not None else None
        if not found:
            return Completion("", "error", error=f"source id={req.source_id!r} is not in the replay corpus "
                                                 f"{self.replay.path!r} (matched by id, then by text)")
        if not response:
            return Completion("", "error", error=f"replay row for source {req.source_id!r} has an empty "
                                                 f"{self.replay.response_column!r}")
        prompt = req.prompt if req.prompt is not None else " ".join(m["content"] for m in req.messages or [])
        return Completion(response, "stop", len(prompt.split()), len(response.split()))

    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        return [self._lookup(r) for r in requests]

    def score_next_token(self, prompts: list[str], candidates: list[str]) -> list[list[float]]:
        raise TypeError("engine 'replay' cannot score labels: a replayed corpus holds answers, not logits; "
                        "use an hf, vllm or openai engine for evaluation and serving")
