"""vllm engine's per-token log-probabilities (logprobs_mode raw_logprobs) against the hf engine's, tiny model.

Slow: its own vLLM engine (~20-40 s to start on a shared 2-core box).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sentidistill.config import EngineConfig
from sentidistill.engines import GenerationRequest, build_engine

pytest.importorskip("vllm")
pytestmark = pytest.mark.slow


def test_vllm_logprobs_equal_the_hf_engines(tiny_model: Path) -> None:
    common = {"model": str(tiny_model), "dtype": "float32", "max_model_len": 512, "resources": {"batch_size": 4}}
    hf = build_engine(EngineConfig(kind="hf", **common))
    vl = build_engine(EngineConfig(kind="vllm", engine_kwargs={"logprobs_mode": "raw_logprobs"},
                                   vllm={"max_num_seqs": 8, "cpu_kvcache_gb": 1}, **common))
    try:
        reqs = [GenerationRequest(prompt="The food was", max_new_tokens=8, logprobs=3),
                GenerationRequest(messages=[{"role": "user", "content": "Hi"}], max_new_tokens=6, logprobs=0),
                GenerationRequest(prompt="Hello there", max_new_tokens=4)]
        ours, ref = vl.generate(reqs), hf.generate(reqs)
        assert ours[2].logprobs is None
        for o, r in zip(ours[:2], ref[:2], strict=True):
            assert o.text == r.text and o.logprobs and r.logprobs
            assert [e.token for e in o.logprobs] == [e.token for e in r.logprobs]
            assert "".join(e.token for e in o.logprobs) == o.text
            for a, b in zip(o.logprobs, r.logprobs, strict=True):
                assert a.logprob == pytest.approx(b.logprob, abs=1e-3)
                assert [(t, lp) for t, lp in a.top] == [(t, pytest.approx(lp, abs=1e-3)) for t, lp in b.top]
        assert all(e.top == [] for e in ours[1].logprobs)
    finally:
        vl.shutdown()
        hf.shutdown()
