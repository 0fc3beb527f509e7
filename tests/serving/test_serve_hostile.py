"""The served student under hostile input and real clients (real Ray Serve on 127.0.0.1, tiny model).

- >= 1,000 generated malformed requests over every POST route: no answer >= 500, /healthz stays 200,
  a fixed greedy request answers the same before and after, no engine call past its bound;
- requests with and without `seed` (and other sampling params) in one batch all answer, as alone;
- the official `openai` client: streaming token by token (SSE chunks, [DONE], include_usage), n, echo,
  models/{id}, log-probabilities on both routes (and their limits);
- check_health: a frozen or dead engine fails it (in-process, real engine), and a frozen replica is
  replaced by Serve and the app answers again.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import pytest
import ray
from ray import serve

from sentidistill.config import EngineConfig, PipelineConfig, load_config
from sentidistill.serving import launch
from sentidistill.serving.deployment import StudentModel

MODEL = "tiny-student"
POST_ROUTES = ("/v1/sentiment", "/v1/extract", "/v1/completions", "/v1/chat/completions", "/v1/score")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cfg(shared_data: Path) -> PipelineConfig:
    return load_config(None, [
        f"data_dir={shared_data}", "train.model.student=unused", f"serve.port={free_port()}", "serve.host=127.0.0.1",
        "serve.tasks=[sst2,atsa_rest16]", "serve.engine.dtype=float32", "serve.engine.max_model_len=512",
        "serve.engine.resources.batch_size=8", f"serve.engine.name={MODEL}", "serve.max_new_tokens=32",
        "serve.extract_max_new_tokens=16", "serve.max_batch_size=8", "serve.batch_wait_timeout_s=0.05",
        "serve.max_request_tokens=1024", "serve.max_texts=32", "serve.app_name=hostile",
        "serve.health_check_period_s=1", "serve.health_check_timeout_s=4", "serve.engine_stall_s=30",
    ])


@pytest.fixture(scope="module")
def served(ray_local, tiny_model: Path, cfg: PipelineConfig):
    endpoint = launch.start(cfg, str(tiny_model))
    yield endpoint
    if ray.is_initialized():
        launch.stop(endpoint.app_name)


@pytest.fixture(scope="module")
def client(served: launch.Endpoint):
    with httpx.Client(base_url=served.url, timeout=120) as c:
        yield c


FIXED = {"model": MODEL, "prompt": "The service was", "max_tokens": 8, "temperature": 0}


# malformed-request campaign ------------------------------------------------------
def valid_bodies() -> dict[str, dict[str, Any]]:
    return {
        "/v1/sentiment": {"texts": ["good film", "bad film"], "task": "sentiment", "k": 1},
        "/v1/extract": {"texts": ["The soup was cold."], "task": "atsa", "k": 1},
        "/v1/completions": {"model": MODEL, "prompt": ["Hi", "Yo"], "max_tokens": 4, "temperature": 0.5},
        "/v1/chat/completions": {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
        "/v1/score": {"model": MODEL, "prompts": ["Label:"], "candidates": [" negative", " positive"]},
    }


HOSTILE_VALUES: list[Any] = [
    "", [""], [], {}, None, True, -1, 0, 2**64, -(2**64), 10**30, 1e-300, 1e308, -1e308, 3.5, "3",
    "x" * 200_000, ["x" * 200_000], "\ud800", ["ok", "\udfff"], ["a"] * 10_000, [["nested"]], {"a": 1},
    "\u0000", "\u202e\u200b", ["stop"] * 5, "s" * 129, ["s" * 5000], 18446744073709551616,
]
FIELDS = ("texts", "task", "k", "seed", "target", "model", "prompt", "max_tokens", "temperature", "top_p", "stop",
          "n", "stream", "echo", "logprobs", "messages", "prompts", "candidates", "max_completion_tokens",
          "stream_options", "response_format", "tools", "best_of", "extra_field")


def malformed_requests(n: int, rng: random.Random) -> list[tuple[str, bytes]]:
    """`n` (route, raw body) pairs: field swaps, deep mutations, raw-body attacks, heavy but valid work."""
    out: list[tuple[str, bytes]] = []
    valid = valid_bodies()
    raw_attacks = [b"", b"{", b"[]", b"null", b"\xff\xfe\xfa", b'{"texts": ["\xc3\x28"]}', b"1" * 5000,
                   b'{"seed": ' + b"9" * 5000 + b"}", b'{"a":' * 2000, b"{" + b" " * 10_000_000 + b"}"]
    for route in POST_ROUTES:
        for raw in raw_attacks:
            out.append((route, raw))
        big = dict(valid[route])
        big["texts" if "texts" in big else "prompts" if "prompts" in big else "prompt"] = ["word " * 20] * 10_000
        out.append((route, json.dumps(big).encode()))
        out.append((route, json.dumps({**valid[route], "pad": "p" * 10_000_000}).encode()))  # 10 MB body
    while len(out) < n:
        route = rng.choice(POST_ROUTES)
        body = json.loads(json.dumps(valid[route]))
        heavy_but_valid = rng.random() < 0.08  # real work mixed in: batches of different sampling params
        for _ in range(0 if heavy_but_valid else rng.randint(1, 3)):
            body[rng.choice(FIELDS)] = rng.choice(HOSTILE_VALUES)
        if route in ("/v1/completions", "/v1/chat/completions") and (heavy_but_valid or rng.random() < 0.3):
            body.update(seed=rng.choice([None, 0, 7, 2**63 - 1]), temperature=rng.choice([0, 1e-300, 0.7]),
                        stop=rng.choice([None, ["\n"], "x" * 128]), model=MODEL)
        if route == "/v1/chat/completions" and not heavy_but_valid and rng.random() < 0.2:
            body["messages"] = [{"role": rng.choice(["user", "assistant", "robot"]),
                                 "content": rng.choice([None, "", "\ud800", [{"type": "text", "text": "hi"}]])}]
        out.append((route, json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")))
    return out


def test_a_thousand_malformed_requests_get_no_5xx(served: launch.Endpoint, client: httpx.Client) -> None:
    before = client.post("/v1/completions", json=FIXED).json()["choices"][0]["text"]
    requests = malformed_requests(1000, random.Random(18))
    assert len(requests) >= 1000

    async def campaign() -> list[tuple[str, int, int]]:
        limit = asyncio.Semaphore(16)
        async with httpx.AsyncClient(base_url=served.url, timeout=120) as ac:
            async def send(route: str, raw: bytes) -> tuple[str, int, int]:
                async with limit:
                    r = await ac.post(route, content=raw, headers={"content-type": "application/json"})
                    return route, r.status_code, len(r.content)
            return await asyncio.gather(*(send(route, raw) for route, raw in requests))

    t0 = time.monotonic()
    results = asyncio.run(campaign())
    server_errors = [r for r in results if r[1] >= 500]
    assert server_errors == [], server_errors[:5]
    assert {s for _, s, _ in results} <= {200, 400, 404, 422}, {s for _, s, _ in results}
    assert sum(s == 200 for _, s, _ in results) > 20  # the campaign's valid heavy work really ran
    longest_error = max(size for _, status, size in results if status >= 400)
    assert longest_error < 20_000  # no 10 MB body or 200k-char field echoed back
    health = client.get("/healthz")
    assert health.status_code == 200, health.text
    assert health.json()["longest_engine_call_s"] < 30  # serve.engine_stall_s: no call held the engine longer
    assert client.post("/v1/completions", json=FIXED).json()["choices"][0]["text"] == before
    assert time.monotonic() - t0 < 600


@pytest.mark.parametrize(("body", "status", "names"), [
    ({"prompt": ""}, 422, "prompt"),
    ({"prompt": [""]}, 422, "prompt[0]"),
    ({"seed": 18446744073709551616}, 422, "seed"),
    ({"stop": "\ud800"}, 422, "stop"),
    ({"stop": "x" * 129}, 422, "stop"),
    ({"stop": ["a", "b", "c", "d", "e"]}, 422, "stop"),
    ({"n": 9}, 422, "n"),
    ({"prompt": ["a"] * 32, "max_tokens": 32, "n": 2}, 422, "max_request_tokens"),
    ({"model": "m" * 1_000_000}, 404, "model"),
])
def test_bad_completion_fields_are_4xx_naming_the_field(client: httpx.Client, body: dict[str, Any], status: int,
                                                        names: str) -> None:
    raw = json.dumps({**FIXED, **body}).encode("utf-8", "surrogatepass")
    r = client.post("/v1/completions", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text[:500]
    assert names in r.json()["error"]["message"]
    assert len(r.content) < 2000  # user input is not echoed unbounded


def test_score_refuses_empty_prompts_and_undecodable_bodies(client: httpx.Client) -> None:
    r = client.post("/v1/score", json={"prompts": ["ok", ""], "candidates": [" a", " b"]})
    assert r.status_code == 422 and "prompts[1]" in r.json()["error"]["message"]
    r = client.post("/v1/score", content=b"\xff\xfe", headers={"content-type": "application/json"})
    assert r.status_code in (400, 422) and r.json()["error"]["type"] == "invalid_request_error"


def test_tiny_temperature_is_sampled_not_a_502(client: httpx.Client) -> None:
    r = client.post("/v1/completions", json={**FIXED, "temperature": 1e-300, "seed": 5})
    assert r.status_code == 200, r.text


def test_mixed_sampling_params_in_one_batch_answer_as_alone(served: launch.Endpoint, client: httpx.Client) -> None:
    """Seeded, unseeded, greedy and stop-string requests batched together: none fails, the deterministic
    ones answer exactly as when sent alone."""
    bodies = [
        {**FIXED}, {**FIXED, "temperature": 0.9, "seed": 11}, {**FIXED, "temperature": 0.9},
        {**FIXED, "temperature": 0.7, "seed": 3, "stop": ["e"]}, {**FIXED, "prompt": "Another one", "seed": 2},
        {**FIXED, "temperature": 0.9, "seed": 11},
    ] * 3
    before = client.get("/v1/stats").json()["batches"]["generate"]["max_batch"]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=served.url, timeout=120) as ac:
            return await asyncio.gather(*(ac.post("/v1/completions", json=b) for b in bodies))

    together = asyncio.run(burst())
    assert [r.status_code for r in together] == [200] * len(bodies), [r.text for r in together if r.status_code != 200]
    assert client.get("/v1/stats").json()["batches"]["generate"]["max_batch"] > max(1, before - 1)
    for i in (0, 1, 3, 4):  # greedy or seeded: reproducible
        alone = client.post("/v1/completions", json=bodies[i]).json()["choices"][0]["text"]
        assert [together[j].json()["choices"][0]["text"] for j in (i, i + 6, i + 12)] == [alone] * 3


def test_a_stream_whose_client_left_stops_generating(served: launch.Endpoint, client: httpx.Client) -> None:
    before = client.get("/healthz").json()["dropped"]
    body = {**FIXED, "prompt": [f"Tell a long story number {i}:" for i in range(32)], "max_tokens": 32, "stream": True}
    with httpx.stream("POST", f"{served.url}/v1/completions", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert next(r.iter_lines()).startswith("data: {")  # text is coming: the generation is under way
    deadline = time.monotonic() + 30  # the connection is closed: the replica drops the rest of the work
    while client.get("/healthz").json()["dropped"] == before:
        assert time.monotonic() < deadline, "the abandoned stream's generation was not stopped"
        time.sleep(0.2)


def test_work_of_a_client_that_left_is_dropped(served: launch.Endpoint, client: httpx.Client) -> None:
    """A client that disconnects mid-request: the replica skips its remaining engine calls (`dropped`)."""
    before = client.get("/healthz").json()["dropped"]
    body = {**FIXED, "prompt": [f"Tell a long story number {i}:" for i in range(32)], "max_tokens": 32}
    for timeout in (0.6, 0.3, 0.15, 0.08):  # 4 engine calls of 8 prompts: leave while some are still queued
        try:
            httpx.post(f"{served.url}/v1/completions", json=body, timeout=timeout)
        except httpx.TimeoutException:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if client.get("/healthz").json()["dropped"] > before:
                    return
                time.sleep(0.5)
    pytest.fail("no abandoned request's work was dropped")


# OpenAI clients ---------------------------------------------------------------------
def test_openai_client_streams_completions_and_chat(served: launch.Endpoint, client: httpx.Client) -> None:
    oa = openai.OpenAI(base_url=served.base_url, api_key="unused", max_retries=0)
    whole = oa.completions.create(model=MODEL, prompt="The food was", max_tokens=6, temperature=0)
    stream = oa.completions.create(model=MODEL, prompt="The food was", max_tokens=6, temperature=0, stream=True,
                                   stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert sum(bool(c.choices and c.choices[0].text) for c in chunks) > 1  # streamed as generated, not whole
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == whole.usage.total_tokens

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Great pasta?"},
                {"role": "assistant", "content": None}, {"role": "user", "content": "Well?"}]
    chat = oa.chat.completions.create(model=MODEL, messages=messages, max_tokens=6, temperature=0)
    parts = list(oa.chat.completions.create(model=MODEL, messages=messages, max_tokens=6, temperature=0,
                                            stream=True))
    assert parts[0].choices[0].delta.role == "assistant"
    assert "".join(p.choices[0].delta.content or "" for p in parts) == chat.choices[0].message.content
    assert sum(bool(p.choices[0].delta.content) for p in parts) > 1
    assert parts[-1].choices[0].finish_reason == chat.choices[0].finish_reason

    raw = client.post("/v1/chat/completions", json={"model": MODEL, "messages": messages[:2], "max_tokens": 2,
                                                     "stream": True})
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.rstrip().endswith("data: [DONE]")


def test_openai_neutral_fields_n_echo_and_model_lookup(served: launch.Endpoint) -> None:
    oa = openai.OpenAI(base_url=served.base_url, api_key="unused", max_retries=0)
    assert oa.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        oa.models.retrieve("gpt-4")
    assert all("/" not in m.root for m in oa.models.list().data)  # no server path revealed
    chat = oa.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=3, n=3, temperature=0.9, seed=1,
        response_format={"type": "text"}, tools=[], parallel_tool_calls=False, store=False,
        service_tier="auto", stream_options=None, logprobs=False,
    )
    assert [c.index for c in chat.choices] == [0, 1, 2]
    done = oa.completions.create(model=MODEL, prompt=["Hi", "Yo"], max_tokens=3, n=2, echo=True, temperature=0)
    assert [c.text[:2] for c in done.choices] == ["Hi", "Hi", "Yo", "Yo"]
    assert done.choices[0].text == done.choices[1].text  # greedy choices agree


def test_streamed_n_and_echo_fan_out_to_every_choice(served: launch.Endpoint) -> None:
    oa = openai.OpenAI(base_url=served.base_url, api_key="unused", max_retries=0)
    whole = oa.completions.create(model=MODEL, prompt=["Hi", "Yo"], max_tokens=5, n=2, echo=True, temperature=0)
    texts = {i: "" for i in range(4)}
    for chunk in oa.completions.create(model=MODEL, prompt=["Hi", "Yo"], max_tokens=5, n=2, echo=True,
                                       temperature=0, stream=True):
        for c in chunk.choices:
            texts[c.index] += c.text
    assert [texts[i] for i in range(4)] == [c.text for c in whole.choices]


def test_openai_client_gets_logprobs_on_both_routes(served: launch.Endpoint) -> None:
    """Real log-probabilities of the generated tokens (values in tests/serving/test_engine_hostile.py), in
    OpenAI's two shapes, streamed too; the greedy token is the most likely one."""
    oa = openai.OpenAI(base_url=served.base_url, api_key="unused", max_retries=0)
    done = oa.completions.create(model=MODEL, prompt="The food was", max_tokens=8, temperature=0, logprobs=3)
    choice = done.choices[0]
    lp = choice.logprobs
    assert 1 < len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
    assert len(lp.tokens) in (done.usage.completion_tokens, done.usage.completion_tokens - 1)  # - end token
    assert "".join(lp.tokens) == choice.text
    assert lp.text_offset == [len("".join(lp.tokens[:i])) for i in range(len(lp.tokens))]
    for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert value <= 0 and len(top) == 3 and top[token] == value == max(top.values())

    messages = [{"role": "user", "content": "Great pasta?"}]
    chat = oa.chat.completions.create(model=MODEL, messages=messages, max_tokens=8, temperature=0, logprobs=True,
                                      top_logprobs=5)
    content = chat.choices[0].logprobs.content
    assert "".join(t.token for t in content) == chat.choices[0].message.content
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 5 and t.bytes == list(t.token.encode())
        assert t.logprob == max(a.logprob for a in t.top_logprobs) == t.top_logprobs[0].logprob
    plain = oa.chat.completions.create(model=MODEL, messages=messages, max_tokens=8, temperature=0, logprobs=True)
    assert [t.top_logprobs for t in plain.choices[0].logprobs.content] == [[] for _ in content]
    streamed = [t for part in oa.chat.completions.create(model=MODEL, messages=messages, max_tokens=8, temperature=0,
                                                         logprobs=True, top_logprobs=5, stream=True)
                if part.choices and part.choices[0].logprobs for t in part.choices[0].logprobs.content or []]
    assert [(t.token, t.logprob) for t in streamed] == [(t.token, t.logprob) for t in content]


