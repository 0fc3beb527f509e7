"""Metrics against hand-computed cases for each kind."""

from __future__ import annotations

import pytest

from sentidistill.tasks import Example, Parsed, TaskRegistry, agrees, parse_output, score, seed_summary, summarize
from sentidistill.tasks.ssa_f1 import space_token_spans

approx = pytest.approx


def _ex(gold, text: str = "t", raw: dict | None = None, i: int = 0) -> Example:
    return Example(f"e{i}", text, gold, raw=raw or {})


def test_macro_f1_hand_computed(registry: TaskRegistry) -> None:
    task = registry.get("imdb")
    examples = [_ex(g, i=i) for i, g in enumerate(["positive", "positive", "negative", "negative"])]
    preds = ["positive", "negative", "negative", None]  # None: no answer (a failed parse)
    m = score(task, examples, preds)
    # positive: P=1/1 R=1/2 F1=2/3; negative: P=1/2 R=1/2 F1=1/2
    assert m["score"] == m["macro_f1"] == approx((2 / 3 + 1 / 2) / 2)
    assert m["accuracy"] == 0.5 and m["invalid_rate"] == 0.25 and m["parse_failure_rate"] == 0.25
    assert m["f1/positive"] == approx(2 / 3) and m["n"] == 4


def test_macro_f1_label_outside_set_and_absent_labels(registry: TaskRegistry) -> None:
    task = registry.get("twitter17")  # labels negative, positive, neutral
    examples = [_ex("positive"), _ex("negative")]
    m = score(task, examples, [Parsed.of("POSITIVE"), Parsed.of("furious")])
    # 'furious' is wrong but adds no class; 'neutral' occurs nowhere and is left out (sklearn's label set)
    # positive: P=1 R=1 F1=1; negative: R=0 F1=0 -> macro 0.5
    assert m["score"] == approx(0.5) and m["invalid_rate"] == 0.5 and m["f1/neutral"] == 0.0


def test_tuple_micro_f1_hand_computed(registry: TaskRegistry) -> None:
    task = registry.get("atsa_rest16")
    examples = [
        _ex([("food", "positive"), ("service", "negative")], i=0),
        _ex([], i=1),
        _ex([("wine", "neutral")], i=2),
    ]
    outputs = ["[('food', 'positive'), ('food', 'Positive')]", "[]", "[('wine', 'negative'), ('x', 'bad')]"]
    preds = [parse_output(task, o) for o in outputs]
    m = score(task, examples, preds)
    # predicted pairs: (0, food+) and (2, wine-) -> 1 match; gold pairs: 3 -> P=1/2 R=1/3 F1=0.4
    assert (m["precision"], m["recall"]) == (approx(0.5), approx(1 / 3))
    assert m["score"] == approx(0.4) and m["dropped_tuples"] == 1 and m["parse_failure_rate"] == 0


def test_tuple_micro_f1_no_prediction_and_null_fields(registry: TaskRegistry) -> None:
    task = registry.get("asqp_rest16")
    examples = [_ex([("food quality", "NULL", "tasty", "positive")])]
    nothing = score(task, examples, [parse_output(task, "no idea")])
    assert (nothing["precision"], nothing["recall"], nothing["score"]) == (1.0, 0.0, 0.0)
    assert nothing["parse_failure_rate"] == 1.0
    hit = score(task, examples, [parse_output(task, "[('food quality', 'NULL', 'tasty', 'positive')]")])
    assert hit["score"] == 1.0
    empty = score(task, [_ex([])], [parse_output(task, "[]")])
    assert empty["score"] == 1.0  # no gold, nothing predicted: P = R = 1 (reference convention)


SENT = "The staff was very friendly but the room was dirty"
ROW = {"sentence": SENT, "opinions": [
    {"Source": [[], []], "Target": [["staff"], ["4:9"]], "Polar_expression": [["very friendly"], ["14:27"]],
     "Polarity": "Positive"},
    {"Source": [[], []], "Target": [["room"], ["36:40"]], "Polar_expression": [["dirty"], ["45:50"]],
     "Polarity": "Negative"},
]}


