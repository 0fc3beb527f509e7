"""The FastAPI app of the ingress: routes, error handling, auth and request metrics.

Built per replica by `build_api(ctx)` because request limits come from the config (see schemas).
Every non-2xx answer is one JSON shape (`ErrorBody`): 4xx for client faults, naming the field;
502 when the engine failed on a request, 503 when the model deployment is unreachable, 504 on timeout.
No `from __future__ import annotations` here: FastAPI must see the locally built request classes.
"""

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import SecretStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from sentidistill.config import ServeConfig
from sentidistill.engines import Completion, GenerationRequest
from sentidistill.serving.auth import PUBLIC_PATHS, check_bearer
from sentidistill.serving.errors import ApiError, ErrorBody, ErrorInfo, field_path
from sentidistill.serving.metrics import ServeMetrics
from sentidistill.serving.schemas import (
    AssistantMessage, ChatChoice, ChatCompletionResponse, CompletionChoice, CompletionResponse, ExtractResponse,
    Health, ModelCard, ModelList, ScoreResponse, SentimentResponse, Usage, request_models,
)
from sentidistill.serving.tasks import ServedTasks

log = logging.getLogger("ray.serve")

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text} for code, text in {
        401: "Missing or wrong API key (when serve.api_key_env is set).",
        404: "Unknown model name.",
        422: "Invalid request: the message names the field.",
        502: "The engine failed on this request.",
        503: "The model deployment is not reachable (starting, scaling, or failed).",
        504: "The model did not answer within serve.request_timeout_s.",
    }.items()
}


class ModelBackend(Protocol):
    """What the routes need from the model deployment (the ingress wraps its handle in this)."""

    async def score(self, prompts: list[str], candidates: list[str]) -> list[list[float]]: ...

    async def generate(self, requests: list[GenerationRequest]) -> list[Completion]: ...

    async def info(self) -> dict[str, str]: ...


@dataclass
class ApiContext:
    cfg: ServeConfig
    served_name: str
    model_ref: str
    tasks: ServedTasks
    model: ModelBackend
    metrics: ServeMetrics
    key: SecretStr | None
    started: int


def error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body().model_dump(exclude_none=True), status_code=err.status, headers=err.headers)


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    details = [{"loc": ["body"] if e["type"] == "json_invalid" else list(e["loc"]),  # loc holds a char offset
                "msg": str(e["msg"]).removeprefix("Value error, "), "type": e["type"]} for e in errors]
    message = "; ".join(f"{field_path(d['loc'])}: {d['msg']}" for d in details)
    param = field_path(details[0]["loc"]) if details else None
    body = ErrorBody(error=ErrorInfo(message=message, type="invalid_request_error", param=param,
                                     code="validation_error"), detail=details)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=422)


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(ApiError(exc.status_code, str(exc.detail), code="http_error", headers=exc.headers))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in a route")
        return error_response(ApiError(500, f"internal error ({type(exc).__name__}); see the replica log",
                                       type="server_error"))


def _document_bearer(app: FastAPI) -> None:
    """Declare the bearer scheme in the OpenAPI spec so the docs' Authorize button works."""
    schema = app.openapi()
    schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
        "type": "http", "scheme": "bearer"}
    for path, operations in schema["paths"].items():
        if path not in PUBLIC_PATHS:
            for op in operations.values():
                op["security"] = [{"bearer": []}]


