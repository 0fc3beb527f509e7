"""The Ray Data actor that turns prompt rows into teacher answers (KnowDist and ICLDist alike).

`GenerateUDF.__init__` builds the engine once per actor; `__call__` answers one batch with one
blocking engine call. `ContinuousGenerateUDF` (engines with continuous batching: vllm) awaits the
engine instead, so Ray Data keeps several batches in one actor's engine at once
(`engines.pool.batches_in_flight`) and a request starts as soon as a sequence slot frees. Neither
imports ray, so tests call them on a plain dict. Ray resources come from `engines.pool`, never from
here. Input columns are declared in `REQUIRED_COLUMNS` and checked per batch.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from typing import Any

from sentidistill.config import EngineConfig
from sentidistill.engines import build_engine
from sentidistill.engines.base import Completion, GenerationRequest
from sentidistill.engines.pool import exit_if_engine_dead

REQUIRED_COLUMNS: dict[str, str] = {
    "id": "Stable row id (str).",
    "messages": "JSON list of chat messages, or null when `prompt` is set.",
    "prompt": "Raw prompt text, or null when `messages` is set.",
    "max_new_tokens": "Answer budget (int).",
    "temperature": "Sampling temperature (float; 0 = greedy).",
    "top_p": "Nucleus sampling (float).",
    "seed": "Sampling seed (int).",
}
OPTIONAL_COLUMNS = ("source_id", "source_text")  # passed on to the engine (replay looks answers up by them)
STOP_COLUMN = "stop"  # optional JSON list of stop strings (ICL answers end at the first newline)


def _rows(batch: Any) -> list[dict[str, Any]]:
    """A pyarrow Table (the batch format the stages ask Ray for) or a dict of columns -> row dicts."""
    if hasattr(batch, "to_pylist"):
        return batch.to_pylist()
    return [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]


def check_columns(columns: Iterable[str], udf: str = "GenerateUDF") -> None:
    """Fail early, naming the UDF and the missing columns, instead of a KeyError deep in a batch."""
    missing = sorted(set(REQUIRED_COLUMNS) - set(columns))
    if missing:
        wanted = "; ".join(f"{c}: {REQUIRED_COLUMNS[c]}" for c in missing)
        raise ValueError(f"{udf}: required input columns {missing} not found ({wanted}). "
                         f"Input columns: {sorted(columns)}")


def to_request(row: dict[str, Any]) -> GenerationRequest:
    messages = row["messages"]
    return GenerationRequest(
        prompt=row["prompt"], messages=json.loads(messages) if messages is not None else None,
        max_new_tokens=int(row["max_new_tokens"]), temperature=float(row["temperature"]),
        top_p=float(row["top_p"]), seed=int(row["seed"]),
        stop=json.loads(row[STOP_COLUMN]) if row.get(STOP_COLUMN) else [],
        **{k: row[k] for k in OPTIONAL_COLUMNS if row.get(k) is not None},
    )


class GenerateUDF:
    """Ray Data callable class: engine built once, one `generate` call per batch, input columns kept."""

    def __init__(self, engine_cfg: EngineConfig, cache_dir: str | None = None, data_dir: str | None = None):
        self.engine = build_engine(engine_cfg, cache_dir, data_dir)
        self.teacher, self.kind = engine_cfg.display_name, engine_cfg.kind

    def __call__(self, batch: Any) -> dict[str, list[Any]]:
        """batch: a pyarrow Table (`map_batches(..., batch_format="pyarrow")`) or a dict of columns."""
        rows = self._rows(batch)
        try:
            completions = self.engine.generate([to_request(r) for r in rows])
        except Exception as e:  # a dead engine ends this actor (Ray restarts it); anything else fails the job
            exit_if_engine_dead(self.engine, e)
            raise
        return self._answered(rows, completions)

    @staticmethod
    def _rows(batch: Any) -> list[dict[str, Any]]:
        check_columns(batch.column_names if hasattr(batch, "column_names") else list(batch))
        return _rows(batch)

    def _answered(self, rows: list[dict[str, Any]], completions: list[Completion]) -> dict[str, list[Any]]:
        """The input columns plus the answer columns, one row per request."""
        n = len(rows)
        if len(completions) != n:
            raise RuntimeError(f"GenerateUDF: engine {self.kind} returned {len(completions)} answers for {n} requests")
        answers = [c.to_dict() for c in completions]
        out = {k: [r[k] for r in rows] for k in (rows[0] if rows else {})}
        for key in ("response", "finish_reason", "prompt_tokens", "completion_tokens", "latency_s", "error"):
            out[key] = [a[key] for a in answers]
        out["teacher"], out["engine"] = [self.teacher] * n, [self.kind] * n
        return out

    def __del__(self) -> None:
        # Ray Data drops the UDF when the actor exits gracefully: stop engine child processes (vllm).
        # Best effort: at interpreter exit imports fail, and vllm's engine core exits with its parent anyway.
        engine = getattr(self, "engine", None)
        if engine is not None:
            with contextlib.suppress(Exception):
                engine.shutdown()


class ContinuousGenerateUDF(GenerateUDF):
    """Async Ray Data callable class for engines with continuous batching: Ray Data runs several calls per
    actor at once (`max_concurrency`, engines.pool), each awaits `engine.generate_async`, and the engine
    admits each request as a sequence slot frees (up to `vllm.max_batches_in_flight` batches at once)."""

    async def __call__(self, batch: Any) -> dict[str, list[Any]]:  # type: ignore[override]
        rows = self._rows(batch)
        try:
            completions = await self.engine.generate_async([to_request(r) for r in rows])
        except Exception as e:  # as in GenerateUDF: a dead engine ends this actor, anything else fails the job
            exit_if_engine_dead(self.engine, e)
            raise
        return self._answered(rows, completions)
