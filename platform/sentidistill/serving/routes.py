"""The FastAPI app of the ingress: routes, error handling, auth and request metrics.

Built per replica by `build_api(ctx)` because request limits come from the config (see schemas).
Every non-2xx answer is one JSON shape (`ErrorBody`): 4xx for client faults, naming the field (400
for a body that is not JSON at all); 502 when the engine failed on a request, 503 when the model
deployment is unreachable or unhealthy, 504 on timeout; 500 only for a bug. Every status a route can
answer is declared in the OpenAPI document. `stream: true` answers are server-sent events in OpenAI's
chunk format, sent while the engine generates (the model deployment's `generate_stream`): the answer
starts with the first piece of text, so errors before it stay plain JSON answers and later ones are an
`error` event; a choice's log-probabilities, when asked, come in its last chunk, then an optional usage
chunk and `data: [DONE]`. Log-probabilities are the engine's (`Completion.logprobs`) in OpenAI's two
shapes; an engine that cannot return them makes a request for them a 422 naming the field.
No `from __future__ import annotations` here: FastAPI must see the locally built request classes.
"""

import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import SecretStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from sentidistill.config import ServeConfig
from sentidistill.engines import Completion, GenerationRequest, TokenLogprob
from sentidistill.serving.auth import PUBLIC_PATHS, check_bearer
from sentidistill.serving.deployment import StreamItem
from sentidistill.serving.errors import ApiError, ErrorBody, ErrorInfo, clip, field_path
from sentidistill.serving.metrics import ServeMetrics
from sentidistill.serving.schemas import (
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletionChunk, ChatCompletionResponse, ChatDelta,
    ChatLogprobs, ChatTokenLogprob, CompletionChoice, CompletionLogprobs, CompletionResponse, ExtractResponse, Health,
    ModelCard, ModelList, ScoreResponse, SentimentResponse, TopLogprob, Usage, request_models,
)
from sentidistill.serving.tasks import ServedTasks

log = logging.getLogger("ray.serve")

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text} for code, text in {
        400: "The body is not JSON (not decodable).",
        401: "Missing or wrong API key (when serve.api_key_env is set).",
        404: "Unknown model name.",
        422: "Invalid request: the message names the field.",
        500: "A server bug (never the client's input); see the replica log.",
        502: "The engine failed on this request.",
        503: "The model deployment is not reachable or unhealthy (starting, scaling, or failed).",
        504: "The model did not answer within serve.request_timeout_s.",
    }.items()
}
GET_ERRORS = {code: ERRORS[code] for code in (401, 404, 500)}
SSE = {200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
             "description": "JSON, or with stream=true server-sent events (`data: {chunk}` lines, then `data: [DONE]`)."}}


class ModelBackend(Protocol):
    """What the routes need from the model deployment (the ingress wraps its handle in this)."""

    async def score(self, prompts: list[str], candidates: list[str]) -> list[list[float]]: ...

    async def generate(self, requests: list[GenerationRequest]) -> list[Completion]: ...

    def generate_stream(self, requests: list[GenerationRequest]) -> AsyncIterator[StreamItem]: ...

    async def info(self) -> dict[str, Any]: ...


@dataclass
class ApiContext:
    cfg: ServeConfig
    served_name: str
    model_ref: str
    model_root: str
    tasks: ServedTasks
    model: ModelBackend
    metrics: ServeMetrics
    key: SecretStr | None
    started: int


def error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body().model_dump(exclude_none=True), status_code=err.status, headers=err.headers)


MAX_REPORTED_ERRORS = 10
_TYPE_TAG = re.compile(r"^[\w-]+\[.*\]$|^(str|int|float|bool|list|dict|none|constrained-str|function-after)$")


