"""The Ray Data actor that scores evaluation items: label logits for classification, greedy text for extraction.

`EvalUDF.__init__` builds the engine once per actor; `__call__` handles one batch, which may mix
tasks: classification rows are grouped by their label set and scored with one
`score_next_token` call per group (one forward pass per prompt, no generation); extraction rows
go through one greedy `generate` call. It never imports ray, so tests call it on a plain dict.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterable
from typing import Any

from sentidistill.config import EngineConfig
from sentidistill.engines import GenerationRequest, build_engine, capabilities
from sentidistill.engines.base import first_token_ids, prompt_ids, render_messages
from sentidistill.engines.gen_config import apply_processors, greedy_processors
from sentidistill.engines.openai import EndpointError
from sentidistill.engines.pool import exit_if_engine_dead
from sentidistill.tasks import as_messages

REQUIRED_COLUMNS: dict[str, str] = {
    "part": "Part name '<task>/seed-<seed>' (str).",
    "idx": "Item index in the part's test order (int).",
    "kind": "'classify' or 'extract'.",
    "prompt": "The raw SentiBench prompt (str).",
    "chat": "Wrap the prompt as one user turn with the model's chat template (bool).",
    "candidates": "classify: JSON list of label strings whose first token is scored; extract: null.",
    "max_new_tokens": "extract: greedy generation budget (int).",
}
OUTPUT_COLUMNS = ("part", "idx", "output", "scores", "processed_scores", "finish_reason", "prompt_tokens",
                  "completion_tokens", "error", "dtype", "logit_processors")


def _rows(batch: Any) -> list[dict[str, Any]]:
    """A pyarrow Table (the batch format the stage asks for) or a dict of columns -> row dicts."""
    if hasattr(batch, "to_pylist"):
        return batch.to_pylist()
    return [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]


def check_columns(columns: Iterable[str]) -> None:
    missing = sorted(set(REQUIRED_COLUMNS) - set(columns))
    if missing:
        wanted = "; ".join(f"{c}: {REQUIRED_COLUMNS[c]}" for c in missing)
        raise ValueError(f"EvalUDF: required input columns {missing} not found ({wanted}). "
                         f"Input columns: {sorted(columns)}")


class EvalUDF:
    """Ray Data callable class: one engine per actor; output rows keep `part` and `idx` (not the prompt)."""

    def __init__(self, engine_cfg: EngineConfig, cache_dir: str | None = None):
        self.engine = build_engine(engine_cfg, cache_dir)
        self.dtype = self.engine.weights_dtype
        # The model's greedy logits processors (its generation_config); an endpoint scores with whatever the
        # server does: nothing is applied here. Recorded with every row (metrics.json) for a loaded model.
        gen_cfg = self.engine.generation_config
        self.processors, not_applied = greedy_processors(gen_cfg) if gen_cfg is not None else ({}, [])
        self.processor_note = json.dumps({"applied": self.processors, "not_applied": not_applied}, sort_keys=True) \
            if capabilities(self.engine.kind).loads_model else None

    def _scoring_text(self, row: dict[str, Any]) -> str:
        if not row["chat"]:
            return row["prompt"]
        tokenizer = self.engine.chat_tokenizer
        if tokenizer is None:
            raise ValueError(f"engine {self.engine.kind!r} has no local tokenizer to apply a chat template for "
                             "label scoring; use eval.prompt_variant=raw")
        return render_messages(tokenizer, as_messages(row["prompt"]))

    def _classify(self, rows: list[dict[str, Any]], out: list[dict[str, Any]]) -> None:
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            groups.setdefault(r["candidates"], []).append(i)
        for cands, idx in groups.items():
            texts = [self._scoring_text(rows[i]) for i in idx]
            try:
                logits = self.engine.score_next_token(texts, json.loads(cands))
            except EndpointError as e:  # only these items fail: their parts are not written, the next run retries
                for i in idx:
                    out[i].update(finish_reason="error", error=f"{type(e).__name__}: {e}")
                continue
            cand_ids = first_token_ids(self.engine.tokenizer, json.loads(cands)) if self.processors else []
            for i, text, values in zip(idx, texts, logits, strict=True):
                # JSON has no infinity: a label the endpoint did not return is null (never predicted)
                finite = [v if math.isfinite(v) else None for v in values]
                out[i].update(scores=json.dumps(finite), finish_reason="scored", completion_tokens=0)
                if self.processors:  # reference mode compares these, as generate(...).scores[0] does
                    done = apply_processors(self.processors, prompt_ids(self.engine.tokenizer, text), cand_ids, values)
                    out[i]["processed_scores"] = json.dumps([v if math.isfinite(v) else None for v in done])

    def _extract(self, rows: list[dict[str, Any]], out: list[dict[str, Any]]) -> None:
        reqs = [GenerationRequest(prompt=None if r["chat"] else r["prompt"],
                                  messages=as_messages(r["prompt"]) if r["chat"] else None,
                                  max_new_tokens=int(r["max_new_tokens"]), temperature=0.0, top_p=1.0)
                for r in rows]
        for o, c in zip(out, self.engine.generate(reqs), strict=True):
            o.update(output=c.text, finish_reason=c.finish_reason, prompt_tokens=c.prompt_tokens,
                     completion_tokens=c.completion_tokens, error=c.error)

    def __call__(self, batch: Any) -> dict[str, list[Any]]:
        """batch: a pyarrow Table (`map_batches(..., batch_format="pyarrow")`) or a dict of columns."""
        check_columns(batch.column_names if hasattr(batch, "column_names") else list(batch))
        rows = _rows(batch)
        out = [{"part": r["part"], "idx": r["idx"], "output": None, "scores": None, "processed_scores": None,
                "finish_reason": None, "prompt_tokens": None, "completion_tokens": None, "error": None,
                "dtype": self.dtype, "logit_processors": self.processor_note} for r in rows]
        classify = [i for i, r in enumerate(rows) if r["kind"] == "classify"]
        extract = [i for i, r in enumerate(rows) if r["kind"] == "extract"]
        for indices, handler in ((classify, self._classify), (extract, self._extract)):
            if indices:
                sub = [out[i] for i in indices]
                try:
                    handler([rows[i] for i in indices], sub)
                except Exception as e:  # a dead engine ends this actor (Ray restarts it); anything else fails the job
                    exit_if_engine_dead(self.engine, e)
                    raise
        return {col: [o[col] for o in out] for col in OUTPUT_COLUMNS}

    def close(self) -> None:
        """Release the engine (idempotent): vllm child processes stop with it."""
        engine, self.engine = getattr(self, "engine", None), None
        if engine is not None:
            engine.shutdown()

    def __del__(self) -> None:
        # Ray Data drops the UDF when the actor exits gracefully; at interpreter exit torch may be gone already.
        with contextlib.suppress(Exception):
            self.close()
