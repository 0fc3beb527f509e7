"""The served student on a real Ray Serve (127.0.0.1, tiny model, real HTTP).

One module-scoped app (auth off) plus one app with auth on under /secured; the last test shuts
Serve down and checks that no Serve actor or process is left. Tests run in file order.
"""

from __future__ import annotations

import asyncio
import math
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import ray
from ray import serve

from sentidistill.config import EngineConfig, PipelineConfig, load_config
from sentidistill.engines import GenerationRequest, build_engine
from sentidistill.serving import launch
from sentidistill.serving.app import app_settings, bind_app
from sentidistill.tasks import Example, build_prompt, classification_candidates, load_registry, parse_output
from sentidistill.tasks.prompts import sample_demos
from procs import descendants, still_running

TASKS = "[sst2,emotion20,irony18,pstance,atsa_rest16]"
KEY_ENV = "SENTIDISTILL_TEST_SERVE_KEY"
KEY = "test-key-7f3a9c2e"
SERVE_ACTORS = ("ServeController", "ProxyActor", "ServeReplica")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_cfg(data_dir: Path, *extra: str) -> PipelineConfig:
    return load_config(None, [
        f"data_dir={data_dir}", "train.model.student=unused", f"serve.port={free_port()}", f"serve.tasks={TASKS}",
        "serve.engine.dtype=float32", "serve.engine.max_model_len=512", "serve.engine.resources.batch_size=16",
        "serve.engine.name=tiny-student", "serve.max_new_tokens=32", "serve.extract_max_new_tokens=24",
        "serve.max_batch_size=16", "serve.batch_wait_timeout_s=0.05", *extra,
    ])


@pytest.fixture(scope="module")
def cfg(shared_data: Path) -> PipelineConfig:
    return serve_cfg(shared_data)


@pytest.fixture(scope="module")
def served(ray_local, tiny_model: Path, cfg: PipelineConfig):
    endpoint = launch.start(cfg, str(tiny_model))
    yield endpoint
    if ray.is_initialized():
        serve.shutdown()


