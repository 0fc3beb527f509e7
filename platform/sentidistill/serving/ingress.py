"""The ingress deployment: FastAPI routes in front of the model deployment's handle.

Light work only (prompt building from preloaded train pools, parsing, JSON); every model call goes
through the `StudentModel` handle, where `@serve.batch` combines concurrent requests. The FastAPI
app is built in the replica (`__serve_build_asgi_app__`) because its request limits come from config.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pathlib import Path

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from sentidistill.config import PipelineConfig
from sentidistill.engines import Completion, GenerationRequest
from sentidistill.rundir import is_remote
from sentidistill.serving.auth import load_key
from sentidistill.serving.deployment import GenerateJob, GenerateOutput, ScoreJob, ScoreOutput, StreamItem
from sentidistill.serving.errors import ApiError
from sentidistill.serving.metrics import ServeMetrics
from sentidistill.serving.routes import ApiContext, build_api
from sentidistill.serving.tasks import ServedTasks

log = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class AppSettings:
    """What the ingress needs besides the model handle: the config and the served model's identity."""

    cfg: PipelineConfig
    model_ref: str
    served_name: str


class HandleBackend:
    """The routes' view of the model deployment: typed calls, timeouts, and faults turned into ApiErrors."""

    def __init__(self, handle: DeploymentHandle, timeout_s: float, health_timeout_s: float, metrics: ServeMetrics):
        self.handle = handle
        self.timeout_s = timeout_s
        self.health_timeout_s = health_timeout_s
        self.metrics = metrics

    async def _call(self, method: str, timeout_s: float, *args: Any) -> Any:
        """The call, cancelled in the replica when it times out or the client goes away (frees the engine)."""
        response = getattr(self.handle, method).remote(*args)
        try:
            return await asyncio.wait_for(response, timeout_s)
        except asyncio.TimeoutError:
            response.cancel()
            raise ApiError(504, f"the model did not answer within {timeout_s:g}s (serve.request_timeout_s)",
                           code="timeout", type="timeout_error") from None
        except asyncio.CancelledError:
            response.cancel()
            raise
        except Exception as e:  # noqa: BLE001 - replica died, scaling, back-pressure: the client may retry
            log.warning("model deployment call %s failed: %s", method, e)
            raise ApiError(503, f"the model deployment is unavailable ({type(e).__name__}); retry shortly",
                           code="model_unavailable") from None

    async def score(self, prompts: list[str], candidates: list[str]) -> list[list[float]]:
        job = ScoreJob(self.timeout_s, prompts=prompts, candidates=candidates)
        out: ScoreOutput = await self._call("score", self.timeout_s, job)
        self.metrics.observe_batch("score", out.batch_requests)
        if out.error is not None:
            status = 422 if out.error_kind == "client" else 502
            raise ApiError(status, f"scoring failed: {out.error}", code="scoring_failed")
        return out.logits

    async def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        job = GenerateJob(self.timeout_s, requests=requests)
        out: GenerateOutput = await self._call("generate", self.timeout_s, job)
        self.metrics.observe_batch("generate", out.batch_requests)
        failed = next((c for c in out.completions if c.finish_reason == "error"), None)
        if failed is not None:
            raise ApiError(502, f"generation failed: {failed.error}", code="generation_failed")
        return out.completions

    async def generate_stream(self, requests: list[GenerationRequest]) -> AsyncIterator[StreamItem]:
        """The model's streamed text, then its completions (an engine failure is raised as a 502). The whole
        stream has serve.request_timeout_s; leaving early (client gone) cancels the work in the replica."""
        job = GenerateJob(self.timeout_s, requests=requests)
        stream = self.handle.options(stream=True).generate_stream.remote(job)
        deadline = time.monotonic() + self.timeout_s
        finished = False
        try:
            while True:
                try:
                    item: StreamItem = await asyncio.wait_for(stream.__anext__(), max(0.0, deadline - time.monotonic()))
                except StopAsyncIteration:
                    raise ApiError(502, "generation failed: the model's stream ended early",
                                   code="generation_failed") from None
                except asyncio.TimeoutError:
                    raise ApiError(504, f"the model did not finish within {self.timeout_s:g}s (serve.request_timeout_s)",
                                   code="timeout", type="timeout_error") from None
                except Exception as e:  # noqa: BLE001 - replica died, scaling: the client may retry
                    log.warning("model deployment call generate_stream failed: %s", e)
                    raise ApiError(503, f"the model deployment is unavailable ({type(e).__name__}); retry shortly",
                                   code="model_unavailable") from None
                if item.completions is not None:
                    finished = True
                    failed = next((c for c in item.completions if c.finish_reason == "error"), None)
                    if failed is not None:
                        raise ApiError(502, f"generation failed: {failed.error}", code="generation_failed")
                    self.metrics.observe_batch("generate", 1)
                yield item
                if finished:
                    return
        finally:
            if not finished:
                stream.cancel()

    async def info(self) -> dict[str, Any]:
        try:
            return await self._call("info", self.health_timeout_s)
        except ApiError as e:
            raise ApiError(503, f"not ready: no model replica answered ({e.message})", code="not_ready") from None


def public_root(model_ref: str, served_name: str) -> str:
    """What /v1/models shows as `root`: never a filesystem path of the server (a hub id or URI is kept)."""
    local = not is_remote(model_ref) and (model_ref.startswith(("/", ".", "~")) or Path(model_ref).exists())
    return served_name if local else model_ref


@serve.deployment(name="Ingress")
@serve.ingress()
class Ingress:
    """Loads the served tasks' train pools and the API key once per replica; builds the FastAPI app."""

    def __init__(self, model: DeploymentHandle, settings: AppSettings):
        cfg, s = settings.cfg, settings.cfg.serve
        metrics = ServeMetrics()
        self.ctx = ApiContext(
            cfg=s, served_name=settings.served_name, model_ref=settings.model_ref,
            model_root=public_root(settings.model_ref, settings.served_name), tasks=ServedTasks.load(cfg),
            model=HandleBackend(model, s.request_timeout_s, s.health_timeout_s, metrics), metrics=metrics,
            key=load_key(s.api_key_env), started=int(time.time()),
        )

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_api(self.ctx)
