"""hf engine on the tiny model: generation bookkeeping and first-token scoring that ignores padding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sentidistill.config import EngineConfig
from sentidistill.engines import GenerationRequest, build_engine
from sentidistill.engines.base import first_token_ids
from sentidistill.engines.hf import token_batches
from sentidistill.engines.prefix_cache import PrefixCache


@pytest.fixture(scope="module")
def engine(tiny_model: Path):
    eng = build_engine(EngineConfig(kind="hf", model=str(tiny_model), resources={"batch_size": 4}))
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


def test_seeded_sampling_is_batched_and_each_row_ignores_its_neighbours(engine, monkeypatch) -> None:
    def req(prompt: str, seed: int | None) -> GenerationRequest:
        return GenerationRequest(prompt=prompt, max_new_tokens=8, temperature=1.0, top_p=0.95, seed=seed)

    alone = [engine.generate([req("The food was", s)])[0].text for s in (1, 2)]
    calls: list[int] = []
    generate = engine.model.generate
    monkeypatch.setattr(engine.model, "generate", lambda **kw: calls.append(len(kw["input_ids"])) or generate(**kw))
    batch = engine.generate([req("x " * 30, 5), req("The food was", 1), req("The food was", 2), req("Hi", 7)])
    assert calls == [4]  # one call for the four seeded rows (batch_size 4), not one per row
    assert [batch[1].text, batch[2].text] == alone  # the same draws as alone, whatever the neighbours
    assert alone[0] != alone[1]  # and the seed decides them
    unseeded = engine.generate([req("The food was", None) for _ in range(3)])
    assert len({c.text for c in unseeded}) > 1  # without a seed, rows still sample independently


def test_scoring_is_padding_invariant(engine) -> None:
    short = "Sentence: good\nLabel:"
    alone = engine.score_next_token([short], [" negative", " positive"])[0]
    padded = engine.score_next_token(["Sentence: " + "long " * 40 + "\nLabel:", short], [" negative", " positive"])[1]
    assert alone == pytest.approx(padded, abs=1e-4)


def test_colliding_first_tokens_fail_loudly(engine) -> None:
    with pytest.raises(ValueError, match="share their first token"):
        first_token_ids(engine.tokenizer, [" not intimate", " not sure"])


def test_prefix_cache_assigns_shared_prefixes() -> None:
    cache = PrefixCache(max_entries=2, min_tokens=3)
    a, b, c = (1, 2, 3, 4, 5, 9), (1, 2, 3, 4, 6), (1, 2, 3, 4, 7, 7)
    assert cache.assign([a]) == [None]  # nothing seen yet
    assert cache.assign([b, c]) == [(1, 2, 3, 4), (1, 2, 3, 4)]  # LCP with a recent prompt, then the stored one
    assert cache.assign([(1, 2, 3, 4)]) == [(1, 2, 3)]  # a prompt is never its own prefix: one token must run
    assert cache.assign([(8, 8, 1)]) == [None]  # shares fewer than min_tokens with anything
    cache.assign([(5, 5, 5, 5, 1), (5, 5, 5, 5, 2)])
    assert len(cache.entries) == 2 and (1, 2, 3, 4) not in cache.entries  # LRU: the oldest went
    assert PrefixCache(max_entries=0, min_tokens=1).assign([a, a]) == [None, None]


def test_prefix_cached_scores_equal_whole_prompt_scores(tiny_model: Path) -> None:
    """Mixed batch: two long shared instructions, a short unrelated prompt; chunks cross groups; order kept."""
    def prompts(instruction: str) -> list[str]:
        demos = "".join(f"Sentence: demo {i} was {'great' if i % 2 else 'awful'}\nLabel: x\n\n" for i in range(4))
        return [f"{instruction}\n\n{demos}Sentence: {q}\nLabel:" for q in ("lovely", "cold soup and rude staff", "ok")]

    batch = [*prompts("Classify the sentiment of the sentence as positive or negative, please."),
             "short one", *prompts("Decide whether the review expresses joy, anger or sadness about the service.")]
    cached = build_engine(EngineConfig(kind="hf", model=str(tiny_model), resources={"batch_size": 2}))
    plain = build_engine(EngineConfig(kind="hf", model=str(tiny_model), resources={"batch_size": 2},
                                      hf={"prefix_cache_entries": 0}))
    want = plain.score_next_token(batch, ["positive", "negative"])
    for _ in range(2):  # first call registers the prefixes, the second reuses them
        got = cached.score_next_token(batch, ["positive", "negative"])
        assert len(got) == len(want)
        assert torch.allclose(torch.tensor(got), torch.tensor(want), atol=1e-5, rtol=0), (got, want)
    assert cached.prefix_cache.hits >= 8 and len(cached.prefix_cache.entries) >= 2
    assert plain.prefix_cache.hits == 0


def test_token_batches_keep_order_rows_and_padded_size() -> None:
    lengths = [900, 800, 300, 250, 200, 100, 100, 2500, 50]
    batches = token_batches(list(range(len(lengths))), lengths, max_rows=4, max_tokens=1000)
    assert [i for b in batches for i in b] == list(range(len(lengths)))  # every prompt once, in order
    for b in batches:
        padded = max(lengths[i] for i in b) * len(b)
        assert len(b) <= 4 and (padded <= 1000 or len(b) == 1), (b, padded)
    assert [7] in batches  # over the budget: alone
    assert token_batches([0, 1, 2, 3, 4], [9] * 5, max_rows=2, max_tokens=None) == [[0, 1], [2, 3], [4]]


def test_token_budget_changes_batches_not_scores(tiny_model: Path) -> None:
    prompts = ["Sentence: " + "long " * n + "\nLabel:" for n in (60, 50, 5, 4, 3, 2)]
    rows = build_engine(EngineConfig(kind="hf", model=str(tiny_model), resources={"batch_size": 6},
                                     hf={"prefix_cache_entries": 0}))
    budget = build_engine(EngineConfig(kind="hf", model=str(tiny_model), hf={"prefix_cache_entries": 0},
                                       resources={"batch_size": 6, "max_batch_tokens": 80}))
    calls: list[tuple[int, ...]] = []
    forward = budget.model.forward
    budget.model.forward = lambda *a, **kw: calls.append(tuple(kw["input_ids"].shape)) or forward(*a, **kw)
    want = rows.score_next_token(prompts, [" negative", " positive"])
    got = budget.score_next_token(prompts, [" negative", " positive"])
    assert torch.allclose(torch.tensor(got), torch.tensor(want), atol=1e-4, rtol=0)
    assert len(calls) >= 3 and all(n * width <= 80 or n == 1 for n, width in calls), calls


def test_generate_async_default_awaits_the_blocking_generate(engine) -> None:
    import asyncio

    req = [GenerationRequest(prompt="The food was", max_new_tokens=4)]
    assert asyncio.run(engine.generate_async(req))[0].text == engine.generate(req)[0].text