def _field_loc(loc: tuple[Any, ...] | list[Any]) -> list[Any]:
    """The loc without pydantic's union-member tags ('function-after[...]', 'list[...]', 'str')."""
    return [part for part in loc if not (isinstance(part, str) and _TYPE_TAG.match(part))]


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    """422 naming each field; for a union, the member that matched the input's type speaks, not every member."""
    details = [{"loc": ["body"] if e["type"] == "json_invalid" else _field_loc(e["loc"]),  # loc holds an offset
                "msg": str(e["msg"]).removeprefix("Value error, "), "type": e["type"]} for e in exc.errors()]
    specific = [d for d in details if not d["type"].endswith("_type")]
    details = [d for d in details if not d["type"].endswith("_type")
               or not any(s["loc"][:len(d["loc"])] == d["loc"] for s in specific)] or details
    unique = list({(tuple(map(str, d["loc"])), d["msg"]): d for d in details}.values())
    shown = unique[:MAX_REPORTED_ERRORS]
    more = f" (and {len(unique) - len(shown)} more)" if len(unique) > len(shown) else ""
    message = "; ".join(f"{field_path(d['loc'])}: {d['msg']}" for d in shown) + more
    param = field_path(shown[0]["loc"]) if shown else None
    body = ErrorBody(error=ErrorInfo(message=message, type="invalid_request_error", param=param,
                                     code="validation_error"), detail=shown)
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


def _usage(done: list[Completion], n: int = 1) -> Usage:
    """Prompt tokens once per prompt (the n choices of a prompt share it), completion tokens of every choice."""
    prompt, completion = sum(c.prompt_tokens for c in done[::n]), sum(c.completion_tokens for c in done)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def _choices(req: Any, make: Any) -> list[GenerationRequest]:
    """n requests per prompt, prompt-major (OpenAI's choice order); choice i samples with seed + i."""
    return [make(p, req.seed_of(i)) for p in (req.prompts() if hasattr(req, "prompts") else [None])
            for i in range(req.n)]


def _completion_logprobs(entries: list[TokenLogprob] | None) -> CompletionLogprobs | None:
    """OpenAI's legacy shape; each token's top_logprobs holds the alternatives and the chosen token."""
    if entries is None:
        return None
    offsets, at = [], 0
    for e in entries:
        offsets.append(at)
        at += len(e.token)
    return CompletionLogprobs(tokens=[e.token for e in entries], token_logprobs=[e.logprob for e in entries],
                              top_logprobs=[{**dict(e.top), e.token: e.logprob} for e in entries], text_offset=offsets)


def _dump(model: CompletionLogprobs | None) -> dict[str, Any] | None:
    return None if model is None else model.model_dump()


def _chat_logprobs(entries: list[TokenLogprob] | None) -> ChatLogprobs | None:
    """OpenAI's chat shape: each token with its bytes and exactly the asked number of alternatives."""
    if entries is None:
        return None
    return ChatLogprobs(content=[
        ChatTokenLogprob(token=e.token, logprob=e.logprob, bytes=list(e.token.encode()),
                         top_logprobs=[TopLogprob(token=t, logprob=lp, bytes=list(t.encode())) for t, lp in e.top])
        for e in entries])


def _event(chunk: dict[str, Any]) -> str:
    return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"


@dataclass
class ChunkMaker:
    """How one streamed answer turns into OpenAI chunks: opening chunks, a text piece of choice i, the end."""

    opening: list[dict[str, Any]]
    piece: Callable[[int, str], dict[str, Any]]
    closing: Callable[[list[Completion]], list[dict[str, Any]]]


