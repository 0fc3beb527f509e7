"""The test-set guard: normalised whole-text matches, long test sentences inside longer texts, loud
errors listing the offending items, and the real SentiBench train/test overlaps it must absorb."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentidistill.errors import StageInputError
from sentidistill.icl import builder
from sentidistill.icl.leakage import LeakageGuard, normalize
from sentidistill.tasks import Example, load_registry

TESTS = [
    Example("sst2/test/1", "A masterpiece of quiet , aching sadness and hope .", "positive"),
    Example("asqp_rest16/test/2", "Good food .", []),
    Example("ssa_opener/test/3", "You get what you pay for .", []),
    Example("ssa_opener/test/4", ",", []),
]


def test_normalize() -> None:
    assert normalize("  Good   FOOD .\n") == "good food" == normalize("good food!!!")
    assert normalize("«It's fine», she said…") == "it's fine», she said"
    assert normalize(" ,. ") == ""


def test_whole_text_and_contained_matches() -> None:
    guard = LeakageGuard(TESTS, min_words=7)
    assert len(guard) == 3  # the punctuation-only item is not indexable
    assert guard.find("GOOD  food!").id == "asqp_rest16/test/2" and guard.find("Good food", whole_text=False) is None
    assert guard.find("Good food, bad service.") is None  # short: whole texts only
    assert guard.find("YOU get what you pay for!") is not None  # whole text, normalised
    assert guard.find("Cheap, and you get what you pay for here.") is None  # idiom inside a text: not a leak
    inside = "Review: A masterpiece of quiet, aching sadness and hope. Loved it."
    assert guard.find(inside).id == "sst2/test/1"
    assert guard.find("A masterpiece of quiet, aching sadness.") is None
    assert guard.find(",") is None and guard.find("") is None


def test_check_lists_the_offending_items() -> None:
    guard = LeakageGuard(TESTS, min_words=7)
    clean = ("mini", "mini/train/0", ("The soup was fine.", "Sentence: The soup was fine.\nLabel:"), ("positive",))
    short_answer = ("mini", "mini/train/1", ("Lovely.",), ("Good food!",))  # an answer, not a test input
    guard.check([clean, short_answer])
    planted = ("general", "general/0/7", ("Summarise:", "A masterpiece of quiet, aching sadness and hope!"), ("ok",))
    in_target = ("general", "general/0/8", ("Quote a critic.",),
                 ("They said: a masterpiece of quiet aching sadness and hope",))
    with pytest.raises(StageInputError) as e:
        guard.check([clean, planted, in_target, *[("mini", f"mini/train/{i}", ("good food",), ()) for i in range(11)]])
    msg = str(e.value)
    assert "13 built prompts or targets" in msg and "general/0/7" in msg and "general/0/8" in msg
    assert "A masterpiece of quiet" in msg and "sst2/test/1" in msg and "mini/train/7" in msg
    assert "mini/train/8" not in msg
    assert "... and 3 more" in msg and "icl.drop_test_overlap" in msg


def test_real_sentibench_overlaps_are_dropped_from_the_pools(shared_data: Path) -> None:
    registry = load_registry(data_dir=str(shared_data))
    guard = LeakageGuard.from_registry(registry, min_words=8)
    assert len(guard) > 10_000
    train = registry.load_split("acsa_rest16", "train")
    shared = [ex for ex in train if guard.find(ex.text) is not None]
    assert len(shared) == 10 and any(normalize(ex.text) == "good food" for ex in shared)
    pool = builder.build_pool(registry.get("acsa_rest16"), train, guard, drop_test_overlap=True)
    assert pool.counts["dropped_test_overlap"] == 10
    assert not guard.leaks(("acsa_rest16", ex.id, (ex.text,), ()) for ex in pool.examples)
