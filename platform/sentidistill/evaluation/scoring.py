"""Both scoring modes of one part: per-item predictions and the metrics of `reference` and `tolerant`.

The active mode (`task.scoring`, resolved by the stage from `eval.scoring` or the task) fills a
part's `metrics` and each record's `parsed`/`correct`; the other mode is written next to it
(`<mode>/<metric>` in the metrics, `alt` in each record), so both are seen without rerunning a model.

Classification: tolerant = argmax of the raw label logits; reference = argmax after the model's
generation_config logits processors (the engine caller applies them; `processed_scores`).
Extraction: tolerant = the task's parser (`tasks.parse_output`); reference = the upstream parser
(`tasks.reference`). An item whose prompt did not fit the model (`finish_reason` 'too_long') was
never run: it is wrong in both modes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sentidistill.tasks import Example, Parsed, TaskSpec, agrees, parse_output
from sentidistill.tasks.metrics import Metrics
from sentidistill.tasks.reference import SCORINGS, RefParsed, Scoring, reference_correct, reference_parse, scorer

TOO_LONG = "too_long"


@dataclass(frozen=True)
class ItemScore:
    """One item in one mode: what the metric consumes, its JSON form, and whether it matches gold."""

    prediction: Any
    parsed: Any
    failed: bool
    correct: bool


def jsonable(value: Any) -> Any:
    """Parsed values for JSON: tuples become lists; anything else model output can parse into
    (sets, bytes, complex numbers in a raw reference list) becomes its repr."""
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, str | bool | int | float):
        return value
    return repr(value)


def _argmax(labels: list[str], values: list[float | None] | None) -> str | None:
    known = [(v, -j) for j, v in enumerate(values or []) if v is not None]
    return labels[-max(known)[1]] if known else None


def _label_item(task: TaskSpec, ex: Example, label: str | None) -> ItemScore:
    p = Parsed.of(label)
    return ItemScore(p, label, p.failed, agrees(task, ex, p))


def item_scores(task: TaskSpec, ex: Example, out: dict[str, Any], prompt: str | None = None,
                k: int = 0) -> dict[Scoring, ItemScore]:
    """Both modes' reading of one engine output row (`prompt`, `k`: see `tasks.reference.reference_parse`)."""
    too_long = out.get("finish_reason") == TOO_LONG
    if task.kind == "classify":
        raw = None if too_long or out.get("scores") is None else json.loads(out["scores"])
        processed = json.loads(out["processed_scores"]) if out.get("processed_scores") else raw
        return {"tolerant": _label_item(task, ex, _argmax(task.labels, raw)),
                "reference": _label_item(task, ex, _argmax(task.labels, processed))}
    text = "" if too_long else out.get("output") or ""
    tol = Parsed([], failed=True) if too_long else parse_output(task, text)
    ref = RefParsed([], "", failed=True) if too_long else reference_parse(task, text, ex.text, prompt, k)
    return {
        "tolerant": ItemScore(tol, jsonable(tol.value), tol.failed, agrees(task, ex, tol)),
        "reference": ItemScore(ref, jsonable(ref.value), ref.failed, not too_long and reference_correct(task, ex, ref)),
    }


def other_mode(mode: Scoring) -> Scoring:
    return next(m for m in SCORINGS if m != mode)


def part_metrics(task: TaskSpec, test: list[Example], items: list[dict[Scoring, ItemScore]], mode: Scoring,
                 too_long: int) -> Metrics:
    """The active mode's metrics, the other mode's as '<mode>/<metric>', and the too-long count."""
    alt = other_mode(mode)
    active = scorer(mode)(task, test, [it[mode].prediction for it in items])
    other = scorer(alt)(task, test, [it[alt].prediction for it in items])
    return {**active, **{f"{alt}/{k}": v for k, v in other.items()}, "prompts_too_long": float(too_long)}


def record_fields(mode: Scoring, scores: dict[Scoring, ItemScore]) -> dict[str, Any]:
    """A prediction record's mode-dependent fields."""
    alt = other_mode(mode)
    return {"scoring": mode, "parsed": scores[mode].parsed, "parse_failed": scores[mode].failed,
            "correct": scores[mode].correct,
            "alt": {"scoring": alt, "parsed": scores[alt].parsed, "correct": scores[alt].correct}}


def stored_prediction(task: TaskSpec, record: dict[str, Any]) -> Any:
    """What the active metric consumes, back from a stored record (the bootstrap resamples these):
    reference extraction re-parses the raw output; otherwise the stored parsed value."""
    if record.get("scoring") == "reference" and task.kind == "extract":
        return "" if record.get("finish_reason") == TOO_LONG else record["raw_output"]
    value = record["parsed"]
    if isinstance(value, list):
        value = [tuple(v) if isinstance(v, list) else v for v in value]
    return Parsed(value, failed=bool(record["parse_failed"]))