async def _events(first: StreamItem, rest: AsyncIterator[StreamItem], copies: int,
                  make: ChunkMaker) -> AsyncIterator[str]:
    """Server-sent events: opening chunks, each text piece as it comes (for every choice it belongs to), the
    closing chunks, then `data: [DONE]`. A failure after the first byte is sent as an `error` event, which
    OpenAI clients raise."""
    def lines(item: StreamItem) -> list[str]:
        if item.completions is not None:
            return [_event(c) for c in make.closing([c for c in item.completions for _ in range(copies)])]
        return [_event(make.piece(i * copies + k, text)) for i, text in item.pieces for k in range(copies)]

    try:
        for line in [*map(_event, make.opening), *lines(first)]:
            yield line
        async for item in rest:
            for line in lines(item):
                yield line
    except ApiError as e:
        yield _event(e.body().model_dump(exclude_none=True))
    yield "data: [DONE]\n\n"


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
            raise ApiError(404, f"model: The model {clip(name)!r} does not exist; this endpoint serves "
                                f"{ctx.served_name!r} (GET /v1/models)", param="model", code="model_not_found")

    def card() -> ModelCard:
        return ModelCard(id=ctx.served_name, created=ctx.started, root=ctx.model_root)

    @app.get("/healthz", response_model=Health, responses={503: ERRORS[503], 500: ERRORS[500]}, tags=["ops"])
    async def healthz() -> Health:
        """200 when a model replica answers and its engine is neither frozen nor failing its probe (no auth)."""
        info = await ctx.model.info()
        if info.get("problem"):
            raise ApiError(503, f"unhealthy: {info['problem']}", code="unhealthy")
        return Health(model=ctx.served_name, engine=info["engine"], dropped=info.get("dropped", 0),
                      longest_engine_call_s=info.get("longest_engine_call_s", 0.0))

    @app.get("/metrics", response_class=Response, tags=["ops"],
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text."},
                        **GET_ERRORS})
    async def metrics() -> Response:
        """Requests, latency and model batch sizes seen by this ingress replica (Prometheus text)."""
        return Response(ctx.metrics.prometheus_text(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/stats", tags=["ops"], responses=GET_ERRORS)
    async def stats() -> dict[str, Any]:
        """Model batch sizes seen by this ingress replica (JSON): `batches.score.max_batch` > 1 means batching."""
        return {"model": ctx.served_name, **ctx.metrics.snapshot()}

    @app.get("/v1/models", response_model=ModelList, responses=GET_ERRORS, tags=["openai"])
    async def list_models() -> ModelList:
        return ModelList(data=[card()])

    @app.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=GET_ERRORS, tags=["openai"])
    async def get_model(model_id: str) -> ModelCard:
        """OpenAI `GET /v1/models/{id}`: the served model, or 404."""
        check_model(model_id)
        return card()

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

    served: dict[str, bool] = {}  # what the model deployment's engine can do, asked once

    async def require_logprobs(param: str) -> None:
        """422 naming `param` when the served engine cannot return log-probabilities (never a 5xx)."""
        if "logprobs" not in served:
            info = await ctx.model.info()
            served["logprobs"] = bool(info.get("returns_logprobs"))
            served["engine"] = info.get("engine", "model")
        if not served["logprobs"]:
            raise ApiError(422, f"{param}: the served {served['engine']} engine cannot return log-probabilities "
                                "(see docs/serving.md); leave it out", param=param, code="unsupported_parameter")

    async def generate_choices(requests: list[GenerationRequest], n: int, greedy: bool) -> list[Completion]:
        """Greedy choices of one prompt are equal: generate each prompt once and repeat it n times."""
        if not greedy or n == 1:
            return await ctx.model.generate(requests)
        once = await ctx.model.generate(requests[::n])
        return [c for c in once for _ in range(n)]

    async def stream_choices(requests: list[GenerationRequest], n: int, greedy: bool,
                             make: ChunkMaker) -> StreamingResponse:
        """Stream as the engine generates. The first message is awaited here, so an error before any text
        (502, 503, 504) is still a plain JSON answer; greedy choices of a prompt are generated once."""
        copies = n if greedy else 1
        rest = ctx.model.generate_stream(requests[::copies])
        first = await anext(rest)
        return StreamingResponse(_events(first, rest, copies, make), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    @app.post("/v1/completions", response_model=CompletionResponse, responses={**ERRORS, **SSE}, tags=["openai"])
    async def completions(req: CompletionRequest) -> Response:  # type: ignore[valid-type]
        """OpenAI-compatible text completion of raw prompts (no chat template); `stream` sends SSE chunks."""
        check_model(req.model)
        if req.logprobs is not None:
            await require_logprobs("logprobs")
        requests = _choices(req, lambda p, seed: GenerationRequest(
            prompt=p, max_new_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p, seed=seed,
            stop=req.stop_list(), logprobs=req.logprobs))
        prompts = [p for p in req.prompts() for _ in range(req.n)]
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": ctx.served_name}
        if req.stream:
            extra = {"usage": None} if req.include_usage() else {}

            def piece(index: int, text: str, finish: str | None = None, logprobs: Any = None) -> dict[str, Any]:
                return {**head, "object": "text_completion", **extra, "choices": [
                    {"index": index, "text": text, "finish_reason": finish, "logprobs": logprobs}]}

            def closing(done: list[Completion]) -> list[dict[str, Any]]:
                ends = [piece(i, "", c.finish_reason, _dump(_completion_logprobs(c.logprobs)))
                        for i, c in enumerate(done)]
                usage = {**head, "object": "text_completion", "choices": [], "usage": _usage(done, req.n).model_dump()}
                return ends + ([usage] if req.include_usage() else [])

            opening = [piece(i, p) for i, p in enumerate(prompts)] if req.echo else []
            return await stream_choices(requests, req.n, req.temperature == 0, ChunkMaker(opening, piece, closing))
        done = await generate_choices(requests, req.n, req.temperature == 0)
        body = CompletionResponse(
            **head, usage=_usage(done, req.n),
            choices=[CompletionChoice(index=i, text=(p if req.echo else "") + c.text, finish_reason=c.finish_reason,
                                      logprobs=_completion_logprobs(c.logprobs))
                     for i, (p, c) in enumerate(zip(prompts, done, strict=True))])
        return JSONResponse(body.model_dump())

    @app.post("/v1/chat/completions", response_model=ChatCompletionResponse, responses={**ERRORS, **SSE},
              tags=["openai"])
    async def chat_completions(req: ChatRequest) -> Response:  # type: ignore[valid-type]
        """OpenAI-compatible chat completion with the student's chat template; `stream` sends SSE chunks."""
        check_model(req.model)
        if req.logprobs:
            await require_logprobs("logprobs")
        messages = req.as_messages()
        requests = _choices(req, lambda _, seed: GenerationRequest(
            messages=messages, max_new_tokens=req.budget(), temperature=req.temperature, top_p=req.top_p,
            seed=seed, stop=req.stop_list(), logprobs=req.top_n()))
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": ctx.served_name}
        if req.stream:
            def chunk(choices: list[ChatChunkChoice], usage: Usage | None = None) -> dict[str, Any]:
                out = ChatCompletionChunk(**head, choices=choices, usage=usage)
                return out.model_dump(exclude={"usage"} if not req.include_usage() else set())

            def closing(done: list[Completion]) -> list[dict[str, Any]]:
                ends = [chunk([ChatChunkChoice(index=i, delta=ChatDelta(), finish_reason=c.finish_reason,
                                               logprobs=_chat_logprobs(c.logprobs))]) for i, c in enumerate(done)]
                return ends + ([chunk([], _usage(done, req.n))] if req.include_usage() else [])

            opening = [chunk([ChatChunkChoice(index=i, delta=ChatDelta(role="assistant", content=""))])
                       for i in range(req.n)]
            return await stream_choices(requests, req.n, req.temperature == 0, ChunkMaker(
                opening, lambda i, text: chunk([ChatChunkChoice(index=i, delta=ChatDelta(content=text))]), closing))
        done = await generate_choices(requests, req.n, req.temperature == 0)
        body = ChatCompletionResponse(
            **head, usage=_usage(done, req.n),
            choices=[ChatChoice(index=i, message=AssistantMessage(content=c.text), finish_reason=c.finish_reason,
                                logprobs=_chat_logprobs(c.logprobs)) for i, c in enumerate(done)])
        return JSONResponse(body.model_dump())

    @app.post("/v1/score", response_model=ScoreResponse, responses=ERRORS, tags=["evaluation"])
    async def score(req: ScoreRequest) -> ScoreResponse:  # type: ignore[valid-type]
        """First-token logits of each candidate after each raw prompt: the `openai` engine's score route."""
        check_model(req.model)
        return ScoreResponse(logits=await ctx.model.score(req.prompts, req.candidates))

    if ctx.key is not None:
        _document_bearer(app)
    return app
