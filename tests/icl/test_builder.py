"""Prompt construction: seeded determinism, every diversification value appears, demonstrations never
the query, pools, task mix, holdout, general data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sentidistill.config import ICLConfig, PipelineConfig
from sentidistill.errors import ConfigError, StageInputError
from sentidistill.icl import builder
from sentidistill.icl.leakage import LeakageGuard
from sentidistill.tasks import Example, PromptVariant, TaskRegistry, build_prompt, gold_text, load_registry
from sentidistill.tasks.variant import FIELD_NAME_PAIRS

from icl_helpers import write_jsonl


@pytest.fixture(scope="module")
def registry(user_tasks: Path) -> TaskRegistry:
    return load_registry(PipelineConfig(train={"model": {"student": "x"}}, tasks={"extra_files": [str(user_tasks)]}))


def items_for(registry: TaskRegistry, name: str, n: int, **icl: object) -> list[builder.Item]:
    cfg = ICLConfig.model_validate(icl)
    no_tests = LeakageGuard([], min_words=8)
    pool = builder.build_pool(registry.get(name), registry.load_split(name, "train"), no_tests, True)
    return builder.task_items(pool, n, cfg)


def test_same_seed_same_prompts_other_seed_other_prompts(registry: TaskRegistry) -> None:
    a = items_for(registry, "mini", 12, seed=3)
    b = items_for(registry, "mini", 12, seed=3)
    assert [(i.id, i.prompt, i.gold, i.variant_key) for i in a] == [(i.id, i.prompt, i.gold, i.variant_key) for i in b]
    c = items_for(registry, "mini", 12, seed=4)
    assert [i.prompt for i in a] != [i.prompt for i in c]
    assert len({i.id for i in a}) == 12 and len({i.source_id for i in a}) == 12  # each row is a query once


def test_prompts_are_the_registry_rendering_and_demos_never_the_query(registry: TaskRegistry) -> None:
    task = registry.get("mini")
    train = {ex.id: ex for ex in registry.load_split("mini", "train")}
    for item in items_for(registry, "mini", 40, k_max=4, seed=1):
        demos = [train[d] for d in item.meta["demo_ids"]]
        assert item.source_id not in item.meta["demo_ids"] and item.query is not None
        assert item.query.text not in {d.text for d in demos}
        assert len(demos) == item.variant.k and len(set(item.meta["demo_ids"])) == len(demos)
        assert item.prompt == build_prompt(task, demos, item.query, PromptVariant.from_key(item.variant_key))
        assert item.gold == gold_text(task, item.query, item.variant)


def test_every_variant_value_appears(registry: TaskRegistry) -> None:
    items = items_for(registry, "mini", 40, k_max=3, seed=0,
                      diversify={"field_names": 0.8, "instruction_paraphrase": 0.8, "label_casing": 0.6,
                                 "vary_k": 0.9})
    items += items_for(registry, "mini_absa", 30, k_max=3, seed=0, diversify={"json_output": 0.5})
    seen: dict[str, set[str]] = {}
    for item in items:
        for dim, value in builder.variant_dimensions(item).items():
            seen.setdefault(dim, set()).add(value)
    assert seen["field_names"] == {f"{i} {o}" for i, o in FIELD_NAME_PAIRS}
    assert seen["io_sep"] == {"newline", "' '"}
    assert seen["instruction"] == {"canonical", "paraphrase 0", "paraphrase 1", "paraphrase 2"}
    assert seen["label_case"] == {"as_is", "upper", "title"}
    assert seen["output_format"] == {"python", "json"}
    assert seen["k"] == {"0", "1", "2", "3"}
    upper = next(i for i in items if i.variant and i.variant.label_case == "upper")
    assert upper.gold.isupper() and "'NEGATIVE'" in upper.prompt
    as_json = next(i for i in items if i.variant and i.variant.output_format == "json")
    assert json.loads(as_json.gold)[0].keys() == {"aspect", "polarity"} and "JSON list" in as_json.prompt


def test_switches_off_give_the_benchmark_layout(registry: TaskRegistry) -> None:
    off = {"field_names": 0, "instruction_paraphrase": 0, "label_casing": 0, "json_output": 0, "vary_k": 0}
    items = items_for(registry, "mini", 10, k_max=2, diversify=off)
    assert {i.variant_key for i in items} == {'{"k": 2}'}
    assert all(i.prompt.endswith("\nLabel:") and i.prompt.count("Sentence: ") == 3 for i in items)


def test_adding_a_task_keeps_other_tasks_prompts(registry: TaskRegistry, tmp_path: Path) -> None:
    cfg = ICLConfig(examples_per_task=5, seed=7)
    guard = LeakageGuard([], min_words=8)

    def build(names: list[str]) -> dict[str, list[str]]:
        out = {}
        for name in names:
            pool = builder.build_pool(registry.get(name), registry.load_split(name, "train"), guard, True)
            out[name] = [i.prompt for i in builder.task_items(pool, 5, cfg)]
        return out

    assert build(["mini"])["mini"] == build(["mini_absa", "mini"])["mini"]


def test_pool_drops_duplicates_and_test_sentences_and_caps_k(registry: TaskRegistry) -> None:
    task = registry.get("mini")
    rows = [Example(f"mini/train/{i}", t, "positive") for i, t in
            enumerate(["Great soup!", "great   SOUP", "The cake was a crime against baking.", "Fine tea."])]
    guard = LeakageGuard([Example("x/test/0", "the cake was a crime against baking", "negative")], min_words=3)
    pool = builder.build_pool(task, rows, guard, drop_test_overlap=True)
    assert pool.counts == {"train_rows": 4, "dropped_test_overlap": 1, "duplicates": 1, "pool": 2}
    items = builder.task_items(pool, 10, ICLConfig(k_max=4, diversify={"vary_k": 0}))
    assert len(items) == 2 and all(i.variant.k == 1 for i in items)  # k capped at pool - 1, one query per row
    kept = builder.build_pool(task, rows, guard, drop_test_overlap=False)
    assert kept.counts["dropped_test_overlap"] == 0 and kept.counts["pool"] == 3
    with pytest.raises(StageInputError, match="no usable train rows"):
        builder.build_pool(task, rows[2:3], guard, drop_test_overlap=True)


def test_holdout_and_task_mix(registry: TaskRegistry) -> None:
    icl = ICLConfig(holdout_tasks=["imdb", "pstance"], task_weights={"sst2": 0.5, "yelp2": 0})
    names = [t.name for t in builder.select_tasks(icl, registry)]
    assert len(names) == 10 and "imdb" not in names and "pstance" not in names and "mini" not in names
    counts = builder.task_counts(builder.select_tasks(icl, registry), icl.model_copy(update={"examples_per_task": 10}))
    assert counts["sst2"] == 5 and counts["yelp2"] == 0 and counts["twitter17"] == 10
    with pytest.raises(ConfigError, match=r"icl.holdout_tasks: Unknown task 'imbd'.*Did you mean 'imdb'"):
        builder.select_tasks(ICLConfig(holdout_tasks=["imbd"]), registry)
    with pytest.raises(ConfigError, match="no task left"):
        builder.select_tasks(ICLConfig(tasks=["mini"], holdout_tasks=["mini"]), registry)


def test_general_data_rows_prompts_and_share(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "general.jsonl", [
        {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
        {"instruction": "Name a primary colour.", "output": "Red"},
        {"instruction": "Translate to French.", "input": "cat", "output": "chat"},
    ])
    rows = builder.read_general([str(path)], None, None)
    assert [r["source_id"] for r in rows] == ["general/0/0", "general/0/1", "general/0/2"]
    items = builder.general_items(rows, 2, seed=0)
    assert items == builder.general_items(rows, 2, seed=0) and len({i.id for i in items}) == 2
    by_source = {i.source_id: i for i in builder.general_items(rows, 3, seed=0)}
    assert by_source["general/0/0"].prompt == "Add the numbers.\n\nInput: 2 and 3\nOutput:"
    assert by_source["general/0/1"].prompt == "Name a primary colour.\n\nOutput:"
    assert by_source["general/0/1"].gold == "Red" and by_source["general/0/1"].perspective == "general"
    assert builder.general_count(90, 0.1, 100) == 10 and builder.general_count(90, 0.1, 4) == 4
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"instruction": "x", "output": "y"}, {"instruction": "no answer"}])
    with pytest.raises(StageInputError, match=r"bad.jsonl: line 2: missing or empty \['output'\]"):
        builder.read_general([str(bad)], None, None)
    with pytest.raises(StageInputError, match=r"icl.general_data\[0\]: file .*nope.jsonl' not found"):
        builder.read_general([str(tmp_path / "nope.jsonl")], None, None)
