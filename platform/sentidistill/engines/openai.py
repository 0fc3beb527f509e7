"""OpenAI-compatible HTTP engine: a hosted API, a vLLM server, or our own Ray Serve app.

Plain `httpx` with a thread pool (`max_concurrent_requests` in flight) instead of the `openai`
client: we need the non-OpenAI `/score` route, per-request errors as data, and full control of
retries. The API key is read from the environment variable NAMED in the config, kept in a
`SecretStr`, sent only as a header, and scrubbed from every error message.
"""

from __future__ import annotations

import email.utils
import logging
import math
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import SecretStr

from sentidistill.config import EngineConfig
from sentidistill.engines.base import Capabilities, Completion, Engine, GenerationRequest
from sentidistill.engines.score_api import SCORE_ROUTE, ScoreRequest, ScoreResponse
from sentidistill.errors import ConfigError

log = logging.getLogger("sentidistill")

FALLBACK_TOP_LOGPROBS = 20  # the most the OpenAI API (and vLLM's default max_logprobs) returns


class EndpointError(RuntimeError):
    """A request that failed for good (non-retryable status, or retries exhausted); key-free message."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def read_api_key(env_name: str | None) -> SecretStr | None:
    """The key from the env var named in config; None when no auth is configured."""
    if env_name is None:
        return None
    value = os.environ.get(env_name)
    if not value:
        raise ConfigError(
            f"engine.openai.api_key_env names the environment variable {env_name!r}, but it is not set or empty; "
            f"export {env_name}=<your key> (the key itself never goes into the config)"
        )
    return SecretStr(value)


def retry_after_s(header: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if absent or unreadable."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def match_top_logprob(candidate: str, top: dict[str, float]) -> tuple[str | None, float]:
    """(token, logprob) standing for the candidate's first token among the returned top tokens.

    Without the server's tokenizer the first token is guessed: the candidate itself if returned,
    else the longest returned token that is a prefix of it and ends at a word boundary
    (' not' for ' not intimate', never ' neut' for ' neutral'). Not returned -> (None, -inf).
    """
    if candidate in top:
        return candidate, top[candidate]
    best: str | None = None
    for tok in top:
        boundary = len(tok) == len(candidate) or not candidate[len(tok):][:1].isalnum()
        if tok.strip() and candidate.startswith(tok) and boundary and (best is None or len(tok) > len(best)):
            best = tok
    return (best, top[best]) if best is not None else (None, -math.inf)


class OpenAIEngine(Engine):
    """`generate` via /chat/completions or /completions; `score_next_token` via /score or logprobs."""

    kind = "openai"
    capabilities = Capabilities(loads_model=False, scores_labels=True, answers_any_prompt=True,
                                caches_prefixes=False)

    def __init__(self, cfg: EngineConfig, cache_dir: str | None = None):
        super().__init__(cfg, cache_dir)
        if not cfg.model:
            raise ConfigError("engine 'openai' needs the served model name (engine.model)")
        if cfg.openai is None:
            raise ConfigError("engine 'openai' needs engine.openai.base_url (e.g. http://127.0.0.1:8000/v1)")
        self.opts = opts = cfg.openai
        self._key = read_api_key(opts.api_key_env)
        headers = {"Authorization": f"Bearer {self._key.get_secret_value()}"} if self._key else {}
        self._client = httpx.Client(
            base_url=opts.base_url.rstrip("/") + "/", headers=headers, timeout=opts.timeout_s,
            limits=httpx.Limits(max_connections=opts.max_concurrent_requests),
        )
        self._pool = ThreadPoolExecutor(opts.max_concurrent_requests, thread_name_prefix="openai-engine")
        self._has_score_route: bool | None = None  # None until the first score call finds out

    @property
    def weights_dtype(self) -> str:
        return f"{self.cfg.dtype} (as served)"

    # HTTP ------------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        key = self._key.get_secret_value() if self._key else None
        return text.replace(key, "***") if key else text

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = self.opts.retry_backoff_s * 2**attempt * (1 + random.uniform(0, 0.5))
        return min(self.opts.retry_max_backoff_s, retry_after if retry_after is not None else backoff)

    def _post(self, route: str, payload: dict[str, Any]) -> Any:
        """POST with retries on 429/5xx/timeouts/connection errors; other 4xx fail at once."""
        attempts = self.opts.max_retries + 1
        for attempt in range(attempts):
            retry_after = None
            try:
                resp = self._client.post(route.lstrip("/"), json=payload)
            except httpx.TransportError as e:  # timeouts and connection errors
                error = f"{type(e).__name__}: {e}"
            else:
                if resp.status_code < 400:
                    return resp.json()
                error = f"HTTP {resp.status_code} from {route}: {resp.text[:300]}"
                if resp.status_code in (401, 403):
                    error += (f" (key sent from ${self.opts.api_key_env})" if self._key else
                              " (no key sent: set engine.openai.api_key_env, or serve.api_key_env for "
                              "`eval --endpoint`, "
                              "to the NAME of the environment variable that holds it)")
                if resp.status_code != 429 and resp.status_code < 500:
                    raise EndpointError(self._scrub(error), resp.status_code)
                retry_after = retry_after_s(resp.headers.get("retry-after"))
            if attempt + 1 < attempts:
                time.sleep(self._delay(attempt, retry_after))
        raise EndpointError(self._scrub(f"{error} (gave up after {attempts} attempts)"))

    # generation ------------------------------------------------------------
    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        return list(self._pool.map(self._generate_one, requests))

    def _generate_one(self, req: GenerationRequest) -> Completion:
        chat = req.messages is not None
        payload: dict[str, Any] = {
            "model": self.cfg.model, "max_tokens": req.max_new_tokens,
            "temperature": req.temperature, "top_p": req.top_p,
        }
        payload.update({"messages": req.messages} if chat else {"prompt": req.prompt})
        if req.seed is not None:
            payload["seed"] = req.seed
        if req.stop:
            payload["stop"] = list(req.stop)
        t0 = time.perf_counter()
        try:
            body = self._post("chat/completions" if chat else "completions", payload)
            choice = body["choices"][0]
            text = choice["message"]["content"] if chat else choice["text"]
            usage = body.get("usage") or {}
        except (EndpointError, KeyError, IndexError, TypeError, ValueError) as e:
            latency = round(time.perf_counter() - t0, 4)
            return Completion("", "error", latency_s=latency, error=self._scrub(f"{type(e).__name__}: {e}"))
        latency = round(time.perf_counter() - t0, 4)
        reason = choice.get("finish_reason")
        tokens = (int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
        if reason not in ("stop", "length") or text is None:
            return Completion(text or "", "error", *tokens, latency, f"endpoint finished with {reason!r}")
        return Completion(text, reason, *tokens, latency)

    # scoring ---------------------------------------------------------------
    def score_next_token(self, prompts: list[str], candidates: list[str]) -> list[list[float]]:
        """Label logits from `POST {base_url}/score` (see score_api); exact, one forward pass per prompt.

        Endpoints without that route (404) fall back to `/completions` with max_tokens=1 and
        logprobs=20: each candidate gets the log-probability of its guessed first token among the
        top 20 (`match_top_logprob`), -inf when not among them. Log-probabilities share the logits'
        argmax and softmax, so predictions agree while the top 20 hold the candidates.
        """
        if self._has_score_route is not False:
            try:
                rows = self._score_via_route(prompts, candidates)
                self._has_score_route = True
                return rows
            except EndpointError as e:
                if e.status != 404 or self._has_score_route:
                    raise
                log.info("%s has no %s route; scoring with /completions logprobs", self.opts.base_url, SCORE_ROUTE)
                self._has_score_route = False
        return list(self._pool.map(lambda p: self._score_via_logprobs(p, candidates), prompts))

    def _score_via_route(self, prompts: list[str], candidates: list[str]) -> list[list[float]]:
        size = self.cfg.resources.batch_size
        chunks = [prompts[i:i + size] for i in range(0, len(prompts), size)]

        def one(chunk: list[str]) -> list[list[float]]:
            req = ScoreRequest(model=self.cfg.model, prompts=chunk, candidates=candidates)
            body = self._post(SCORE_ROUTE, req.model_dump())
            return ScoreResponse.model_validate(body).check_shape(len(chunk), len(candidates)).logits

        return [row for rows in self._pool.map(one, chunks) for row in rows]

    def _score_via_logprobs(self, prompt: str, candidates: list[str]) -> list[float]:
        body = self._post("completions", {
            "model": self.cfg.model, "prompt": prompt, "max_tokens": 1, "temperature": 0.0,
            "logprobs": FALLBACK_TOP_LOGPROBS, "echo": False,
        })
        top: dict[str, float] = body["choices"][0]["logprobs"]["top_logprobs"][0]
        matched = [match_top_logprob(c, top) for c in candidates]
        seen: dict[str, str] = {}
        for cand, (tok, _) in zip(candidates, matched, strict=True):
            if tok is not None and tok in seen:
                raise ValueError(f"labels {seen[tok]!r} and {cand!r} both map to the token {tok!r}: "
                                 "first-token scoring cannot tell them apart; rename one label (verbalizer)")
            if tok is not None:
                seen[tok] = cand
        return [value for _, value in matched]

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()
