"""What the four upstream extraction scorers share: answer extraction, line cleanup, micro-F1.

Upstream = HITSZ-HLT/Sentiment-Distillation (`fsa.py`, `parse_utils/*.py`). Every function here
reproduces one step of it, harsh parts included; the docstrings name the upstream step.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RefParsed:
    """One answer as the reference keeps it.

    `value`: the predicted items exactly as the reference counts them (ATSA/ACSA keep `False`
    placeholders for invalid tuples; SSA keeps the raw tuples its graph conversion reads).
    `failed`: nothing could be parsed (the reference's `[]` after an exception).
    `crashed`: the upstream code would raise here (a non-string field); we score no tuples.
    `repaired`: the list was cut after its last ')' and closed (ACSA/ASQP then keep at most 3).
    """

    value: list[Any]
    text: str
    failed: bool
    crashed: bool = False
    repaired: bool = False


def answer_pattern(input_name: str = "Sentence:", output_name: str = "Label:") -> re.Pattern[str]:
    """fsa.py `extract_labels_from_text`: after the output field, up to the next input field or newline."""
    return re.compile(rf"{re.escape(output_name)}\s*(.*?)(?=\s*(?={re.escape(input_name)}|\n|$))", re.DOTALL)


def reference_answer(completion: str, input_name: str = "Sentence:", output_name: str = "Label:",
                     prompt: str | None = None, k: int = 0) -> str:
    """The query's answer. Upstream runs the regex over prompt + completion and takes match k (the
    query's own field after k demonstrations); the prompt ends with that field, so without a prompt
    this matches output_name + completion (equal unless a prompt sentence contains the field name)."""
    text, k = (output_name + completion, 0) if prompt is None else (prompt + completion, k)
    matches = answer_pattern(input_name, output_name).findall(text)
    return matches[k] if k < len(matches) else ""


def clean_line(answer: str, drop: str | None = None) -> str:
    """parse_utils: strip code fences, rejoin a bracket split over lines, keep the LAST line,
    (ATSA/ACSA only) delete every `drop` string (an echoed 'Label:'), strip."""
    s = answer.replace("```python", "").replace("```", "").strip()
    s = s.replace("\n]", "]").replace("[\n", "[").split("\n")[-1]
    if drop is not None:
        s = s.replace(drop, "")
    return s.strip()


def repair(text: str) -> str:
    """The ACSA/ASQP/SSA fallback for an unparseable list: cut after the last ')' and close it."""
    cut = text.rfind(")")
    return (text[: cut + 1] if cut != -1 else text) + "]"


def distinct(items: Any) -> list[Any]:
    """`set(items)` in a fixed order. Upstream iterates a set here, whose order follows Python's
    per-process string hashing (PYTHONHASHSEED), so which 3 tuples a repaired ACSA/ASQP answer keeps
    changes from run to run. We sort the distinct items by their repr: fixed, and (unlike the order
    of appearance, where models put their surest tuples first) no better or worse for a model than
    an arbitrary hash order. Raises TypeError on unhashable items, as `set` does."""
    return sorted(set(items), key=repr)


def micro_f1(golds: Sequence[Sequence[Any]], preds: Sequence[Sequence[Any]]) -> tuple[float, float, float]:
    """parse_utils `F1Measure`: every (item, prediction) counts, duplicates included; a prediction
    is a hit when it equals one of its item's gold tuples (and vice versa for recall). Precision is
    1 with no predictions, recall 1 with no gold. Returns (f1, precision, recall)."""
    n_pred = n_gold = hit_p = hit_g = 0
    for gold, pred in zip(golds, preds, strict=True):
        gold, pred = list(gold), list(pred)
        n_pred += len(pred)
        n_gold += len(gold)
        hit_p += sum(p in gold for p in pred)
        hit_g += sum(g in pred for g in gold)
    precision = hit_p / n_pred if n_pred else 1
    recall = hit_g / n_gold if n_gold else 1
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0
    return f1, precision, recall
