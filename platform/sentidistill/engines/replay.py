"""Replay engine: answers from an existing teacher corpus (e.g. Mixtral rewrites) instead of a model.

Lets KnowDist reuse outputs someone already paid for, and makes stage tests cheap. Requests are
matched by `source_id`, then by whitespace-normalised `source_text`; sampling parameters are
ignored. Token counts are whitespace word counts (no tokenizer is involved), documented as such.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from sentidistill.config import EngineConfig, ReplayConfig
from sentidistill.data.corpus import clean_record, iter_records, normalise, replay_files, replay_spec
from sentidistill.engines.base import Capabilities, Completion, Engine, GenerationRequest
from sentidistill.errors import ConfigError
from sentidistill.readers import BadRecord

log = logging.getLogger("sentidistill")


def read_replay_table(cfg: ReplayConfig, data_dir: str | None = None,
                      cache_dir: str | None = None) -> list[dict[str, Any]]:
    """Every row of every file `cfg.path` names, as dicts, in file order, read by the corpus reader;
    checks the configured columns. Lines the reader rejects (invalid JSON, not an object) are skipped."""
    spec, rows, bad = replay_spec(cfg), [], 0
    files = replay_files(cfg, data_dir, cache_dir)
    for sf in files:
        for rec in iter_records(sf, spec):
            if isinstance(rec, BadRecord):
                bad += 1
            else:
                rows.append(rec)
    if bad:
        log.warning("replay %s: skipped %d unreadable lines or items", cfg.path, bad)
    columns = set().union(*(r.keys() for r in rows[:100])) if rows else set()
    wanted = {"replay.text_column": cfg.text_column, "replay.response_column": cfg.response_column,
              "replay.id_column": cfg.id_column}
    missing = [f"{k}={v!r}" for k, v in wanted.items() if v is not None and rows and v not in columns]
    if missing:
        raise ConfigError(f"replay file {files[0].uri if len(files) == 1 else cfg.path!r} lacks the columns "
                          f"{', '.join(missing)}; it has {sorted(columns)}")
    return rows


def iter_replay_rows(cfg: ReplayConfig, data_dir: str | None = None,
                     cache_dir: str | None = None) -> Iterator[dict[str, Any]]:
    """Yield `{source_id, text, response, meta}` once per source (first row wins).

    Rows get their id, text and meta from `data.corpus.clean_record` with the replay spec, the very rule
    the generate stage builds its corpus with, so replayed answers line up with its requests; rows that
    rule rejects (no text, no id) are skipped. `meta` is a JSON string of the other columns, or None.
    """
    spec, seen, dropped = replay_spec(cfg), set(), 0
    for n, record in enumerate(read_replay_table(cfg, data_dir, cache_dir)):
        row = clean_record(spec, record, n, 0, cfg.path)
        if row["status"] != "kept" or row["source_id"] in seen:
            dropped += 1
            continue
        seen.add(row["source_id"])
        response = record.get(cfg.response_column)
        yield {"source_id": row["source_id"], "text": row["text"],
               "response": response if isinstance(response, str) else None, "meta": row["meta"]}
    if dropped:
        log.warning("replay %s: skipped %d rows without text or id, or with a repeated source id", cfg.path, dropped)


class ReplayEngine(Engine):
    """Looks answers up in `cfg.replay`; cannot score (a corpus has no logits)."""

    kind = "replay"
    capabilities = Capabilities(loads_model=False, scores_labels=False, answers_any_prompt=False,
                                caches_prefixes=False)

    def __init__(self, cfg: EngineConfig, cache_dir: str | None = None, data_dir: str | None = None):
        super().__init__(cfg, cache_dir)
        if cfg.replay is None:
            raise ConfigError("engine 'replay' needs a 'replay' section (path, text_column, response_column)")
        self.replay = cfg.replay
        rows = list(iter_replay_rows(cfg.replay, data_dir, cache_dir))
        self._by_id = {r["source_id"]: r["response"] for r in rows}
        self._by_text: dict[str, str | None] = {}
        for r in rows:
            self._by_text.setdefault(normalise(r["text"]), r["response"])

    def __len__(self) -> int:
        return len(self._by_id)

    def _lookup(self, req: GenerationRequest) -> Completion:
        if req.source_id is None and req.source_text is None:
            return Completion("", "error", error="replay needs GenerationRequest.source_id or source_text")
        found = req.source_id is not None and req.source_id in self._by_id
        if found:
            response = self._by_id[req.source_id]
        else:
            key = normalise(req.source_text) if req.source_text is not None else None
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
