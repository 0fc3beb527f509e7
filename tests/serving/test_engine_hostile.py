"""The hf engine under inputs a served client may send: long stop strings, mixed seeds in one batch,
tiny temperatures. Real tiny model, no Ray."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sentidistill.config import EngineConfig
from sentidistill.engines import GenerationRequest, build_engine
from sentidistill.engines.stop_strings import first_stop


@pytest.fixture(scope="module")
def hf(tiny_model: Path):
    engine = build_engine(EngineConfig(kind="hf", model=str(tiny_model), dtype="float32", max_model_len=512,
                                       resources={"batch_size": 8}))
    yield engine
    engine.shutdown()


def test_mixed_seeds_and_sampling_params_share_one_call(hf) -> None:
    """A seed beside requests without one (and other params) must not break anyone's answer."""
    reqs = [
        GenerationRequest(prompt="The food was", max_new_tokens=6),
        GenerationRequest(prompt="The food was", max_new_tokens=6, temperature=0.8, seed=7),
        GenerationRequest(prompt="Hello there", max_new_tokens=6, temperature=0.8),
        GenerationRequest(prompt="Hello there", max_new_tokens=4, temperature=0.8, seed=3, stop=["x"]),
        GenerationRequest(prompt="The food was", max_new_tokens=6, temperature=0.8, seed=7),
    ]
    out = hf.generate(reqs)
    assert [c.finish_reason for c in out] != ["error"] * 5
    assert all(c.error is None for c in out), [c.error for c in out]
    alone = [hf.generate([r])[0].text for r in (reqs[0], reqs[1])]
    assert out[0].text == alone[0]  # greedy: same answer alone or in a mixed batch
    assert out[1].text == out[4].text == alone[1]  # same seed, same answer wherever it ran


def test_stop_cost_does_not_grow_with_the_vocabulary(hf) -> None:
    """128-char stop strings (the served cap) cost about what a 1-char one does (transformers' took seconds)."""
    prompt = GenerationRequest(prompt="Once upon a time", max_new_tokens=16)
    t0 = time.perf_counter()
    short = hf.generate([GenerationRequest(prompt=prompt.prompt, max_new_tokens=16, stop=["\u2603"])])[0]
    t_short = time.perf_counter() - t0
    t0 = time.perf_counter()
    long = hf.generate([GenerationRequest(prompt=prompt.prompt, max_new_tokens=16,
                                          stop=["q" * 128, "z" * 128, "\u00e9" * 128, "w" * 128])])[0]
    t_long = time.perf_counter() - t0
    assert long.text == short.text and long.finish_reason == short.finish_reason
    assert t_long < 1.0 + 3 * t_short, (t_short, t_long)


def test_stop_string_cuts_the_completion(hf) -> None:
    free = hf.generate([GenerationRequest(prompt="Once upon a time", max_new_tokens=12)])[0]
    assert len(free.text) > 4
    stop = free.text[2:4]
    got = hf.generate([GenerationRequest(prompt="Once upon a time", max_new_tokens=12, stop=[stop])])[0]
    assert got.text == free.text[: free.text.find(stop)] and got.finish_reason == "stop"


def test_first_stop_is_the_earliest() -> None:
    assert first_stop("abcXdefY", ["Y", "X"]) == 3
    assert first_stop("abc", ["Y"]) is None


@pytest.mark.parametrize("temperature", [1e-300, 1e-30, 0.001])
def test_tiny_temperatures_sample_without_overflow(hf, temperature: float) -> None:
    out = hf.generate([GenerationRequest(prompt="Hello", max_new_tokens=4, temperature=temperature, seed=1)])[0]
    assert out.error is None and out.finish_reason in ("stop", "length")


# log-probabilities and streaming --------------------------------------------------------------
def test_logprobs_are_the_models_own_next_token_distribution(hf) -> None:
    """Recorded inside generate (StepLogprobs) = a separate full forward pass over prompt + completion."""
    import torch

    from sentidistill.engines.base import prompt_ids

    prompt = "The food was"
    asked, plain = hf.generate([GenerationRequest(prompt=prompt, max_new_tokens=8, logprobs=3),
                                GenerationRequest(prompt=prompt, max_new_tokens=8)])
    assert plain.logprobs is None and asked.text == plain.text
    entries = asked.logprobs
    assert entries and "".join(e.token for e in entries) == asked.text
    ids = prompt_ids(hf.tokenizer, prompt)
    gen = hf.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                            do_sample=False, max_new_tokens=8, pad_token_id=hf.tokenizer.pad_token_id)[0, len(ids):]
    with torch.inference_mode():
        logits = hf.model(torch.tensor([ids + gen.tolist()])).logits[0].float()
    lps = torch.log_softmax(logits, dim=-1)
    for i, e in enumerate(entries):
        row = lps[len(ids) + i - 1]
        assert e.logprob == pytest.approx(float(row[gen[i]]), abs=1e-4)
        assert [lp for _, lp in e.top] == pytest.approx(row.topk(3).values.tolist(), abs=1e-4)
        assert e.logprob <= 0 and e.logprob == pytest.approx(e.top[0][1], abs=1e-6)  # greedy: the most likely


def test_streaming_sends_pieces_that_add_up_to_the_completion(hf) -> None:
    from sentidistill.engines.base import TextStream

    free = hf.generate([GenerationRequest(prompt="Once upon a time", max_new_tokens=12)])[0]
    stop = free.text[3:5]
    reqs = [GenerationRequest(prompt="Once upon a time", max_new_tokens=12),
            GenerationRequest(prompt="Once upon a time", max_new_tokens=12, stop=[stop])]
    pieces: dict[int, list[str]] = {0: [], 1: []}
    out = hf.generate_streaming(reqs, TextStream(lambda i, text: pieces[i].append(text), lambda: False))
    assert [c.text for c in out] == [free.text, free.text[: free.text.find(stop)]]
    assert len(pieces[0]) > 1  # token by token, not the whole text at the end
    assert ["".join(pieces[i]) for i in (0, 1)] == [c.text for c in out]  # nothing past a stop string was sent


def test_cancelled_stream_stops_generating(hf) -> None:
    from sentidistill.engines.base import TextStream

    out = hf.generate_streaming([GenerationRequest(prompt="Once upon a time", max_new_tokens=24)],
                                TextStream(lambda i, text: None, lambda: True))[0]
    assert out.completion_tokens == 1  # stopped after the first step
