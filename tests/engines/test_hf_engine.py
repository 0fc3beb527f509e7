"""hf engine on the tiny model: generation bookkeeping and first-token scoring that ignores padding."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentidistill.config import EngineConfig
from sentidistill.engines import GenerationRequest, build_engine
from sentidistill.engines.base import first_token_ids


@pytest.fixture(scope="module")
def engine(tiny_model: Path):
    eng = build_engine(EngineConfig(kind="hf", model=str(tiny_model), batch_size=4))
    yield eng
    eng.shutdown()


def test_generate_reports_tokens_and_length_finish(engine) -> None:
    reqs = [GenerationRequest(prompt="Hello there, how", max_new_tokens=5),
            GenerationRequest(messages=[{"role": "user", "content": "Rate: great food"}], max_new_tokens=5)]
    out = engine.generate(reqs)
    assert len(out) == 2
    for c in out:
        assert c.finish_reason in {"stop", "length"} and c.prompt_tokens > 0 and 0 < c.completion_tokens <= 5
    # a random tiny model rarely emits eos in 5 tokens: a full budget is reported as truncation
    assert any(c.finish_reason == "length" for c in out)


def test_greedy_generation_is_deterministic_across_batches(engine) -> None:
    a = engine.generate([GenerationRequest(prompt="The food was", max_new_tokens=6)])[0].text
    batch = engine.generate([GenerationRequest(prompt="x " * 30, max_new_tokens=6),
                             GenerationRequest(prompt="The food was", max_new_tokens=6)])
    assert batch[1].text == a


def test_scoring_is_padding_invariant(engine) -> None:
    short = "Sentence: good\nLabel:"
    alone = engine.score_next_token([short], [" negative", " positive"])[0]
    padded = engine.score_next_token(["Sentence: " + "long " * 40 + "\nLabel:", short], [" negative", " positive"])[1]
    assert alone == pytest.approx(padded, abs=1e-4)


def test_colliding_first_tokens_fail_loudly(engine) -> None:
    with pytest.raises(ValueError, match="share their first token"):
        first_token_ids(engine.tokenizer, [" not intimate", " not sure"])
