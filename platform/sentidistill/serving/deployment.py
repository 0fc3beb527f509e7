"""The model deployment: one engine per replica, requests combined by `@serve.batch`.

Two batched methods, one per engine operation: `score` (first-token label logits) and `generate`.
Each batched unit is one HTTP request's work (its prompts), so concurrent requests share a forward
pass. Engine calls run on one worker thread per replica (vLLM's `LLM` is not thread-safe) and are at
most `engine.resources.batch_size` prompts each: two generation batches may run at once and their calls take
turns on the worker, so a long extraction holds a short completion back by one call at most, and
scoring never waits for a whole generation batch. Before each call the batch drops the work of requests nobody waits for any more (the caller
cancelled, or its timeout passed). Failures come back per request as data; a failed call is retried
request by request, so one bad request never fails its batch neighbours.

`generate_stream` (called with `handle.options(stream=True)`) runs one request's generation apart
from the batches, in engine calls that take their turns on the same worker, and yields its text as
the engine makes it (token by token with the hf engine), then the completions. When the caller
goes (client disconnect, timeout) the engine stops at its next token.

`check_health` (called by Serve every `serve.health_check_period_s`) fails when an engine call has
run longer than `serve.engine_stall_s` (a frozen engine) or a one-token probe fails (a dead one):
Serve then replaces the replica.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, Literal, TypeVar

from ray import serve

from sentidistill.config import EngineConfig
from sentidistill.engines import Completion, GenerationRequest, build_engine
from sentidistill.engines.base import TextStream

log = logging.getLogger("ray.serve")

ErrorKind = Literal["client", "engine", "cancelled"]
T = TypeVar("T")
PROBE = GenerationRequest(prompt="ok", max_new_tokens=1)
# Batches one replica runs at once, per method; their engine calls take turns on the worker thread.
# Scoring (one forward pass per prompt) keeps one batch at a time: full engine calls, the most labels
# per second on a CPU (concurrent batches split the same requests into smaller calls). Generation runs
# two, so a short completion waits behind at most one call of a long extraction, not all of it.
SCORE_CONCURRENT_BATCHES = 1
GENERATE_CONCURRENT_BATCHES = 2


@dataclass
class Job:
    """One request's engine work and how long its caller waits for it (from its arrival at the replica)."""

    timeout_s: float
    expires: float = 0.0
    cancelled: bool = False

    def gone(self) -> bool:
        return self.cancelled or time.monotonic() > self.expires


@dataclass
class ScoreJob(Job):
    prompts: list[str] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)


@dataclass
class GenerateJob(Job):
    requests: list[GenerationRequest] = field(default_factory=list)


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


@dataclass
class StreamItem:
    """One message of `generate_stream`: text pieces (request index, text), or at the end the completions."""

    pieces: list[tuple[int, str]] = field(default_factory=list)
    completions: list[Completion] | None = None


def sampling_key(r: GenerationRequest) -> tuple[Any, ...]:
    """Requests with equal keys can share one engine call; never compares None with an int."""
    return r.max_new_tokens, r.temperature, r.top_p, tuple(r.stop), r.seed is not None, r.seed or 0


def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


