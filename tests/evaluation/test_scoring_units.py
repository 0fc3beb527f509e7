"""Scoring-mode plumbing of the eval: which mode a part uses, the other mode's fields, prompts that
do not fit (never cut, scored wrong), and the default context length."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentidistill.config import EngineConfig, load_config
from sentidistill.errors import ConfigError
from sentidistill.evaluation.items import Part, Protocol, TaskInputs, part_key
from sentidistill.evaluation.aggregate import part_result
from sentidistill.stages.evaluate import model_context
from sentidistill.tasks import TaskRegistry, load_registry


@pytest.fixture(scope="module")
def registry(shared_data: Path) -> TaskRegistry:
    return load_registry(data_dir=str(shared_data))


def proto(**over) -> Protocol:
    return Protocol(**{"k": None, "limit": 2, "chat": False, "max_new_tokens": 150, "max_model_len": 1000,
                       "scoring": None, **over})


def test_fits_counts_the_answer_budget(registry: TaskRegistry) -> None:
    imdb, atsa = registry.get("imdb"), registry.get("atsa_rest16")
    assert proto().fits(imdb, 999) and not proto().fits(imdb, 1000)  # one scored token
    assert proto().fits(atsa, 850) and not proto().fits(atsa, 851)  # + max_new_tokens
    assert proto(max_model_len=None).fits(imdb, 10**6) and proto().fits(imdb, None)  # unknown: sent as is


def test_part_key_follows_scoring_mode_and_context(registry: TaskRegistry) -> None:
    atsa = registry.get("atsa_rest16")
    keys = {part_key(atsa, 42, p, {}, {}, {}) for p in (proto(), proto(scoring="reference"),
                                                          proto(scoring="tolerant"), proto(max_model_len=2000))}
    assert len(keys) == 3  # unset = the task's own mode (reference): same key as reference


def test_part_result_writes_both_modes_and_counts_too_long(registry: TaskRegistry) -> None:
    task = registry.get("atsa_rest16").model_copy(update={"scoring": "tolerant"})
    test = registry.load_split("atsa_rest16", "test", limit=3)
    items = [{"idx": i, "prompt": f"p{i}", "prompt_tokens": 10, "candidates": None} for i in range(3)]
    outputs = {
        0: {"output": " []", "finish_reason": "stop", "dtype": "float32"},
        1: {"output": " [('sushi', 'Positive'), ('sushi', 'positive')]", "finish_reason": "stop", "dtype": "float32"},
        2: {"output": None, "finish_reason": "too_long", "dtype": None, "prompt_tokens": 5000},
    }
    r = part_result(Part(task, 42, "k"), TaskInputs(task, [], test), items, outputs, 1)
    m = r["metrics"]
    assert r["scoring"] == "tolerant" and r["prompts_too_long"] == 1 and m["prompts_too_long"] == 1.0
    assert m["score"] == pytest.approx(2 / 3)  # tolerant: one correct pair, de-duplicated; row 2 missed
    assert m["reference/score"] == round(m["reference/score_unrounded"], 4)
    assert m["reference/precision"] == 0.5 and m["reference/invalid_tuples"] == 1.0  # 'Positive' placeholder
    rec = {p["idx"]: p for p in r["predictions"]}
    assert rec[1]["parsed"] == [["sushi", "positive"]] and rec[1]["alt"]["parsed"] == [False, ["sushi", "positive"]]
    assert rec[2]["finish_reason"] == "too_long" and not rec[2]["correct"] and not rec[2]["alt"]["correct"]


def test_eval_scoring_config_and_default_context(tiny_model: Path) -> None:
    with pytest.raises(ConfigError, match="eval.scoring"):
        load_config(None, ["train.model.student=x", "eval.scoring=strict"])
    assert load_config(None, ["train.model.student=x"]).eval.engine.max_model_len is None
    assert model_context(EngineConfig(kind="hf"), tiny_model) == 4096  # the model's own context
    assert model_context(EngineConfig(kind="hf", max_model_len=512), tiny_model) == 512
    assert model_context(EngineConfig(kind="openai", openai={"base_url": "http://h/v1"}), None) is None
