"""Request and response models of the served API: they are the OpenAPI spec FastAPI emits.

Request limits come from `ServeConfig` (max_texts, max_text_chars, max_prompt_chars, max_k,
max_new_tokens), so request models are built per app by `request_models(cfg)`: the limits then show in
the spec, and a violation is a 422 naming the field. Our own routes validate strictly (no "3" for 3);
the OpenAI-compatible ones accept what OpenAI clients send (log-probabilities included, up to
OpenAI's limits) and refuse parameters we cannot honour (penalties, tools, JSON mode, logprobs with
echo) by name instead of silently ignoring them. Every request is
bounded: stop strings (4 x 128 chars), seeds (what torch and vLLM accept), valid Unicode only, and
the tokens it may have generated (serve.max_request_tokens), so no request can hold the engine long.
"""

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, field_validator, model_validator,
)

from sentidistill.config import ServeConfig
from sentidistill.engines.score_api import ScoreRequest, ScoreResponse

MAX_CANDIDATES = 64
MAX_STOP = 4  # as OpenAI
MAX_STOP_CHARS = 128
MAX_SEED = 2**63 - 1  # what torch and vLLM accept
MAX_COMPLETION_LOGPROBS = 5  # /v1/completions `logprobs`, as OpenAI
MAX_TOP_LOGPROBS = 20  # /v1/chat/completions `top_logprobs`, as OpenAI (and vLLM's default max_logprobs)


# responses ------------------------------------------------------------------
class LabelResult(BaseModel):
    label: str = Field(..., description="The label with the highest first-token logit (SentiBench's prediction).")
    probabilities: dict[str, float] = Field(
        ..., description="Softmax over the labels' first-token logits, for every label of the task."
    )


class SentimentResponse(BaseModel):
    model: str = Field(..., description="Served model name.")
    task: str = Field(..., description="Registered task name the request resolved to.")
    labels: list[str] = Field(..., description="The task's labels, in scoring order.")
    k: int = Field(..., description="Demonstrations per prompt.")
    seed: int = Field(..., description="Demonstration sampler seed.")
    results: list[LabelResult] = Field(..., description="One per input text, in order.")


class ExtractResult(BaseModel):
    tuples: list[dict[str, str]] = Field(..., description="Parsed tuples as objects keyed by the task's fields.")
    raw: str = Field(..., description="The model's completion, unparsed.")
    parse_failed: bool = Field(..., description="True when the completion held no parseable list (tuples is []).")
    dropped: int = Field(..., description="Tuples dropped for wrong arity, types or polarity.")
    finish_reason: str = Field(..., description="stop | length.")


class ExtractResponse(BaseModel):
    model: str
    task: str = Field(..., description="Registered task name the request resolved to.")
    fields: list[str] = Field(..., description="Keys of each tuple; the last one is the polarity.")
    k: int
    seed: int
    results: list[ExtractResult] = Field(..., description="One per input text, in order.")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(BaseModel):
    """OpenAI's legacy completion logprobs: one entry per generated token, in order."""

    tokens: list[str] = Field(..., description="Each token's text; together they make up the generated text.")
    token_logprobs: list[float] = Field(..., description="Log-probability of each token (<= 0).")
    top_logprobs: list[dict[str, float]] = Field(
        ..., description="Per token: the `logprobs` most likely tokens and the chosen one -> log-probability.")
    text_offset: list[int] = Field(..., description="Character offset of each token in the choice's text.")


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str | None
    logprobs: CompletionLogprobs | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = Field(..., description="UTF-8 bytes of the token's text.")


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(..., description="The `top_logprobs` most likely tokens at this step.")


class ChatLogprobs(BaseModel):
    content: list[ChatTokenLogprob] | None = Field(..., description="One entry per generated token, in order.")
    refusal: list[ChatTokenLogprob] | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str
    logprobs: ChatLogprobs | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    finish_reason: str | None = None
    logprobs: ChatLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed chat completion (`stream: true`)."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str = Field(..., description="The name to send as `model`.")
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "sentidistill"
    root: str = Field(..., description="What is served: the folder's name for local models, else the URI or hub id.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    engine: str
    dropped: int = Field(0, description="Requests whose engine work this replica skipped (client gone or timed out).")
    longest_engine_call_s: float = Field(0.0, description="Longest single engine call of this replica so far.")


# requests -------------------------------------------------------------------
def _utf8(v: str) -> str:
    """Lone surrogates (JSON's "\\ud800") cannot be encoded, tokenized or echoed: refuse them by name."""
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"not valid Unicode: a lone surrogate at character {e.start}") from None
    return v


