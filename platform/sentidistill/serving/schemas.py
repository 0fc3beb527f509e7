"""Request and response models of the served API: they are the OpenAPI spec FastAPI emits.

Request limits come from `ServeConfig` (max_texts, max_text_chars, max_prompt_chars, max_k,
max_new_tokens), so request models are built per app by `request_models(cfg)`: the limits then show in
the spec, and a violation is a 422 naming the field. Our own routes validate strictly (no "3" for 3);
the OpenAI-compatible ones accept what OpenAI clients send and refuse parameters we cannot honour
(n > 1, streaming, logprobs, penalties) by name instead of silently ignoring them.
"""

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, field_validator

from sentidistill.config import ServeConfig
from sentidistill.engines.score_api import ScoreRequest, ScoreResponse

MAX_CANDIDATES = 64
MAX_STOP = 4


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


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str
    logprobs: None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str = Field(..., description="The name to send as `model`.")
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "sentidistill"
    root: str = Field(..., description="The model reference being served (folder, URI or hub id).")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    engine: str


# requests -------------------------------------------------------------------
class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class _OpenAIParams(BaseModel):
    """Parameters OpenAI clients send; the ones we cannot honour are accepted only at their neutral value."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., min_length=1, description="Served model name (see GET /v1/models).")
    temperature: float = Field(1.0, ge=0, le=2, description="0 = greedy.")
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | list[str] | None = Field(None, description=f"Up to {MAX_STOP} stop strings (not included).")
    seed: int | None = Field(None, description="Seed for sampling (temperature > 0).")
    n: int = Field(1, description="Only 1.")
    stream: bool = Field(False, description="Only false: completions come back whole.")
    presence_penalty: float = Field(0.0, description="Only 0.")
    frequency_penalty: float = Field(0.0, description="Only 0.")
    logit_bias: dict[str, float] | None = Field(None, description="Only empty.")
    user: str | None = Field(None, description="Accepted and ignored.")

    @field_validator("n")
    @classmethod
    def _one_choice(cls, v: int) -> int:
        if v != 1:
            raise ValueError("only n=1 is supported")
        return v

    @field_validator("stream")
    @classmethod
    def _no_stream(cls, v: bool) -> bool:
        if v:
            raise ValueError("streaming is not supported: send stream=false")
        return v

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
        stops = [v] if isinstance(v, str) else v or []
        if len(stops) > MAX_STOP or any(not s for s in stops):
            raise ValueError(f"give at most {MAX_STOP} non-empty stop strings")
        return v

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


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
    Text = Annotated[str, StringConstraints(min_length=1, max_length=cfg.max_text_chars)]  # noqa: N806 - types
    Prompt = Annotated[str, StringConstraints(max_length=cfg.max_prompt_chars)]  # noqa: N806
    aliases = ", ".join(f"'{a}' ({t})" for a, t in cfg.task_aliases.items())

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
        seed: int | None = Field(None, description=f"Demonstration sampler seed (default {cfg.seed}).")

    class SentimentRequest(_TaskRequest):
        """Label each text with a classification task, with the probability of every label."""

        task: str = Field("sentiment", min_length=1, description=f"A registered classify task or an alias: {aliases}.")

    class ExtractRequest(_TaskRequest):
        """Extract aspect/opinion tuples from each text with an extraction task (greedy, parsed as SentiBench)."""

        task: str = Field(..., min_length=1, description=f"A registered extract task or an alias: {aliases}.")

    class CompletionRequest(_OpenAIParams):
        """OpenAI `POST /v1/completions`: raw prompts, no chat template."""

        prompt: Prompt | list[Prompt] = Field(  # type: ignore[valid-type]
            ..., description=f"A prompt or a list of up to {cfg.max_texts}, each up to {cfg.max_prompt_chars} chars.",
        )
        max_tokens: int = Field(16, ge=1, le=cfg.max_new_tokens, description="Completion budget per prompt.")
        echo: bool = Field(False, description="Only false.")
        logprobs: int | None = Field(None, description="Not supported: label scores come from POST /v1/score.")
        best_of: int | None = Field(None, description="Only 1.")
        suffix: str | None = Field(None, description="Not supported.")

        @field_validator("prompt")
        @classmethod
        def _prompt_count(cls, v: str | list[str]) -> str | list[str]:
            if isinstance(v, list) and not 1 <= len(v) <= cfg.max_texts:
                raise ValueError(f"give 1 to {cfg.max_texts} prompts")
            return v

        @field_validator("echo", "logprobs", "suffix")
        @classmethod
        def _unsupported(cls, v: Any, info: ValidationInfo) -> Any:
            if v:
                raise ValueError(f"{info.field_name} is not supported (label scores: POST /v1/score)")
            return v

        @field_validator("best_of")
        @classmethod
        def _best_of(cls, v: int | None) -> int | None:
            if v not in (None, 1):
                raise ValueError("only best_of=1 is supported")
            return v

        def prompts(self) -> list[str]:
            return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    class ChatMessage(BaseModel):
        model_config = ConfigDict(extra="forbid")

        role: Literal["system", "developer", "user", "assistant"]
        content: Prompt | list[TextPart]  # type: ignore[valid-type]
        name: str | None = Field(None, description="Accepted and ignored.")

        def text(self) -> str:
            return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)

    class ChatCompletionRequest(_OpenAIParams):
        """OpenAI `POST /v1/chat/completions`: the student's chat template is applied."""

        messages: list[ChatMessage] = Field(..., min_length=1, max_length=cfg.max_texts)
        max_tokens: int | None = Field(None, ge=1, le=cfg.max_new_tokens, description="Legacy name of the budget.")
        max_completion_tokens: int | None = Field(
            None, ge=1, le=cfg.max_new_tokens, description=f"Completion budget (default {cfg.max_new_tokens})."
        )

        def budget(self) -> int:
            return self.max_completion_tokens or self.max_tokens or cfg.max_new_tokens

        def as_messages(self) -> list[dict[str, str]]:
            role = {"developer": "system"}
            return [{"role": role.get(m.role, m.role), "content": m.text()} for m in self.messages]

    class LimitedScoreRequest(ScoreRequest):
        """First-token logits of each candidate after each raw prompt (the evaluation job's `/v1/score`)."""

        prompts: list[Prompt] = Field(..., min_length=1, max_length=cfg.max_texts)  # type: ignore[valid-type]
        candidates: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] = Field(
            ..., min_length=1, max_length=MAX_CANDIDATES, description="Label strings as they follow the prompt.",
        )

    return RequestModels(SentimentRequest, ExtractRequest, CompletionRequest, ChatCompletionRequest,
                         LimitedScoreRequest)


__all__ = [
    "ChatCompletionResponse", "CompletionResponse", "ExtractResponse", "ExtractResult", "Health", "LabelResult",
    "ModelCard", "ModelList", "RequestModels", "ScoreResponse", "SentimentResponse", "Usage", "request_models",
]