def _usage(done: list[Completion]) -> Usage:
    prompt, completion = sum(c.prompt_tokens for c in done), sum(c.completion_tokens for c in done)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def build_api(ctx: ApiContext) -> FastAPI:
    """The app: sentiment/extract task routes, OpenAI-compatible routes, /v1/score, health and metrics."""
    from sentidistill import __version__

    models = request_models(ctx.cfg)
    SentimentRequest, ExtractRequest = models.sentiment, models.extract  # noqa: N806 - classes
    CompletionRequest, ChatRequest, ScoreRequest = models.completion, models.chat, models.score  # noqa: N806
    app = FastAPI(
        title="SentiDistill student", version=__version__,
        description="A distilled sentiment student on Ray Serve: SentiBench-style labels and probabilities, "
        "tuple extraction, OpenAI-compatible completions, and first-token label scores for evaluation.",
    )
    _install_handlers(app)

    @app.middleware("http")
    async def guard_and_measure(request: Request, call_next: Any) -> Response:
        t0 = time.perf_counter()
        path, root = request.scope["path"], request.scope.get("root_path", "")
        path = path[len(root):] if root and path.startswith(root) else path  # app mounted under a prefix
        try:
            if path not in PUBLIC_PATHS:
                check_bearer(ctx.key, request.headers.get("authorization"))
            response = await call_next(request)
        except ApiError as e:
            response = error_response(e)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        ctx.metrics.observe_request(route, response.status_code, time.perf_counter() - t0)
        return response

    def check_model(name: str | None) -> None:
        if name is not None and name != ctx.served_name:
            raise ApiError(404, f"model: The model {name!r} does not exist; this endpoint serves "
                                f"{ctx.served_name!r} (GET /v1/models)", param="model", code="model_not_found")

    @app.get("/healthz", response_model=Health, responses={503: ERRORS[503]}, tags=["ops"])
    async def healthz() -> Health:
        """Ready when a model replica has loaded the model (no auth)."""
        info = await ctx.model.info()
        return Health(model=ctx.served_name, engine=info["engine"])

    @app.get("/metrics", response_class=Response, tags=["ops"],
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text."}})
    async def metrics() -> Response:
        """Requests, latency and model batch sizes seen by this ingress replica (Prometheus text)."""
        return Response(ctx.metrics.prometheus_text(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/stats", tags=["ops"])
    async def stats() -> dict[str, Any]:
        """Model batch sizes seen by this ingress replica (JSON): `batches.score.max_batch` > 1 means batching."""
        return {"model": ctx.served_name, **ctx.metrics.snapshot()}

    @app.get("/v1/models", response_model=ModelList, responses=ERRORS, tags=["openai"])
    async def list_models() -> ModelList:
        return ModelList(data=[ModelCard(id=ctx.served_name, created=ctx.started, root=ctx.model_ref)])

    @app.post("/v1/sentiment", response_model=SentimentResponse, responses=ERRORS, tags=["tasks"])
    async def sentiment(req: SentimentRequest) -> SentimentResponse:  # type: ignore[valid-type]
        """Label each text; probabilities are the softmax over the labels' first-token logits (SentiBench)."""
        task = ctx.tasks.resolve(req.task, "classify")
        prompts, k, seed = ctx.tasks.prompts(task, req.texts, req.target, req.k, req.seed)
        logits = await ctx.model.score(prompts, ctx.tasks.candidates(task))
        return SentimentResponse(model=ctx.served_name, task=task.name, labels=task.labels, k=k, seed=seed,
                                 results=ctx.tasks.label_results(task, logits))

    @app.post("/v1/extract", response_model=ExtractResponse, responses=ERRORS, tags=["tasks"])
    async def extract(req: ExtractRequest) -> ExtractResponse:  # type: ignore[valid-type]
        """Greedy generation parsed into tuples as SentiBench parses them; parse failures are reported."""
        task = ctx.tasks.resolve(req.task, "extract")
        prompts, k, seed = ctx.tasks.prompts(task, req.texts, req.target, req.k, req.seed)
        done = await ctx.model.generate([
            GenerationRequest(prompt=p, max_new_tokens=ctx.cfg.extract_max_new_tokens, temperature=0.0)
            for p in prompts])
        return ExtractResponse(model=ctx.served_name, task=task.name, fields=task.tuple_fields, k=k, seed=seed,
                               results=[ctx.tasks.extraction_result(task, c) for c in done])

    @app.post("/v1/completions", response_model=CompletionResponse, responses=ERRORS, tags=["openai"])
    async def completions(req: CompletionRequest) -> CompletionResponse:  # type: ignore[valid-type]
        """OpenAI-compatible text completion of raw prompts (no chat template)."""
        check_model(req.model)
        done = await ctx.model.generate([
            GenerationRequest(prompt=p, max_new_tokens=req.max_tokens, temperature=req.temperature,
                              top_p=req.top_p, seed=req.seed, stop=req.stop_list()) for p in req.prompts()])
        return CompletionResponse(
            id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()), model=ctx.served_name, usage=_usage(done),
            choices=[CompletionChoice(index=i, text=c.text, finish_reason=c.finish_reason) for i, c in enumerate(done)])

    @app.post("/v1/chat/completions", response_model=ChatCompletionResponse, responses=ERRORS, tags=["openai"])
    async def chat_completions(req: ChatRequest) -> ChatCompletionResponse:  # type: ignore[valid-type]
        """OpenAI-compatible chat completion with the student's chat template."""
        check_model(req.model)
        done = await ctx.model.generate([GenerationRequest(
            messages=req.as_messages(), max_new_tokens=req.budget(), temperature=req.temperature,
            top_p=req.top_p, seed=req.seed, stop=req.stop_list())])
        c = done[0]
        return ChatCompletionResponse(
            id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=ctx.served_name, usage=_usage(done),
            choices=[ChatChoice(index=0, message=AssistantMessage(content=c.text), finish_reason=c.finish_reason)])

    @app.post("/v1/score", response_model=ScoreResponse, responses=ERRORS, tags=["evaluation"])
    async def score(req: ScoreRequest) -> ScoreResponse:  # type: ignore[valid-type]
        """First-token logits of each candidate after each raw prompt: the `openai` engine's score route."""
        check_model(req.model)
        return ScoreResponse(logits=await ctx.model.score(req.prompts, req.candidates))

    if ctx.key is not None:
        _document_bearer(app)
    return app