Str = Annotated[str, AfterValidator(_utf8)]
StopString = Annotated[str, StringConstraints(min_length=1, max_length=MAX_STOP_CHARS), AfterValidator(_utf8)]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: Str


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = Field(False, description="Send a last chunk with the usage (empty choices).")


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"] = Field(..., description="Only 'text': the student's output is not constrained to JSON.")


class _OpenAIParams(BaseModel):
    """Parameters OpenAI clients send; the ones we cannot honour are accepted only at their neutral value."""

    model_config = ConfigDict(extra="forbid")

    model: Str = Field(..., min_length=1, description="Served model name (see GET /v1/models).")
    temperature: float = Field(1.0, ge=0, le=2, description="0 = greedy; (0, 0.01) counts as 0.01, as in vLLM.")
    top_p: float = Field(1.0, gt=0, le=1)
    stop: StopString | list[StopString] | None = Field(
        None, description=f"Up to {MAX_STOP} stop strings of 1 to {MAX_STOP_CHARS} characters (not included).")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Seed for sampling (temperature > 0).")
    n: int = Field(1, ge=1, description="Choices per prompt (at most serve.max_n).")
    stream: bool = Field(False, description="Server-sent events in OpenAI's chunk format, ending with data: [DONE].")
    stream_options: StreamOptions | None = Field(None, description="With stream: include_usage.")
    presence_penalty: float = Field(0.0, description="Only 0.")
    frequency_penalty: float = Field(0.0, description="Only 0.")
    logit_bias: dict[str, float] | None = Field(None, description="Only empty.")
    user: Str | None = Field(None, description="Accepted and ignored.")
    store: bool | None = Field(None, description="Accepted: nothing is stored either way.")
    service_tier: Literal["auto", "default"] | None = Field(None, description="Accepted and ignored.")
    metadata: dict[str, Str] | None = Field(None, description="Accepted and ignored.")

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, v: float, info: ValidationInfo) -> float:
        if v != 0:
            raise ValueError(f"{info.field_name} is not supported: send 0 or leave it out")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _no_bias(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v:
            raise ValueError("logit_bias is not supported: leave it out")
        return v

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > MAX_STOP:
            raise ValueError(f"give at most {MAX_STOP} stop strings")
        return v

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def seed_of(self, choice: int) -> int | None:
        """Choice i of n samples with seed + i: seeded choices differ yet repeat across calls."""
        return None if self.seed is None else (self.seed + choice) % (MAX_SEED + 1)


@dataclass(frozen=True)
class RequestModels:
    """The request classes of one app, with that app's limits baked in."""

    sentiment: type[BaseModel]
    extract: type[BaseModel]
    completion: type[_OpenAIParams]
    chat: type[_OpenAIParams]
    score: type[ScoreRequest]


def request_models(cfg: ServeConfig) -> RequestModels:
    """Build the request models for `cfg`'s limits (see the module docstring)."""
    Text = Annotated[str, StringConstraints(min_length=1, max_length=cfg.max_text_chars),  # noqa: N806 - types
                     AfterValidator(_utf8)]
    Prompt = Annotated[str, StringConstraints(min_length=1, max_length=cfg.max_prompt_chars),  # noqa: N806
                       AfterValidator(_utf8)]
    Content = Annotated[str, StringConstraints(max_length=cfg.max_prompt_chars), AfterValidator(_utf8)]  # noqa: N806
    aliases = ", ".join(f"'{a}' ({t})" for a, t in cfg.task_aliases.items())
    budget = cfg.max_request_tokens

    def check_work(prompts: int, n: int, tokens: int, field: str) -> None:
        if prompts * n * tokens > budget:
            raise ValueError(f"{prompts} prompt(s) x n={n} x {field}={tokens} is {prompts * n * tokens} tokens, "
                             f"more than one request may ask for (serve.max_request_tokens = {budget})")

    class _TaskRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)

        texts: list[Text] = Field(  # type: ignore[valid-type]
            ..., min_length=1, max_length=cfg.max_texts,
            description=f"1 to {cfg.max_texts} texts of 1 to {cfg.max_text_chars} characters.",
        )
        target: Text | None = Field(  # type: ignore[valid-type]
            None, description="What the stance is about (P-Stance: a politician); required by tasks whose "
            "instruction names a target, refused by the others.",
        )
        k: int | None = Field(
            None, ge=0, le=cfg.max_k, description=f"Demonstrations per prompt, drawn from the task's train pool "
            f"(default {cfg.k}; 0 = zero-shot).",
        )
        seed: int | None = Field(None, ge=-MAX_SEED, le=MAX_SEED,
                                 description=f"Demonstration sampler seed (default {cfg.seed}).")

    class SentimentRequest(_TaskRequest):
        """Label each text with a classification task, with the probability of every label."""

        task: Str = Field("sentiment", min_length=1, max_length=200,
                          description=f"A registered classify task or an alias: {aliases}.")

    extract_texts = max(1, min(cfg.max_texts, budget // cfg.extract_max_new_tokens))

    class ExtractRequest(_TaskRequest):
        """Extract aspect/opinion tuples from each text with an extraction task (greedy, parsed as SentiBench)."""

        texts: list[Text] = Field(  # type: ignore[valid-type]
            ..., min_length=1, max_length=extract_texts,
            description=f"1 to {extract_texts} texts of 1 to {cfg.max_text_chars} characters (each may generate "
            f"{cfg.extract_max_new_tokens} tokens; serve.max_request_tokens = {budget}).",
        )
        task: Str = Field(..., min_length=1, max_length=200,
                          description=f"A registered extract task or an alias: {aliases}.")

    class CompletionRequest(_OpenAIParams):
        """OpenAI `POST /v1/completions`: raw prompts, no chat template."""

        prompt: Prompt | list[Prompt] = Field(  # type: ignore[valid-type]
            ..., description=f"A prompt or a list of up to {cfg.max_texts}, each 1 to {cfg.max_prompt_chars} chars.",
        )
        max_tokens: int = Field(16, ge=1, le=cfg.max_new_tokens, description="Completion budget per choice.")
        n: int = Field(1, ge=1, le=cfg.max_n, description=f"Choices per prompt, 1 to {cfg.max_n}.")
        echo: bool = Field(False, description="Put the prompt before each choice's text.")
        logprobs: int | None = Field(
            None, ge=0, le=MAX_COMPLETION_LOGPROBS, description=f"Return each generated token's log-probability "
            f"and the 0 to {MAX_COMPLETION_LOGPROBS} most likely alternatives; not with echo.")
        best_of: int | None = Field(None, description="Only 1.")
        suffix: str | None = Field(None, description="Not supported.")

        @field_validator("prompt")
        @classmethod
        def _prompt_count(cls, v: str | list[str]) -> str | list[str]:
            if isinstance(v, list) and not 1 <= len(v) <= cfg.max_texts:
                raise ValueError(f"give 1 to {cfg.max_texts} prompts")
            return v

        @field_validator("suffix")
        @classmethod
        def _unsupported(cls, v: Any, info: ValidationInfo) -> Any:
            if v:
                raise ValueError(f"{info.field_name} is not supported (label scores: POST /v1/score)")
            return v

        @field_validator("logprobs")
        @classmethod
        def _no_echo(cls, v: int | None, info: ValidationInfo) -> int | None:
            if v is not None and info.data.get("echo"):
                raise ValueError("logprobs with echo is not supported (the prompt's tokens get no log-probabilities)"
                                 "; send echo: false")
            return v

        @field_validator("best_of")
        @classmethod
        def _best_of(cls, v: int | None) -> int | None:
            if v not in (None, 1):
                raise ValueError("only best_of=1 is supported")
            return v

        @model_validator(mode="after")
        def _bounded(self) -> "CompletionRequest":
            check_work(len(self.prompts()), self.n, self.max_tokens, "max_tokens")
            return self

        def prompts(self) -> list[str]:
            return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    class ChatMessage(BaseModel):
        model_config = ConfigDict(extra="forbid")

        role: Literal["system", "developer", "user", "assistant"]
        content: Content | list[TextPart] | None = Field(  # type: ignore[valid-type]
            ..., description="Text or text parts; null only on assistant messages.")
        name: Str | None = Field(None, description="Accepted and ignored.")
        refusal: Str | None = Field(None, description="Accepted on assistant messages and ignored.")

        @model_validator(mode="after")
        def _content(self) -> "ChatMessage":
            if self.content is None and self.role != "assistant":
                raise ValueError(f"content: a {self.role} message needs content (null only on assistant messages)")
            return self

        def text(self) -> str:
            if self.content is None:
                return ""
            return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)

    class ChatCompletionRequest(_OpenAIParams):
        """OpenAI `POST /v1/chat/completions`: the student's chat template is applied."""

        messages: list[ChatMessage] = Field(..., min_length=1, max_length=cfg.max_texts)
        max_tokens: int | None = Field(None, ge=1, le=cfg.max_new_tokens, description="Legacy name of the budget.")
        max_completion_tokens: int | None = Field(
            None, ge=1, le=cfg.max_new_tokens, description=f"Completion budget (default {cfg.max_new_tokens})."
        )
        n: int = Field(1, ge=1, le=cfg.max_n, description=f"Choices, 1 to {cfg.max_n}.")
        response_format: ResponseFormat | None = Field(None, description="Only {'type': 'text'}.")
        tools: list[dict[str, Any]] | None = Field(None, max_length=0, description="Only empty: no tool calls.")
        tool_choice: Literal["none", "auto"] | None = Field(None, description="Accepted with no tools.")
        parallel_tool_calls: bool | None = Field(None, description="Accepted and ignored (no tools).")
        logprobs: bool | None = Field(None, description="Return each generated token's log-probability.")
        top_logprobs: int | None = Field(
            None, ge=0, le=MAX_TOP_LOGPROBS,
            description=f"With logprobs: the 0 to {MAX_TOP_LOGPROBS} most likely tokens at each step.")

        @field_validator("top_logprobs")
        @classmethod
        def _needs_logprobs(cls, v: int | None, info: ValidationInfo) -> int | None:
            if v and not info.data.get("logprobs"):
                raise ValueError("top_logprobs needs logprobs: true")
            return v

        @model_validator(mode="after")
        def _bounded(self) -> "ChatCompletionRequest":
            check_work(1, self.n, self.budget(), "max_completion_tokens")
            return self

        def budget(self) -> int:
            return self.max_completion_tokens or self.max_tokens or cfg.max_new_tokens

        def top_n(self) -> int | None:
            """GenerationRequest.logprobs: None, or how many alternatives per token."""
            return (self.top_logprobs or 0) if self.logprobs else None

        def as_messages(self) -> list[dict[str, str]]:
            role = {"developer": "system"}
            return [{"role": role.get(m.role, m.role), "content": m.text()} for m in self.messages]

    class LimitedScoreRequest(ScoreRequest):
        """First-token logits of each candidate after each raw prompt (the evaluation job's `/v1/score`)."""

        model: Str | None = Field(None, description="Served model name; None = the endpoint's only model.")
        prompts: list[Prompt] = Field(..., min_length=1, max_length=cfg.max_texts)  # type: ignore[valid-type]
        candidates: list[Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_utf8)]] = (
            Field(..., min_length=1, max_length=MAX_CANDIDATES, description="Label strings as they follow the prompt.")
        )

    return RequestModels(SentimentRequest, ExtractRequest, CompletionRequest, ChatCompletionRequest,
                         LimitedScoreRequest)


__all__ = [
    "ChatCompletionChunk", "ChatCompletionResponse", "ChatLogprobs", "ChatTokenLogprob", "CompletionLogprobs",
    "CompletionResponse", "TopLogprob", "ExtractResponse", "ExtractResult", "Health", "LabelResult",
    "ModelCard", "ModelList", "RequestModels", "ScoreResponse", "SentimentResponse", "Usage", "request_models",
]