@pytest.fixture(scope="module")
def client(served: launch.Endpoint):
    with httpx.Client(base_url=served.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def hf(tiny_model: Path):
    """The same weights in-process: what the served answers must equal."""
    engine = build_engine(EngineConfig(kind="hf", model=str(tiny_model), dtype="float32", max_model_len=512,
                                       resources={"batch_size": 16}))
    yield engine
    engine.shutdown()


def softmax(row: list[float]) -> list[float]:
    exps = [math.exp(x - max(row)) for x in row]
    return [e / sum(exps) for e in exps]


# routes -----------------------------------------------------------------------
def test_health_models_and_openapi(client: httpx.Client, served: launch.Endpoint) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200
    assert {k: health.json()[k] for k in ("status", "model", "engine")} == {"status": "ok", "model": "tiny-student",
                                                                           "engine": "hf"}
    cards = client.get("/v1/models").json()["data"]
    assert [(c["id"], c["root"]) for c in cards] == [("tiny-student", "tiny-student")]  # no server path
    spec = client.get("/openapi.json").json()
    for route in ("/v1/sentiment", "/v1/extract", "/v1/completions", "/v1/chat/completions", "/v1/score"):
        assert "post" in spec["paths"][route]
        assert {"400", "422", "502", "503", "504"} <= set(spec["paths"][route]["post"]["responses"])
    texts = spec["components"]["schemas"]["SentimentRequest"]["properties"]["texts"]
    assert texts["maxItems"] == 64 and texts["items"]["maxLength"] == 4000  # limits documented


def test_sentiment_matches_the_sentibench_protocol(client: httpx.Client, hf, shared_data: Path) -> None:
    texts = ["A gorgeous, moving film.", "Dull and far too long.", "It was fine, I guess."]
    body = client.post("/v1/sentiment", json={"texts": texts, "task": "sentiment", "seed": 7}).json()
    assert (body["task"], body["labels"], body["k"], body["seed"]) == ("sst2", ["negative", "positive"], 4, 7)
    reg = load_registry(data_dir=str(shared_data))
    task = reg.get("sst2")
    queries = [Example.query(t) for t in texts]
    demos = sample_demos(task, reg.load_split("sst2", "train"), queries, seed=7, k=4)
    prompts = [build_prompt(task, d, q) for d, q in zip(demos, queries, strict=True)]
    expected = [softmax(r) for r in hf.score_next_token(prompts, classification_candidates(task))]
    for got, want in zip(body["results"], expected, strict=True):
        probs = [got["probabilities"][label] for label in task.labels]
        assert probs == pytest.approx(want, abs=1e-4)
        assert got["label"] == task.labels[probs.index(max(probs))]
        assert sum(probs) == pytest.approx(1.0)


@pytest.mark.parametrize(("task", "extra", "labels"), [
    ("emotion", {}, ["anger", "joy", "sadness", "optimism"]),
    ("irony18", {"k": 0}, ["non-irony", "irony"]),
    ("stance", {"target": "Joe Biden", "k": 2}, ["against", "favor"]),
])
def test_sentiment_aliases_targets_and_k(client: httpx.Client, task: str, extra: dict[str, Any],
                                         labels: list[str]) -> None:
    r = client.post("/v1/sentiment", json={"texts": ["I love this!", "ugh"], "task": task, **extra})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["labels"] == labels and body["k"] == extra.get("k", 4)
    assert all(set(res["probabilities"]) == set(labels) for res in body["results"])


def test_extract_is_protocol_prompt_greedy_then_parsed(client: httpx.Client, hf, shared_data: Path) -> None:
    text = "The sushi was superb but the waiter was rude."
    r = client.post("/v1/extract", json={"texts": [text], "task": "atsa", "k": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["task"], body["fields"]) == ("atsa_rest16", ["aspect", "polarity"])
    reg = load_registry(data_dir=str(shared_data))
    task = reg.get("atsa_rest16")
    q = Example.query(text)
    prompt = build_prompt(task, sample_demos(task, reg.load_split("atsa_rest16", "train"), [q], seed=0, k=1)[0], q)
    want = hf.generate([GenerationRequest(prompt=prompt, max_new_tokens=24)])[0]
    got = body["results"][0]
    assert got["raw"] == want.text and got["finish_reason"] == want.finish_reason
    parsed = parse_output(task, want.text)
    assert got["parse_failed"] == parsed.failed and got["dropped"] == parsed.dropped
    assert got["tuples"] == [dict(zip(task.tuple_fields, t, strict=True)) for t in parsed.value or []]


def test_openai_client_on_completions_chat_and_models(served: launch.Endpoint, hf) -> None:
    oa = openai.OpenAI(base_url=served.base_url, api_key="unused", max_retries=0)
    assert [m.id for m in oa.models.list()] == ["tiny-student"]
    done = oa.completions.create(model="tiny-student", prompt=["The food was", "Hello"], max_tokens=5, temperature=0)
    want = hf.generate([GenerationRequest(prompt=p, max_new_tokens=5) for p in ("The food was", "Hello")])
    assert [c.text for c in done.choices] == [w.text for w in want]
    assert done.usage.completion_tokens == sum(w.completion_tokens for w in want)
    messages = [{"role": "user", "content": "Is this review positive? 'Great pasta.'"}]
    chat = oa.chat.completions.create(model="tiny-student", messages=messages, max_tokens=5, temperature=0)
    assert chat.choices[0].message.content == hf.generate([GenerationRequest(messages=messages,
                                                                             max_new_tokens=5)])[0].text
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        oa.completions.create(model="gpt-4", prompt="x", max_tokens=1)
    with pytest.raises(openai.UnprocessableEntityError, match="n: Input should be less than or equal to 8"):
        oa.completions.create(model="tiny-student", prompt="x", max_tokens=1, n=9)


def test_evaluation_engine_scores_through_v1_score(served: launch.Endpoint, hf) -> None:
    remote = build_engine(EngineConfig(kind="openai", model="tiny-student", resources={"batch_size": 3},
                                       openai={"base_url": served.base_url, "max_retries": 0}))
    prompts = [f"Sentence: review number {i} was {'great' if i % 2 else 'bad'}\nLabel:" for i in range(7)]
    labels = [" negative", " positive", " neutral"]
    try:
        got = remote.score_next_token(prompts, labels)
    finally:
        remote.shutdown()
    want = hf.score_next_token(prompts, labels)
    assert [r == pytest.approx(w, abs=1e-4) for r, w in zip(got, want, strict=True)] == [True] * 7


def test_metrics_are_prometheus_text(client: httpx.Client) -> None:
    text = client.get("/metrics").text
    assert 'sentidistill_requests_total{route="/v1/sentiment",status="200"}' in text
    assert 'sentidistill_batch_requests_count{method="score"}' in text


# bad input --------------------------------------------------------------------
LONG = "x" * 4001
BAD: list[tuple[str, str, Any, int, str]] = [
    ("/v1/sentiment", "texts empty", {"texts": []}, 422, "texts"),
    ("/v1/sentiment", "too many texts", {"texts": ["a"] * 65}, 422, "texts"),
    ("/v1/sentiment", "text too long", {"texts": ["ok", LONG]}, 422, "texts[1]"),
    ("/v1/sentiment", "empty text", {"texts": [""]}, 422, "texts[0]"),
    ("/v1/sentiment", "texts not a list", {"texts": "good"}, 422, "texts"),
    ("/v1/sentiment", "text not a string", {"texts": [1]}, 422, "texts[0]"),
    ("/v1/sentiment", "texts missing", {"task": "sentiment"}, 422, "texts"),
    ("/v1/sentiment", "unknown task", {"texts": ["a"], "task": "sentimnt"}, 422, "Did you mean 'sentiment'"),
    ("/v1/sentiment", "task not served", {"texts": ["a"], "task": "imdb"}, 422, "task: Unknown task 'imdb'"),
    ("/v1/sentiment", "extraction task", {"texts": ["a"], "task": "atsa"}, 422, "/v1/extract"),
    ("/v1/sentiment", "stance without target", {"texts": ["a"], "task": "stance"}, 422, "target"),
    ("/v1/sentiment", "target on sst2", {"texts": ["a"], "target": "Joe Biden"}, 422, "target"),
    ("/v1/sentiment", "k too large", {"texts": ["a"], "k": 99}, 422, "k"),
    ("/v1/sentiment", "k negative", {"texts": ["a"], "k": -1}, 422, "k"),
    ("/v1/sentiment", "k as string", {"texts": ["a"], "k": "3"}, 422, "k"),
    ("/v1/sentiment", "unknown field", {"texts": ["a"], "colour": "red"}, 422, "colour"),
    ("/v1/sentiment", "body is a list", ["a"], 422, "body"),
    ("/v1/sentiment", "malformed JSON", b"{not json", 422, "body"),
    ("/v1/extract", "task missing", {"texts": ["a"]}, 422, "task"),
    ("/v1/extract", "classify task", {"texts": ["a"], "task": "sst2"}, 422, "/v1/sentiment"),
    ("/v1/completions", "unknown model", {"model": "gpt-4", "prompt": "a"}, 404, "model"),
    ("/v1/completions", "prompt not text", {"model": "tiny-student", "prompt": 5}, 422, "prompt"),
    ("/v1/completions", "max_tokens 0", {"model": "tiny-student", "prompt": "a", "max_tokens": 0}, 422, "max_tokens"),
    ("/v1/completions", "max_tokens > cap", {"model": "tiny-student", "prompt": "a", "max_tokens": 33}, 422,
     "max_tokens"),
    ("/v1/completions", "n > max_n", {"model": "tiny-student", "prompt": "a", "n": 9}, 422, "n: Input should be"),
    ("/v1/completions", "empty prompt", {"model": "tiny-student", "prompt": ""}, 422, "prompt"),
    ("/v1/completions", "seed overflow", {"model": "tiny-student", "prompt": "a", "seed": 2**64}, 422, "seed"),
    ("/v1/completions", "long stop", {"model": "tiny-student", "prompt": "a", "stop": "x" * 100_000}, 422, "stop"),
    ("/v1/completions", "5 stops", {"model": "tiny-student", "prompt": "a", "stop": list("abcde")}, 422, "stop"),
    ("/v1/score", "empty prompt", {"prompts": ["ok", ""], "candidates": [" a"]}, 422, "prompts[1]"),
    ("/v1/chat/completions", "user content null", {"model": "tiny-student",
                                                   "messages": [{"role": "user", "content": None}]},
     422, "messages[0]"),
    ("/v1/chat/completions", "tools", {"model": "tiny-student", "messages": [{"role": "user", "content": "a"}],
                                       "tools": [{"type": "function"}]}, 422, "tools"),
    ("/v1/completions", "negative temperature", {"model": "tiny-student", "prompt": "a", "temperature": -1}, 422,
     "temperature"),
    ("/v1/completions", "logprobs over 5", {"model": "tiny-student", "prompt": "a", "logprobs": 6}, 422, "logprobs"),
    ("/v1/completions", "prompt too long", {"model": "tiny-student", "prompt": "x" * 100_001}, 422, "prompt"),
    ("/v1/chat/completions", "no messages", {"model": "tiny-student", "messages": []}, 422, "messages"),
    ("/v1/chat/completions", "bad role", {"model": "tiny-student", "messages": [{"role": "robot", "content": "a"}]},
     422, "messages[0].role"),
    ("/v1/score", "no candidates", {"prompts": ["a"], "candidates": []}, 422, "candidates"),
    ("/v1/score", "candidates share a first token", {"prompts": ["a"], "candidates": [" positive", " positive!"]},
     422, "share their first token"),
    ("/v1/score", "unknown model", {"model": "other", "prompts": ["a"], "candidates": [" a"]}, 404, "model"),
    ("/v1/nowhere", "unknown route", {}, 404, "Not Found"),
]


@pytest.mark.parametrize(("route", "case", "body", "status", "names"), BAD, ids=[c[1] for c in BAD])
def test_bad_input_is_a_4xx_naming_the_field(client: httpx.Client, route: str, case: str, body: Any, status: int,
                                             names: str) -> None:
    kw: dict[str, Any] = ({"content": body, "headers": {"content-type": "application/json"}}
                          if isinstance(body, bytes) else {"json": body})
    r = client.post(route, **kw)
    assert r.status_code == status, r.text
    message = r.json()["error"]["message"]
    assert names in message, message


def test_replica_survives_the_bad_inputs(client: httpx.Client) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.post("/v1/sentiment", json={"texts": ["still here"]}).status_code == 200
    status = serve.status().applications["sentidistill"]
    assert status.status == "RUNNING"
    assert all(d.status == "HEALTHY" for d in status.deployments.values())


# batching -------------------------------------------------------------------------
def test_64_concurrent_requests_all_succeed_and_are_batched(served: launch.Endpoint, client: httpx.Client) -> None:
    before = client.get("/v1/stats").json()["batches"]["score"]["by_size"]
    texts = [f"review {i}: {'loved' if i % 2 else 'hated'} it" for i in range(64)]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=served.url, timeout=120) as ac:
            return await asyncio.gather(*(ac.post("/v1/sentiment", json={"texts": [t]}) for t in texts))

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 64
    after = client.get("/v1/stats").json()["batches"]["score"]["by_size"]
    new = {int(s): c - before.get(s, 0) for s, c in after.items() if c > before.get(s, 0)}
    assert sum(new.values()) == 64 and max(new) > 1, new  # every request observed, some shared a batch
    alone = client.post("/v1/sentiment", json={"texts": [texts[5]]}).json()["results"][0]
    assert responses[5].json()["results"][0]["probabilities"] == pytest.approx(alone["probabilities"], abs=1e-4)


# auth -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def secured(served: launch.Endpoint, shared_data: Path, tiny_model: Path):
    """A second app with auth on under /secured; the key reaches its replicas as the cluster env would."""
    cfg = serve_cfg(shared_data, f"serve.api_key_env={KEY_ENV}", "serve.tasks=[sst2]",
                    f"serve.runtime_env={{env_vars: {{{KEY_ENV}: {KEY}}}}}")
    serve.run(bind_app(app_settings(cfg, str(tiny_model))), name="secured", route_prefix="/secured")
    return f"{served.url}/secured"  # deleted by the shutdown test, or with Serve by `served`'s teardown


def test_auth_on_guards_every_route_but_health(secured: str) -> None:
    with httpx.Client(base_url=secured, timeout=60) as c:
        assert c.get("/healthz").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            r = c.get("/v1/models", headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert KEY not in r.text
        assert c.post("/v1/sentiment", json={"texts": ["a"]}).status_code == 401
        assert c.get("/metrics").status_code == 401
        ok = c.post("/v1/sentiment", json={"texts": ["a"]}, headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200
        spec = c.get("/openapi.json").json()
        assert spec["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    oa = openai.OpenAI(base_url=f"{secured}/v1", api_key=KEY, max_retries=0)
    assert oa.completions.create(model="tiny-student", prompt="Hi", max_tokens=2).choices[0].finish_reason
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{secured}/v1", api_key="wrong", max_retries=0).models.list()


def test_auth_off_needs_no_key(client: httpx.Client) -> None:
    assert client.get("/v1/models").status_code == 200
    assert client.get("/metrics").status_code == 200


# shutdown (last) --------------------------------------------------------------------
def _serve_pids() -> list[int]:
    """Serve actor processes of this test cluster."""
    return [pid for name in SERVE_ACTORS for pid in descendants(name)]


def test_shutdown_leaves_no_serve_actor_or_process(served: launch.Endpoint) -> None:
    if "secured" in serve.status().applications:
        serve.delete("secured")
    pids = _serve_pids()
    assert len(pids) >= 4  # controller, proxy, ingress and model replicas
    launch.stop(served.app_name)
    named = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
    assert not [n for n in named if "SERVE" in n.upper()], named
    deadline = time.monotonic() + 30
    while still_running(pids) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert still_running(pids) == [] and _serve_pids() == []