def test_ssa_weighted_graph_f1_hand_computed(registry: TaskRegistry) -> None:
    task = registry.get("ssa_opener")
    ex = Example("s", SENT, [], raw=ROW)
    pred = parse_output(task, "[('NULL', 'staff', 'friendly', 'positive'), ('NULL', 'the room', 'dirty', 'positive')]")
    m = score(task, [ex], [pred])
    # P: staff tuple matches with weight (1 + 1 + 1/1)/3 = 1, room tuple has the wrong polarity -> 1/2
    # R: gold staff tuple weight (1 + 1 + 1/2)/3 = 5/6, gold room unmatched -> 5/12; F1 = 5/11
    assert (m["precision"], m["recall"], m["score"]) == (approx(0.5), approx(5 / 12), approx(5 / 11))


def test_ssa_multi_span_null_and_no_opinion(registry: TaskRegistry) -> None:
    task = registry.get("ssa_opener")
    row = {"sentence": "Great pool and spa", "opinions": [
        {"Source": [[], []], "Target": [["pool", "spa"], ["6:10", "15:18"]],
         "Polar_expression": [["Great"], ["0:5"]], "Polarity": "Positive"}]}
    multi = Example("m", row["sentence"], [], raw=row)
    empty = Example("n", "We arrived at noon", [("NULL",) * 4], raw={"sentence": "We arrived at noon", "opinions": []})
    both = parse_output(task, "[('NULL', 'pool AND spa', 'Great', 'positive')]")
    none = parse_output(task, "[('NULL', 'NULL', 'NULL', 'NULL')]")
    assert score(task, [multi, empty], [both, none])["score"] == approx(1.0)  # the all-NULL answer is no tuple
    part = parse_output(task, "[('NULL', 'spa', 'Great', 'positive')]")
    # P: weight (1 + 1 + 1)/3 = 1; R: target overlap 1 of 2 tokens -> (1 + 1/2 + 1)/3 = 5/6; F1 = 10/11
    assert score(task, [multi], [part])["score"] == approx(10 / 11)
    assert score(task, [multi], [none])["score"] == 0.0


def test_ssa_locates_first_occurrence_like_the_scorer(registry: TaskRegistry, splits) -> None:
    """'special' occurs twice; a predicted string maps to its first occurrence, so the second
    opinion cannot be matched even when copied from the gold rendering (reference behaviour)."""
    task = registry.get("ssa_opener")
    ex = splits("ssa_opener", "train")[184]
    m = score(task, [ex], [Parsed.of(list(ex.gold))])
    assert m["recall"] == approx(2 / 3) and m["precision"] == approx(2 / 3)


def test_space_tokenizer_matches_nltk_spans() -> None:
    assert list(space_token_spans("a  b")) == [(0, 1), (2, 2), (3, 4)]
    assert list(space_token_spans(" a b ")) == [(1, 2), (3, 4)]


def test_agrees_summary_and_seed_spread(registry: TaskRegistry) -> None:
    atsa, imdb = registry.get("atsa_rest16"), registry.get("imdb")
    assert agrees(atsa, _ex([("food", "positive")]), parse_output(atsa, "[('food', 'Positive')]"))
    assert not agrees(atsa, _ex([("food", "positive")]), parse_output(atsa, "garbage"))
    assert agrees(imdb, _ex("negative"), "Negative") and not agrees(imdb, _ex("negative"), None)
    tasks = registry.select(None)
    scores = {t.name: 0.5 for t in tasks} | {"imdb": 0.9, "atsa_rest16": 0.1}
    s = summarize(scores, tasks)
    assert s["complete"] and s["score"] == approx(50.0)  # (10 * 0.5 + 0.9 + 0.1) / 12
    assert not summarize({"imdb": 1.0}, tasks)["complete"]
    assert s["by_category"] == {"basic": approx(60.0), "multifaceted": approx(50.0), "fine-grained": approx(40.0)}
    assert seed_summary([0.5, 0.7])["mean"] == approx(0.6) and seed_summary([0.5, 0.7])["std"] == approx(0.1)
