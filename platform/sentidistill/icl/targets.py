"""ICLDist targets: the teacher's completion -> training target, QC verdict and agreement with gold.

The target is what follows the prompt's last output field, so it starts with a space, exactly as
demonstrations show answers ('Label: positive'): the student learns the token ' positive', the
one evaluation scores. A teacher that goes on inventing the next demonstration is cut to its
first answer line (the line the task's parser reads); the raw completion stays in `meta`.

QC, first failing reason wins: the shared `QualityFilter` (empty, truncated, refused,
repetitive) -> 'test_leak' (the answer holds a long SentiBench test sentence) -> 'unparseable' (the
task's parser cannot read it; with quality.run_checks) -> 'disagrees_with_gold' (target
teacher_agree_gold only). Agreement is recorded for every teacher answer (classify: label
equality; extract: exact tuple-set equality plus tuple counts for a micro-F1), whatever the target.
"""

from __future__ import annotations

import json
from typing import Any

from sentidistill.config import ICLConfig
from sentidistill.generation.quality import KEPT, QualityFilter
from sentidistill.icl.builder import Item
from sentidistill.icl.leakage import LeakageGuard
from sentidistill.tasks import Parsed, agrees, parse_output
from sentidistill.tasks.metrics import normalize_tuples
from sentidistill.tasks.parsers import answer_text, first_line
from sentidistill.tasks.variant import field_names

GOLD_ENGINE = "gold"
DISAGREES, UNPARSEABLE, TEST_LEAK = "disagrees_with_gold", "unparseable", "test_leak"


def as_target(answer: str) -> str:
    """The training target: the answer after the output field, with the demonstrations' leading space."""
    answer = answer.strip()
    return f" {answer}" if answer else ""


def answer_line(item: Item, completion: str) -> str:
    """The part of a completion that is the answer: task rows -> first answer line; general -> all."""
    if item.task is None or item.variant is None:
        return completion.strip()
    return first_line(answer_text(completion, *field_names(item.task, item.variant)))


def agreement(item: Item, parsed: Parsed) -> dict[str, Any]:
    """Does the parsed answer match the query's gold? Extraction adds tuple counts (tp, pred, gold)."""
    assert item.task is not None and item.query is not None
    record: dict[str, Any] = {"agrees": agrees(item.task, item.query, parsed), "parse_failed": parsed.failed}
    if item.task.kind == "extract":
        gold = set(normalize_tuples(item.query.gold))  # type: ignore[arg-type]
        pred = set(normalize_tuples(parsed.value or []))  # type: ignore[arg-type]
        record.update(tp=len(gold & pred), n_pred=len(pred), n_gold=len(gold))
    return record


class Judge:
    """Built once per stage run in the driver; `__call__` finishes one answered row in place."""

    def __init__(self, icl: ICLConfig, guard: LeakageGuard, items: dict[str, Item]):
        self.icl, self.guard, self.items = icl, guard, items
        self.quality = QualityFilter(icl.quality)

    def __call__(self, row: dict[str, Any]) -> None:
        item = self.items[row["id"]]
        completion = row["response"] or ""
        answer = answer_line(item, completion)
        trimmed = answer != completion.strip()
        # A cut answer ended at its line: hitting the token limit later does not truncate it.
        verdict = self.quality.verdict(answer, "stop" if trimmed else row["finish_reason"])
        meta = dict(item.meta)
        if trimmed:
            meta["raw_response"] = completion
        if verdict == KEPT and self.guard.find(answer, whole_text=False) is not None:
            verdict = TEST_LEAK
        if item.task is not None:
            parsed = parse_output(item.task, answer, item.variant)
            meta.update(agreement(item, parsed))
            if verdict == KEPT and self.icl.quality.run_checks and parsed.failed:
                verdict = UNPARSEABLE
            if verdict == KEPT and self.icl.target == "teacher_agree_gold" and not meta["agrees"]:
                verdict = DISAGREES
        row.update(response=as_target(answer), qc=verdict, meta=json.dumps(meta, ensure_ascii=False))


def gold_row(work: dict[str, Any], item: Item) -> dict[str, Any]:
    """A finished row whose target is the gold answer: no engine call, nothing to filter."""
    return {**work, "response": as_target(item.gold), "finish_reason": GOLD_ENGINE, "prompt_tokens": 0,
            "completion_tokens": 0, "teacher": GOLD_ENGINE, "engine": GOLD_ENGINE, "latency_s": 0.0, "qc": KEPT}