@pytest.mark.parametrize(("route", "body", "names"), [
    ("/v1/completions", {"prompt": "a", "logprobs": 6}, "logprobs"),
    ("/v1/completions", {"prompt": "a", "logprobs": -1}, "logprobs"),
    ("/v1/completions", {"prompt": "a", "logprobs": 2, "echo": True}, "logprobs"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a"}], "logprobs": True, "top_logprobs": 21},
     "top_logprobs"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a"}], "top_logprobs": 2}, "top_logprobs"),
])
def test_logprobs_limits_are_422_naming_the_field(client: httpx.Client, route: str, body: dict[str, Any],
                                                  names: str) -> None:
    r = client.post(route, json={"model": MODEL, "max_tokens": 2, **body})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["message"].startswith(names), r.json()["error"]["message"]


# health --------------------------------------------------------------------------------
def test_check_health_fails_on_a_frozen_or_dead_engine(tiny_model: Path) -> None:
    """The deployment class in-process with a real engine: a call that never returns, then a shut-down engine."""
    model = StudentModel.func_or_class(
        EngineConfig(kind="hf", model=str(tiny_model), dtype="float32", max_model_len=128), None, 4, 0.01,
        engine_stall_s=0.5, probe_timeout_s=5)

    async def scenario() -> list[str | None]:
        seen: list[str | None] = []
        await model.check_health()  # healthy: the probe answers
        seen.append((await model.info())["problem"])
        release = threading.Event()
        frozen = asyncio.ensure_future(model._run(release.wait))  # the engine thread is stuck in a call
        await asyncio.sleep(0.8)
        with pytest.raises(RuntimeError, match="frozen"):
            await model.check_health()
        seen.append((await model.info())["problem"])
        release.set()
        await frozen
        await model.check_health()
        model.engine.shutdown()  # a dead engine: the probe fails
        with pytest.raises(RuntimeError, match="probe failed"):
            await model.check_health()
        seen.append((await model.info())["problem"])
        return seen

    problems = asyncio.run(scenario())
    assert problems[0] is None and "frozen" in (problems[1] or "") and "probe failed" in (problems[2] or "")
    model.engine = None
    model._worker.shutdown(wait=False)


def _replica_pids(app: str) -> list[int]:
    found = []
    for p in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if f"ServeReplica:{app}:StudentModel" in " ".join(p.cmdline()):
                found.append(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_a_frozen_replica_is_replaced_and_answers_again(served: launch.Endpoint, client: httpx.Client) -> None:
    pids = _replica_pids(served.app_name)
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGSTOP)  # engine, event loop and check_health all frozen
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            fresh = [p for p in _replica_pids(served.app_name) if p != pids[0]]
            if fresh and client.get("/healthz", timeout=10).status_code == 200:
                break
            time.sleep(1)
        else:
            pytest.fail("the frozen replica was not replaced within 180 s")
        r = client.post("/v1/completions", json=FIXED)
        assert r.status_code == 200, r.text
    finally:
        if psutil.pid_exists(pids[0]):
            os.kill(pids[0], signal.SIGKILL)
    deadline = time.monotonic() + 60  # Serve's status catches up once the old replica is stopped
    while serve.status().applications[served.app_name].deployments["StudentModel"].status != "HEALTHY":
        assert time.monotonic() < deadline, serve.status().applications[served.app_name]
        time.sleep(1)


# schemathesis and lm-evaluation-harness -------------------------------------------------
def test_schemathesis_finds_no_server_error_or_undeclared_status(served: launch.Endpoint, tmp_path: Path) -> None:
    """Property-based requests from the served OpenAPI document: no 5xx, every status code declared."""
    cli = Path(sys.executable).parent / "schemathesis"
    if not cli.exists():
        pytest.skip("schemathesis is not installed (pip install 'sentidistill[test]')")
    report = tmp_path / "junit.xml"
    done = subprocess.run(
        [str(cli), "run", f"{served.url}/openapi.json", "--checks", "not_a_server_error,status_code_conformance",
         "--phases", "examples,coverage,fuzzing", "--max-examples", "25", "--seed", "18", "--workers", "4",
         "--request-timeout", "120", "--report", "junit", "--report-junit-path", str(report),
         "--suppress-health-check", "all"],
        capture_output=True, text=True, timeout=900, env={**os.environ, "NO_COLOR": "1"})
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    print(done.stdout[-1500:])
    cases = sum(int(n) for n in re.findall(r"(\d+) generated", done.stdout))
    assert cases >= 200, done.stdout[-3000:]  # it really exercised the API


def test_lm_eval_local_completions_runs_a_local_task(served: launch.Endpoint, tiny_model: Path, tmp_path: Path,
                                                     client: httpx.Client) -> None:
    """lm-evaluation-harness' `local-completions` model against /v1/completions on a task from local files."""
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    rows = [{"text": t, "label": lab} for t, lab in [("A gorgeous film.", "positive"), ("Dull and long.", "negative"),
                                                     ("I loved it.", "positive"), ("A waste of time.", "negative")]]
    data = tmp_path / "tiny_sst.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tiny_sst.yaml").write_text(
        "task: sentidistill_tiny_sst\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: generate_until\n"
        "doc_to_text: \"Review: {{text}}\\nSentiment:\"\n"
        "doc_to_target: \" {{label}}\"\n"
        "generation_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: 6\n  do_sample: false\n  temperature: 0\n"
        "metric_list:\n  - metric: exact_match\n")
    out = lm_eval.simple_evaluate(
        model="local-completions",
        model_args={"model": MODEL, "base_url": f"{served.base_url}/completions", "tokenizer": str(tiny_model),
                    "tokenizer_backend": "huggingface", "tokenized_requests": False, "num_concurrent": 2,
                    "max_retries": 1},
        tasks=["sentidistill_tiny_sst"], task_manager=TaskManager(include_path=str(tmp_path / "tasks")),
        log_samples=True,
    )
    samples = out["samples"]["sentidistill_tiny_sst"]
    assert len(samples) == len(rows)
    assert 0.0 <= out["results"]["sentidistill_tiny_sst"]["exact_match,none"] <= 1.0
    first = samples[0]
    direct = client.post("/v1/completions", json={"model": MODEL, "prompt": first["arguments"][0][0], "max_tokens": 6,
                                                  "temperature": 0, "stop": ["\n"]}).json()
    assert first["resps"][0][0] == direct["choices"][0]["text"]  # the harness saw exactly what the API answers
