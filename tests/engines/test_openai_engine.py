"""openai engine against a real scripted HTTP server on 127.0.0.1: retries, backoff, errors, auth, /score.

The server is a stdlib `ThreadingHTTPServer`; each route answers from a queue of scripted replies
(status, headers, body, delay) and records what it received, so retry behaviour is observable.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sentidistill.config import EngineConfig
from sentidistill.engines import GenerationRequest, build_engine
from sentidistill.engines.openai import match_top_logprob, retry_after_s
from sentidistill.errors import ConfigError

KEY = "sk-test-0123456789-secret"
OK_COMPLETION = {"choices": [{"text": " fine", "finish_reason": "stop"}],
                 "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
OK_CHAT = {"choices": [{"message": {"role": "assistant", "content": "Positive."}, "finish_reason": "length"}],
           "usage": {"prompt_tokens": 9, "completion_tokens": 2}}


class Scripted(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.script: dict[str, deque[tuple[int, dict[str, str], Any, float]]] = defaultdict(deque)
        self.seen: list[tuple[str, dict[str, Any], str | None, float]] = []

    def reply(self, route: str, status: int, body: Any = None, headers: dict[str, str] | None = None,
              delay: float = 0.0) -> None:
        self.script[route].append((status, headers or {}, body, delay))


class Handler(BaseHTTPRequestHandler):
    server: Scripted

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append((self.path, payload, self.headers.get("Authorization"), time.monotonic()))
        queue = self.server.script[self.path]
        status, headers, body, delay = queue.popleft() if queue else (404, {}, {"error": "no route"}, 0.0)
        time.sleep(delay)
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            for k, v in {"Content-Type": "application/json", **headers}.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out first
            pass

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[Scripted]:
    srv = Scripted()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def engine_for(srv: Scripted, **kw: Any):
    openai = dict(base_url=f"http://127.0.0.1:{srv.server_address[1]}/v1", retry_backoff_s=0.01, max_retries=3,
                  timeout_s=5, max_concurrent_requests=4)
    resources = {"batch_size": kw.pop("batch_size")} if "batch_size" in kw else {}
    return build_engine(EngineConfig(kind="openai", model="m", openai={**openai, **kw}, resources=resources))


def test_429_twice_then_ok_honours_retry_after(server: Scripted) -> None:
    server.reply("/v1/completions", 429, {"error": "slow down"}, {"Retry-After": "0.3"})
    server.reply("/v1/completions", 429, {"error": "slow down"})
    server.reply("/v1/completions", 200, OK_COMPLETION)
    eng = engine_for(server)
    out = eng.generate([GenerationRequest(prompt="Hello", max_new_tokens=4, seed=7, stop=["\n"])])[0]
    eng.shutdown()
    assert (out.text, out.finish_reason, out.prompt_tokens, out.completion_tokens) == (" fine", "stop", 3, 1)
    times = [t for *_, t in server.seen]
    assert len(times) == 3 and times[1] - times[0] >= 0.29  # waited as long as Retry-After said
    body = server.seen[-1][1]
    assert body == {"model": "m", "prompt": "Hello", "max_tokens": 4, "temperature": 0.0, "top_p": 1.0,
                    "seed": 7, "stop": ["\n"]}


def test_5xx_and_timeouts_are_retried_other_4xx_are_not(server: Scripted) -> None:
    server.reply("/v1/chat/completions", 503, {"error": "overloaded"})
    server.reply("/v1/chat/completions", 200, OK_CHAT, delay=1.0)  # longer than timeout_s: retried
    server.reply("/v1/chat/completions", 200, OK_CHAT)
    server.reply("/v1/completions", 400, {"error": "bad prompt"})
    server.reply("/v1/completions", 200, OK_COMPLETION)  # must never be reached
    eng = engine_for(server, timeout_s=0.5, max_concurrent_requests=1)
    chat, bad = eng.generate([GenerationRequest(messages=[{"role": "user", "content": "hi"}]),
                              GenerationRequest(prompt="x")])
    eng.shutdown()
    assert (chat.text, chat.finish_reason, chat.completion_tokens) == ("Positive.", "length", 2)
    assert [p for p, *_ in server.seen].count("/v1/chat/completions") == 3
    assert bad.finish_reason == "error" and "HTTP 400" in bad.error and "bad prompt" in bad.error
    assert [p for p, *_ in server.seen].count("/v1/completions") == 1


def test_exhausted_retries_become_error_completions(server: Scripted) -> None:
    for _ in range(3):
        server.reply("/v1/completions", 500, {"error": "boom"})
    eng = engine_for(server, max_retries=2)
    out = eng.generate([GenerationRequest(prompt="x")])[0]
    eng.shutdown()
    assert out.finish_reason == "error" and "gave up after 3 attempts" in out.error and out.text == ""


def test_key_from_env_is_sent_and_never_shown(server: Scripted, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SD_TEST_KEY", KEY)
    server.reply("/v1/completions", 401, {"error": f"invalid key {KEY}"})  # a server that echoes the key
    eng = engine_for(server, api_key_env="SD_TEST_KEY")
    out = eng.generate([GenerationRequest(prompt="x")])[0]
    assert server.seen[0][2] == f"Bearer {KEY}"
    assert out.finish_reason == "error" and "HTTP 401" in out.error and KEY not in out.error
    assert KEY not in repr(eng) and KEY not in repr(vars(eng)) and KEY not in repr(eng.cfg)
    eng.shutdown()


def test_missing_key_env_var_names_the_variable(server: Scripted, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SD_TEST_NO_SUCH_KEY", raising=False)
    with pytest.raises(ConfigError, match="SD_TEST_NO_SUCH_KEY"):
        engine_for(server, api_key_env="SD_TEST_NO_SUCH_KEY")


def test_score_route_is_used_in_chunks(server: Scripted) -> None:
    server.reply("/v1/score", 200, {"logits": [[0.1, 2.0], [3.0, -1.0]]})
    server.reply("/v1/score", 200, {"logits": [[0.5, 0.25]]})
    eng = engine_for(server, batch_size=2, max_concurrent_requests=1)
    rows = eng.score_next_token(["a", "b", "c"], [" negative", " positive"])
    eng.shutdown()
    assert rows == [[0.1, 2.0], [3.0, -1.0], [0.5, 0.25]]
    assert server.seen[0][1] == {"model": "m", "prompts": ["a", "b"], "candidates": [" negative", " positive"]}


def test_score_falls_back_to_completion_logprobs_on_404(server: Scripted) -> None:
    top = {" not": -0.5, " positive": -1.0, " neut": -2.0, " ": -0.1}
    server.reply("/v1/score", 404, {"error": "not found"})
    for _ in range(2):
        server.reply("/v1/completions", 200, {"choices": [{"text": " ", "logprobs": {"top_logprobs": [top]}}]})
    eng = engine_for(server, max_concurrent_requests=1)
    rows = eng.score_next_token(["p1", "p2"], [" positive", " not intimate", " neutral"])
    assert rows == [[-1.0, -0.5, -math.inf]] * 2
    assert server.seen[1][1]["logprobs"] == 20 and server.seen[1][1]["max_tokens"] == 1
    server.reply("/v1/completions", 200, {"choices": [{"text": " ", "logprobs": {"top_logprobs": [top]}}]})
    with pytest.raises(ValueError, match="both map to the token ' not'"):
        eng.score_next_token(["p"], [" not sure", " not intimate"])  # the 404 is remembered: no second probe
    assert [p for p, *_ in server.seen].count("/v1/score") == 1
    eng.shutdown()


def test_header_and_token_helpers() -> None:
    assert retry_after_s("2") == 2.0 and retry_after_s(None) is None and retry_after_s("soon") is None
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: go now
    assert match_top_logprob(" negative", {" neg": -1.0}) == (None, -math.inf)