@serve.deployment(name="StudentModel")
class StudentModel:
    """A loaded student; `score` and `generate` are the engine's two operations, batched across requests."""

    def __init__(self, engine_cfg: EngineConfig, cache_dir: str | None, max_batch_size: int,
                 batch_wait_timeout_s: float, engine_stall_s: float = 300.0, probe_timeout_s: float = 20.0):
        self.engine = build_engine(engine_cfg, cache_dir)
        self.name = engine_cfg.display_name
        self.call_size = max(1, engine_cfg.resources.batch_size)
        self.stall_s = engine_stall_s
        self.probe_timeout_s = probe_timeout_s
        self.call_started: float | None = None  # monotonic start of the engine call now running
        self.problem: str | None = None  # why the last probe failed
        self.dropped = 0  # requests whose work was skipped: cancelled or past their timeout
        self.longest_call_s = 0.0  # the longest engine call so far: what one call may hold the engine for
        self.calls_done = 0
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="engine")
        for method in (self._score_batch, self._generate_batch):
            method.set_max_batch_size(max_batch_size)
            method.set_batch_wait_timeout_s(batch_wait_timeout_s)

    # engine calls -------------------------------------------------------------
    def _timed(self, fn: Callable[..., T], *args: Any) -> T:
        self.call_started = started = time.monotonic()
        try:
            return fn(*args)
        finally:
            self.call_started = None
            self.calls_done += 1
            self.longest_call_s = max(self.longest_call_s, time.monotonic() - started)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, self._timed, fn, *args)

    # request entry points -----------------------------------------------------
    async def score(self, job: ScoreJob) -> ScoreOutput:
        return await self._tracked(self._score_batch, job)

    async def generate(self, job: GenerateJob) -> GenerateOutput:
        return await self._tracked(self._generate_batch, job)

    async def generate_stream(self, job: GenerateJob) -> AsyncIterator[StreamItem]:
        """The job's text as the engine makes it (pieces sent together when they pile up), then its completions."""
        job.expires = time.monotonic() + job.timeout_s
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, str] | None] = asyncio.Queue()
        stream = TextStream(lambda i, text: loop.call_soon_threadsafe(queue.put_nowait, (i, text)), job.gone)
        work = asyncio.ensure_future(self._stream_calls(job, stream))
        work.add_done_callback(lambda _: queue.put_nowait(None))  # after every piece: they were queued first
        try:
            while True:
                items = [await queue.get()]
                while not queue.empty():
                    items.append(queue.get_nowait())
                pieces = [item for item in items if item is not None]
                if pieces:
                    yield StreamItem(pieces=pieces)
                if items[-1] is None:
                    break
            yield StreamItem(completions=work.result())
        finally:
            if not work.done():  # the caller left: the engine stops at its next token, later calls are skipped
                job.cancelled = True
                self.dropped += 1

    async def _stream_calls(self, job: GenerateJob, stream: TextStream) -> list[Completion]:
        """The job's requests in engine calls of at most call_size, each taking its turn on the worker."""
        done: list[Completion] = []
        for start in range(0, len(job.requests), self.call_size):
            reqs = list(job.requests[start:start + self.call_size])
            if job.gone():
                return done + [Completion("", "error", error="cancelled") for _ in job.requests[len(done):]]
            try:
                done += await self._run(self.engine.generate_streaming, reqs,
                                        stream.for_rows(list(range(start, start + len(reqs)))))
            except Exception as e:  # noqa: BLE001 - engines report per-row errors; this is the last guard
                log.exception("generate_streaming failed")
                done += [Completion("", "error", error=f"{type(e).__name__}: {e}") for _ in reqs]
        return done

    @staticmethod
    async def _tracked(batched: Any, job: Job) -> Any:
        """Start the job's clock here; a cancelled caller (client gone, ingress timeout) marks it gone."""
        job.expires = time.monotonic() + job.timeout_s
        try:
            return await batched(job)
        except asyncio.CancelledError:
            job.cancelled = True
            raise

    # batched work -------------------------------------------------------------
    @serve.batch(max_concurrent_batches=SCORE_CONCURRENT_BATCHES)
    async def _score_batch(self, jobs: list[ScoreJob]) -> list[ScoreOutput]:
        """Jobs with the same candidates share engine calls; a failing call is retried job by job."""
        outputs = [ScoreOutput(batch_requests=len(jobs)) for _ in jobs]
        key = lambda i: tuple(jobs[i].candidates)  # noqa: E731
        for _, group in groupby(sorted(range(len(jobs)), key=key), key=key):
            pairs = [(i, p) for i in group for p in jobs[i].prompts]
            for chunk in chunks(pairs, self.call_size):
                await self._score_chunk(jobs, outputs, chunk)
        return outputs

    async def _score_chunk(self, jobs: list[ScoreJob], outputs: list[ScoreOutput],
                           chunk: Sequence[tuple[int, str]]) -> None:
        live = [(i, p) for i, p in chunk if outputs[i].error is None and not self._dropped(jobs[i], outputs[i])]
        if not live:
            return
        try:
            rows = await self._run(self.engine.score_next_token, [p for _, p in live], jobs[live[0][0]].candidates)
        except Exception as e:  # noqa: BLE001 - isolated below, then reported per request
            owners = sorted({i for i, _ in live})
            if len(owners) > 1:  # retry each request alone: only the one at fault fails
                for i in owners:
                    await self._score_chunk(jobs, outputs, [(j, p) for j, p in live if j == i])
                return
            kind: ErrorKind = "client" if isinstance(e, ValueError) else "engine"
            if kind == "engine":
                log.exception("score_next_token failed")
            outputs[owners[0]].error = str(e) if kind == "client" else f"{type(e).__name__}: {e}"
            outputs[owners[0]].error_kind = kind
            return
        for (i, _), row in zip(live, rows, strict=True):
            outputs[i].logits.append(row)

    @serve.batch(max_concurrent_batches=GENERATE_CONCURRENT_BATCHES)
    async def _generate_batch(self, jobs: list[GenerateJob]) -> list[GenerateOutput]:
        """Requests sorted by sampling params, in engine calls of engine.resources.batch_size; gone jobs are skipped."""
        done: list[list[Completion | None]] = [[None] * len(job.requests) for job in jobs]
        pairs = sorted(((i, j) for i, job in enumerate(jobs) for j in range(len(job.requests))),
                       key=lambda ij: sampling_key(jobs[ij[0]].requests[ij[1]]))
        skipped: set[int] = set()
        for chunk in chunks(pairs, self.call_size):
            gone = {i for i, _ in chunk if jobs[i].gone()}
            self.dropped += len(gone - skipped)
            skipped |= gone
            live = [(i, j) for i, j in chunk if i not in skipped]
            if live:
                await self._generate_chunk(jobs, done, live)
        return [GenerateOutput([c or Completion("", "error", error="cancelled") for c in row], len(jobs))
                for row in done]

    async def _generate_chunk(self, jobs: list[GenerateJob], done: list[list[Completion | None]],
                              live: list[tuple[int, int]]) -> None:
        try:
            results = await self._run(self.engine.generate, [jobs[i].requests[j] for i, j in live])
        except Exception as e:  # noqa: BLE001 - engines report per-row errors; this is the last guard
            log.exception("generate failed")
            results = [Completion("", "error", error=f"{type(e).__name__}: {e}") for _ in live]
        for (i, j), c in zip(live, results, strict=True):
            done[i][j] = c

    def _dropped(self, job: Job, out: ScoreOutput) -> bool:
        if job.gone():
            out.error, out.error_kind = "cancelled", "cancelled"
            self.dropped += 1
            return True
        return False

    # health -----------------------------------------------------------------
    def stalled(self) -> str | None:
        started = self.call_started
        if started is not None and time.monotonic() - started > self.stall_s:
            return (f"the engine has been busy with one call for {time.monotonic() - started:.0f}s, more than "
                    f"serve.engine_stall_s ({self.stall_s:g}s): frozen")
        return None

    async def check_health(self) -> None:
        """Serve's liveness check: a frozen engine call, or a failing one-token probe, fails the replica."""
        problem = self.stalled()
        if problem is None and self.call_started is None:
            done_before = self.calls_done
            try:
                out = await asyncio.wait_for(self._run(self.engine.generate, [PROBE]), self.probe_timeout_s)
                problem = f"engine probe failed: {out[0].error}" if out[0].finish_reason == "error" else None
            except asyncio.TimeoutError:  # queued behind real work that is progressing: busy, not dead
                busy = self.calls_done > done_before or (self.call_started is not None and not self.stalled())
                problem = None if busy else f"engine probe did not answer within {self.probe_timeout_s:g}s"
            except Exception as e:  # noqa: BLE001 - a dead engine (e.g. vLLM's engine core exited)
                problem = f"engine probe failed: {type(e).__name__}: {e}"
        self.problem = problem
        if problem is not None:
            log.error("unhealthy: %s", problem)
            raise RuntimeError(problem)

    async def info(self) -> dict[str, Any]:
        """What /healthz reports: the engine, and why it is unhealthy (None when it is fine)."""
        return {"model": self.name, "engine": self.engine.kind, "problem": self.stalled() or self.problem,
                "dropped": self.dropped, "longest_engine_call_s": round(self.longest_call_s, 3),
                "returns_logprobs": self.engine.returns_logprobs(self.engine.cfg)}

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()
        worker = getattr(self, "_worker", None)
        if worker is not None:
            worker.shutdown(wait=False)
