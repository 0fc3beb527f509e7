"""The model deployment: one engine per replica, requests combined by `@serve.batch`.

Two batched methods, one per engine operation: `score` (first-token label logits) and `generate`.
Each batched unit is one HTTP request's work (its prompts), so concurrent requests share a forward
pass. Engine calls run on one worker thread per replica: the event loop keeps accepting requests
(which fill the next batch) and the engine never runs two calls at once (vLLM's `LLM` is not
thread-safe). Failures come back per request as data, so one bad request never fails its batch
neighbours and nothing a client sends can crash the replica.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, Literal

from ray import serve

from sentidistill.config import EngineConfig
from sentidistill.engines import Completion, GenerationRequest, build_engine

log = logging.getLogger("ray.serve")

ErrorKind = Literal["client", "engine"]


@dataclass
class ScoreJob:
    prompts: list[str]
    candidates: list[str]


@dataclass
class ScoreOutput:
    logits: list[list[float]] = field(default_factory=list)
    error: str | None = None
    error_kind: ErrorKind | None = None
    batch_requests: int = 1  # requests in the batch this one ran in: the observable proof of batching


@dataclass
class GenerateOutput:
    completions: list[Completion] = field(default_factory=list)
    batch_requests: int = 1


@serve.deployment(name="StudentModel")
class StudentModel:
    """A loaded student; `score` and `generate` are the engine's two operations, batched across requests."""

    def __init__(self, engine_cfg: EngineConfig, cache_dir: str | None, max_batch_size: int,
                 batch_wait_timeout_s: float):
        self.engine = build_engine(engine_cfg, cache_dir)
        self.name = engine_cfg.display_name
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="engine")
        for method in (self.score, self.generate):
            method.set_max_batch_size(max_batch_size)
            method.set_batch_wait_timeout_s(batch_wait_timeout_s)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    @serve.batch
    async def score(self, jobs: list[ScoreJob]) -> list[ScoreOutput]:
        """Jobs with the same candidates share one engine call; a failing group fails only its own jobs."""
        outputs = [ScoreOutput(batch_requests=len(jobs)) for _ in jobs]
        key = lambda i: tuple(jobs[i].candidates)  # noqa: E731
        for _, group in groupby(sorted(range(len(jobs)), key=key), key=key):
            idx = list(group)
            prompts = [p for i in idx for p in jobs[i].prompts]
            try:
                rows = await self._run(self.engine.score_next_token, prompts, jobs[idx[0]].candidates)
            except ValueError as e:  # labels the tokenizer cannot tell apart: the request's candidates
                self._fail(outputs, idx, str(e), "client")
                continue
            except Exception as e:  # noqa: BLE001 - reported to the client as an engine error (502)
                log.exception("score_next_token failed")
                self._fail(outputs, idx, f"{type(e).__name__}: {e}", "engine")
                continue
            start = 0
            for i in idx:
                n = len(jobs[i].prompts)
                outputs[i].logits = rows[start:start + n]
                start += n
        return outputs

    @staticmethod
    def _fail(outputs: list[ScoreOutput], idx: list[int], message: str, kind: ErrorKind) -> None:
        for i in idx:
            outputs[i].error, outputs[i].error_kind = message, kind

    @serve.batch
    async def generate(self, jobs: list[list[GenerationRequest]]) -> list[GenerateOutput]:
        """All requests of the batch in one engine call (the engine groups equal sampling params)."""
        flat = [r for job in jobs for r in job]
        try:
            done: list[Completion] = await self._run(self.engine.generate, flat)
        except Exception as e:  # noqa: BLE001 - engines report per-row errors; this is the last guard
            log.exception("generate failed")
            done = [Completion("", "error", error=f"{type(e).__name__}: {e}") for _ in flat]
        outputs, start = [], 0
        for job in jobs:
            outputs.append(GenerateOutput(done[start:start + len(job)], batch_requests=len(jobs)))
            start += len(job)
        return outputs

    async def info(self) -> dict[str, str]:
        """Answered only once the engine is loaded (the constructor finished): what /healthz asks."""
        return {"model": self.name, "engine": self.engine.kind}

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()
        worker = getattr(self, "_worker", None)
        if worker is not None:
            worker.shutdown(wait=False)
