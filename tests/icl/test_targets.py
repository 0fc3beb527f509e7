"""Teacher answers -> targets, QC verdicts and agreement with gold, on a small hand-made example whose
counts are known: 6 classification answers (3 agree, one of them leaks a test sentence) and 3
extraction answers (2 agree, tuple F1 8/9)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sentidistill.config import ICLConfig, PipelineConfig
from sentidistill.icl.builder import Item
from sentidistill.icl.leakage import LeakageGuard
from sentidistill.icl.summary import agreement_rates
from sentidistill.icl.targets import Judge, gold_row
from sentidistill.tasks import CANONICAL, Example, PromptVariant, TaskSpec, build_prompt, gold_text, load_registry

JSON = PromptVariant(output_format="json", k=0)
LEAK = "A masterpiece of quiet, aching sadness and hope"


def make_item(task: TaskSpec, n: int, gold: Any, variant: PromptVariant = CANONICAL) -> Item:
    query = Example(f"{task.name}/train/{n}", f"Sentence number {n} about dinner.", gold)
    return Item(id=f"{task.name}-{n}", source_id=query.id, perspective=task.name, variant_key=variant.key(),
                prompt=build_prompt(task, [], query, variant), gold=gold_text(task, query, variant), inputs=(),
                meta={"task": task.name, "query_id": query.id, "demo_ids": []}, task=task, query=query,
                variant=variant)


@pytest.fixture(scope="module")
def cases(user_tasks: Path) -> list[tuple[Item, str, str]]:
    """(item, teacher completion, finish reason)."""
    reg = load_registry(PipelineConfig(train={"model": {"student": "x"}}, tasks={"extra_files": [str(user_tasks)]}))
    mini, absa = reg.get("mini"), reg.get("mini_absa")
    return [
        (make_item(mini, 1, "positive"), " positive\n\nSentence: Visit 9: the tea was cold.\nLabel: no", "length"),
        (make_item(mini, 2, "negative"), " NEGATIVE", "stop"),
        (make_item(mini, 3, "positive"), " I cannot tell from this.", "stop"),
        (make_item(mini, 4, "negative"), " positive", "stop"),
        (make_item(mini, 5, "positive"), "", "stop"),
        (make_item(absa, 6, [("soup", "positive"), ("cake", "negative")]),
         " [('cake', 'negative'), ('soup', 'positive')]", "stop"),
        (make_item(absa, 7, [("tea", "positive"), ("rice", "negative")]), " [('tea', 'positive')]", "stop"),
        (make_item(absa, 8, [("fish", "neutral")], JSON), ' [{"aspect": "fish", "polarity": "neutral"}]', "stop"),
        (make_item(mini, 9, "positive"), f" positive, as in '{LEAK}'", "stop"),
    ]


def judged(cases: list[tuple[Item, str, str]], target: str) -> list[dict[str, Any]]:
    guard = LeakageGuard([Example("sst2/test/1", LEAK + " .", "positive")], min_words=7)
    judge = Judge(ICLConfig(target=target), guard, {it.id: it for it, _, _ in cases})
    rows = []
    for item, completion, finish in cases:
        row = {"id": item.id, "perspective": item.perspective, "response": completion, "finish_reason": finish,
               "engine": "hf", "meta": None}
        judge(row)
        rows.append(row)
    return rows


def test_agree_filter_verdicts_and_targets(cases: list[tuple[Item, str, str]]) -> None:
    rows = judged(cases, "teacher_agree_gold")
    assert [r["qc"] for r in rows] == ["kept", "kept", "unparseable", "disagrees_with_gold", "empty", "kept",
                                       "disagrees_with_gold", "kept", "test_leak"]
    assert rows[0]["response"] == " positive"  # cut to the answer line; not 'truncated'
    assert json.loads(rows[0]["meta"])["raw_response"].startswith(" positive\n\nSentence: Visit 9")
    assert rows[1]["response"] == " NEGATIVE" and "raw_response" not in json.loads(rows[1]["meta"])
    meta = json.loads(rows[5]["meta"])
    assert meta | {"agrees": True, "tp": 2, "n_pred": 2, "n_gold": 2} == meta


def test_agreement_counts_per_task(cases: list[tuple[Item, str, str]]) -> None:
    rates = agreement_rates(judged(cases, "teacher_agree_gold"))
    assert rates["mini"] == {"judged": 6, "agree": 3, "rate": 0.5, "parse_failures": 2}
    assert rates["mini_absa"] == {"judged": 3, "agree": 2, "rate": 0.6667, "parse_failures": 0,
                                  "tuple_f1": round(2 * 1.0 * 0.8 / 1.8, 4)}


def test_plain_teacher_target_keeps_disagreeing_answers(cases: list[tuple[Item, str, str]]) -> None:
    rows = judged(cases, "teacher")
    assert [r["qc"] for r in rows] == ["kept", "kept", "unparseable", "kept", "empty", "kept", "kept", "kept",
                                       "test_leak"]
    assert agreement_rates(rows) == agreement_rates(judged(cases, "teacher_agree_gold"))


def test_gold_rows_need_no_engine(cases: list[tuple[Item, str, str]]) -> None:
    item = cases[7][0]
    row = gold_row({"id": item.id}, item)
    assert row["response"] == ' [{"aspect": "fish", "polarity": "neutral"}]' and row["qc"] == "kept"
    assert row["engine"] == row["teacher"] == "gold" and row["completion_tokens"] == 0
    assert agreement_rates([{**row, "perspective": item.perspective, "meta": "{}"}]) == {}
