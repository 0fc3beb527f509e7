"""Generated over every shipped task YAML: loads, reads its real splits, renders gold and prompts."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sentidistill.tasks import TaskRegistry, build_prompt, classification_candidates, gold_text, load_spec, sample_demos
from sentidistill.tasks.registry import SPECS_DIR

SHIPPED = sorted(p for p in SPECS_DIR.rglob("*.yaml") if not p.name.startswith("_"))
# sentibench.md's table (test rows) and the train pools as shipped.
ROWS = {
    "imdb": (3000, 1000), "yelp2": (3000, 1000), "sst2": (3000, 1821), "twitter17": (3000, 1000),
    "irony18": (3000, 784), "emotion20": (3000, 1421), "pstance": (3000, 2157), "intimacy": (1287, 396),
    "atsa_rest16": (2000, 676), "acsa_rest16": (2000, 676), "asqp_rest16": (1264, 544), "ssa_opener": (1744, 499),
}


def test_twelve_task_files_are_shipped() -> None:
    assert len(SHIPPED) == 12
    assert {load_spec(p).name for p in SHIPPED} == set(ROWS)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_task(path: Path, registry: TaskRegistry, splits) -> None:
    spec = load_spec(path)
    assert spec == registry.get(spec.name) and spec.benchmark == "sentibench" and spec.source == path.resolve()
    assert 2 <= len(spec.paraphrases) <= 4
    train, test = splits(spec.name, "train"), splits(spec.name, "test")
    assert (len(train), len(test)) == ROWS[spec.name]
    assert len({ex.id for ex in test}) == len(test)

    for ex in train[:50]:
        rendered = gold_text(spec, ex)
        if spec.kind == "classify":
            assert ex.gold in spec.labels and rendered.startswith(str(ex.gold))
        else:
            assert rendered == repr(ex.gold) and all(len(t) == spec.tuple_arity for t in ex.gold)

    demos = sample_demos(spec, train, test[:3], seed=42)
    prompt = build_prompt(spec, demos[0], test[0])
    head, sep, body = prompt.partition("\n\nSentence: ")
    assert sep and "{target}" not in head
    assert head == spec.instruction.replace("{target}", test[0].target or "")
    blocks = ("Sentence: " + body).split("\n\n")
    assert len(blocks) == 5
    for block, demo in zip(blocks, demos[0]):
        assert block == f"Sentence: {demo.text}\nLabel: {gold_text(spec, demo)}"
    assert blocks[-1] == f"Sentence: {test[0].text}\nLabel:"

    if spec.kind == "classify":
        assert classification_candidates(spec) == [" " + lab for lab in spec.labels]


def test_demo_sampling_is_the_reference_draw(splits, registry: TaskRegistry) -> None:
    task = registry.get("sst2")
    train, test = splits("sst2", "train"), splits("sst2", "test")[:25]
    rng = random.Random(42)
    expected = [rng.sample(range(len(train)), 4) for _ in test]  # same draws: sample() only uses len()
    got = sample_demos(task, train, test, seed=42, k=4)
    assert [[train.index(d) for d in demos] for demos in got] == expected
    assert sample_demos(task, train, test, seed=52) != got
    assert sample_demos(task, train, test, seed=42, k=0) == [[] for _ in test]


def test_ssa_instruction_keeps_the_reference_trailing_space(registry: TaskRegistry) -> None:
    first_line = registry.get("ssa_opener").instruction.split("\n")[0]
    assert first_line.endswith("sentiment polarity). ")


def test_atsa_gold_follows_the_reference_order(splits) -> None:
    """Rest16 stores offsets as strings; the reference sorts them as strings and drops NULL terms."""
    by_id = {ex.raw["ID"]: ex for ex in splits("atsa_rest16", "train")}
    for ex in by_id.values():
        kept = [a for a in ex.raw["aspects"] if a["target"] != "NULL"]
        assert len(ex.gold) == len({(a["target"], a["polarity"], a["from"], a["to"]) for a in kept})
    implicit_only = [ex for ex in by_id.values()
                     if ex.raw["aspects"] and all(a["target"] == "NULL" for a in ex.raw["aspects"])]
    assert implicit_only and all(ex.gold == [] for ex in implicit_only)
    assert by_id["1041457:2"].gold == [("Thai fusion stuff", "negative"), ("food", "negative")]  # "31" < "4"
