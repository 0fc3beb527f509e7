"""The engine seam: every model call in every stage goes through `Engine`.

Two operations cover the whole platform:
- `generate(requests)`: chat or raw prompts with sampling params -> text, finish reason, tokens
  (and, when a request asks and the engine `returns_logprobs`, each generated token's log-probability);
  `generate_streaming(requests, stream)` also hands each request's text to `stream` as it grows
  (token by token in the hf engine; all at once at the end in engines that cannot stream);
- `score_next_token(prompts, candidates)`: one forward pass, the logit of each candidate's first
  token after each prompt (SentiBench classification and served label probabilities).
"""

from __future__ import annotations

import asyncio

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sentidistill.config import EngineConfig


@dataclass
class GenerationRequest:
    """One prompt: either chat `messages` (the engine applies the chat template) or a raw `prompt`."""

    prompt: str | None = None
    messages: list[dict[str, str]] | None = None
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    # None: no log-probabilities; N >= 0: each generated token's logprob and its N most likely alternatives
    # (engines whose capabilities do not say `returns_logprobs` ignore it; the server refuses such requests).
    logprobs: int | None = None
    # Which corpus text the prompt was built from: model engines ignore these; the replay engine
    # answers by looking them up (source_id first, then the whitespace-normalised text).
    source_id: str | None = None
    source_text: str | None = None

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("GenerationRequest needs exactly one of prompt or messages")


LOGPROB_FLOOR = -9999.0  # stands for -inf (a token the model's processors ruled out): JSON has no infinity


@dataclass
class TokenLogprob:
    """One generated token: its text (as it appears in the completion), its log-probability under the
    model, and the `top` most likely tokens at that step as (text, logprob), most likely first."""

    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" | "length" | "error"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    error: str | None = None
    # Tokens of `text` with their log-probabilities, when the request asked (GenerationRequest.logprobs).
    logprobs: list[TokenLogprob] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "response": self.text, "finish_reason": self.finish_reason, "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens, "latency_s": self.latency_s, "error": self.error,
        }


@dataclass(frozen=True)
class TextStream:
    """Where `Engine.generate_streaming` sends text while it generates, and how it learns to stop early."""

    emit: Callable[[int, str], None]  # (index of the request, text that follows what was sent before)
    cancelled: Callable[[], bool]  # true once nobody waits for the text: stop generating

    def for_rows(self, rows: list[int]) -> TextStream:
        """The same stream for a sub-batch: its row r is request `rows[r]`."""
        return TextStream(lambda r, text: self.emit(rows[r], text), self.cancelled)


class EngineDeadError(RuntimeError):
    """The engine can answer nothing more (its process, device or weights are gone).

    Raised instead of per-request errors: the actor holding the engine must be replaced (Ray
    restarts it and retries the batch), not every remaining row recorded as failed.
    """


@dataclass(frozen=True)
class Capabilities:
    """What an engine kind can do. Code outside `engines/` asks this (`engines.capabilities(kind)`)
    instead of branching on the kind."""

    loads_model: bool  # weights on the actor: reserves GPUs/accelerator, has a local tokenizer and config.json
    scores_labels: bool  # score_next_token works: it can be evaluated on SentiBench and serve label scores
    answers_any_prompt: bool  # false: answers only the corpus texts it recorded (replay)
    caches_prefixes: bool  # reuses the KV of shared prompt prefixes across calls
    returns_logprobs: bool = False  # generate honours GenerationRequest.logprobs (Completion.logprobs)
    # generate_async admits each request into the running engine as a sequence slot frees, so a caller
    # can keep several batches in flight (generation's ContinuousGenerateUDF); else one blocking call per batch
    continuous_batching: bool = False


class Engine(ABC):
    """A loaded model. Build once per actor/replica, call many times, `shutdown()` at the end."""

    kind: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    def __init__(self, cfg: EngineConfig, cache_dir: str | None = None):
        self.cfg = cfg
        self.cache_dir = cache_dir

    @property
    def name(self) -> str:
        return self.cfg.display_name

    @classmethod
    def returns_logprobs(cls, cfg: EngineConfig) -> bool:
        """Whether an engine built from `cfg` fills Completion.logprobs when a request asks (no model loaded)."""
        return cls.capabilities.returns_logprobs

    @abstractmethod
    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        """Answer each request; per-request failures come back as finish_reason='error', not raised."""

    def generate_streaming(self, requests: list[GenerationRequest], stream: TextStream) -> list[Completion]:
        """`generate`, sending each request's text to `stream` as it grows; the text sent for a request
        adds up to its completion's text. This default sends it whole, once generated."""
        done = self.generate(requests)
        for i, c in enumerate(done):
            if c.text:
                stream.emit(i, c.text)
        return done

    @abstractmethod
    def score_next_token(self, prompts: list[str], candidates: list[str]) -> list[list[float]]:
        """For each prompt, the next-token logit of the first token of each candidate string."""

    async def generate_async(self, requests: list[GenerationRequest]) -> list[Completion]:
        """`generate` awaited from an event loop. This default runs the blocking call in a worker thread (one
        batch at a time); engines whose capabilities say `continuous_batching` override it to take several
        batches into the running engine at once."""
        return await asyncio.to_thread(self.generate, requests)

    @property
    def weights_dtype(self) -> str:
        """The dtype the weights really run in (recorded with every result), not the config's 'auto'."""
        return self.cfg.dtype

    @property
    def chat_tokenizer(self) -> Any | None:
        """The local tokenizer that applies the model's chat template; None for engines without one."""
        return None

    @property
    def generation_config(self) -> Any | None:
        """The model's generation_config (its greedy logits processors shape label scores); None: unknown."""
        return None

    def shutdown(self) -> None:
        """Release the model and any child processes."""

    def is_dead(self, error: BaseException) -> bool:
        """Whether `error` means this engine can answer nothing more (default: never; HTTP engines
        report failed requests, and the endpoint may come back)."""
        return isinstance(error, EngineDeadError)


def first_token_ids(tokenizer: Any, candidates: list[str]) -> list[int]:
    """First token id of each candidate; two candidates sharing one would make scoring ambiguous."""
    ids = []
    for c in candidates:
        toks = tokenizer.encode(c, add_special_tokens=False)
        if not toks:
            raise ValueError(f"label {c!r} encodes to no tokens")
        ids.append(toks[0])
    seen: dict[int, str] = {}
    for c, i in zip(candidates, ids, strict=True):
        if i in seen:
            raise ValueError(
                f"labels {seen[i]!r} and {c!r} share their first token ({tokenizer.convert_ids_to_tokens(i)!r}, "
                f"id {i}): first-token scoring cannot tell them apart; rename one label (verbalizer)"
            )
        seen[i] = c
    return ids


def render_messages(tokenizer: Any, messages: list[dict[str, str]], apply_template: bool = True) -> str:
    """Chat messages -> prompt text with the tokenizer's chat template, or a plain fallback."""
    if apply_template and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    parts = [m["content"] for m in messages]
    return "\n\n".join(parts) + "\n\n"


def prompt_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a prompt with its BOS token exactly once: engines and training all tokenize this way.

    Chat-templated text carries its special tokens already (Llama 3's template starts with
    `<|begin_of_text|>`); the tokenizer's defaults would put a second BOS in front. So text that
    starts with the BOS token is tokenized as is (as `apply_chat_template(tokenize=True)` and vLLM's
    chat path do), any other text gets the tokenizer's default special tokens.
    """
    bos = getattr(tokenizer, "bos_token", None)
    carries_bos = bool(bos) and text.startswith(bos)
    return tokenizer(text, add_special_tokens=not carries_bos)["input_ids"]
