"""Output parsers (closed registry `PARSERS`): generated text -> label or list of tuples.

Parsers read a completion only (not the prompt). Model output is data: parsed with
`ast.literal_eval` or `json`, never evaluated. A `Parsed` says whether parsing failed and how many
tuples were dropped, so metrics can report parse-failure rates beside the scores.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sentidistill.tasks.entry import Entry
from sentidistill.tasks.example import Gold
from sentidistill.tasks.variant import CANONICAL, PromptVariant, field_names

if TYPE_CHECKING:
    from sentidistill.tasks.spec import TaskSpec

NULL = "NULL"
MAX_ANSWER_CHARS = 20_000  # longer answers are cut before parsing (literal_eval cost grows with size)
_FENCE = re.compile(r"```[A-Za-z]*")
_PARSE_ERRORS = (ValueError, SyntaxError, TypeError, MemoryError, RecursionError)


@dataclass(frozen=True)
class Parsed:
    """A parsed answer: `value` is a label (or None) for classify, a list of tuples for extract."""

    value: Gold
    failed: bool
    dropped: int = 0
    text: str = ""

    @classmethod
    def of(cls, value: Gold) -> Parsed:
        """Wrap an already-known answer (e.g. the argmax label of first-token scoring)."""
        return cls(value=value, failed=value is None)


def answer_text(text: str, input_name: str = "Sentence:", output_name: str = "Label:") -> str:
    """The answer region of a completion: code fences removed, an echoed output field dropped,
    cut where the model starts inventing the next demonstration (its input field)."""
    s = _FENCE.sub("", text[:MAX_ANSWER_CHARS]).lstrip()
    if s.startswith(output_name):
        s = s[len(output_name):].lstrip()
    cut = s.find(input_name)
    return s[:cut] if cut != -1 else s


def first_line(text: str) -> str:
    """First non-empty line; a list opened there and closed on a later line is joined back."""
    lines = [ln.strip() for ln in text.split("\n")]
    lines = [ln for ln in lines if ln]
    if not lines:
        return ""
    out = lines[0]
    rest = iter(lines[1:])
    while out.startswith("[") and out.count("[") > out.count("]"):
        nxt = next(rest, None)
        if nxt is None:
            break
        out += " " + nxt
    return out


def _first_token_label(task: TaskSpec, text: str, variant: PromptVariant) -> Parsed:
    """Classification from text: the label that occurs first (case-insensitive, whole words)."""
    answer = answer_text(text, *field_names(task, variant)).strip()
    low = answer.lower()
    best: tuple[tuple[int, int], str] | None = None
    for label in task.labels:
        m = re.search(rf"(?<![\w-]){re.escape(label.lower())}(?![\w-])", low)
        if m and (best is None or (m.start(), -len(label)) < best[0]):
            best = ((m.start(), -len(label)), label)
    return Parsed(best[1] if best else None, failed=best is None, text=first_line(answer))


def _literal(line: str, fmt: str) -> Any:
    """Parse a Python or JSON list; on failure cut after the last ')' or '}' and close the list."""
    loaders = [json.loads, ast.literal_eval] if fmt == "json" else [ast.literal_eval, json.loads]
    closer = "}" if fmt == "json" else ")"
    cut = line.rfind(closer)
    for candidate in (line, (line[: cut + 1] if cut != -1 else line) + "]"):
        for load in loaders:
            try:
                return load(candidate)
            except _PARSE_ERRORS:
                continue
    raise ValueError("unparseable")


def _items(data: Any, arity: int) -> list[Any] | None:
    """The list of candidate tuples in a parsed value, or None when it is no list at all."""
    if isinstance(data, dict):
        return [data]
    if not isinstance(data, list | tuple):
        return None
    if data and len(data) == arity and all(isinstance(x, str) for x in data):
        return [data]  # one bare tuple without the enclosing list
    items = list(data)
    if len(items) == 1 and isinstance(items[0], list) and all(isinstance(x, list | tuple | dict) for x in items[0]):
        items = items[0]  # one extra level of nesting
    return items


def _normalize(item: Any, task: TaskSpec) -> tuple[str, ...] | None:
    """Strip fields, lowercase the polarity; None when arity, types or polarity are wrong."""
    if isinstance(item, dict):
        if any(k not in item for k in task.tuple_fields):
            return None
        item = [item[k] for k in task.tuple_fields]
    if not isinstance(item, list | tuple) or len(item) != task.tuple_arity:
        return None
    if any(v is not None and not isinstance(v, str) for v in item):
        return None
    values = [NULL if v is None else v.strip() for v in item]
    values[-1] = values[-1].lower()
    if all(v.upper() == NULL for v in values):
        return tuple(NULL for _ in values)
    if values[-1] not in {p.lower() for p in task.allowed_polarities}:
        return None
    return tuple(values)


def _tuple_list(task: TaskSpec, text: str, variant: PromptVariant) -> Parsed:
    """Extraction: first answer line -> deduplicated valid tuples.

    An all-'NULL' tuple is the instructed "no opinion" answer: it yields no tuple and is no error.
    """
    line = first_line(answer_text(text, *field_names(task, variant)))
    try:
        data = _literal(line, variant.output_format)
    except ValueError:
        return Parsed([], failed=True, text=line)
    items = _items(data, task.tuple_arity)
    if items is None:
        return Parsed([], failed=True, text=line)
    kept: list[tuple[str, ...]] = []
    dropped = 0
    for item in items:
        norm = _normalize(item, task)
        if norm is None:
            dropped += 1
        elif any(v != NULL for v in norm) and norm not in kept:
            kept.append(norm)
    return Parsed(kept, failed=False, dropped=dropped, text=line)


PARSERS: dict[str, Entry] = {
    "first_token_label": Entry(
        "classify", _first_token_label,
        "scored by first-token logits; from text: the first label mentioned (case-insensitive)"),
    "tuple_list": Entry(
        "extract", _tuple_list,
        "first answer line as a Python (or JSON) list of tuples; repaired, filtered, deduplicated"),
}


def parse_output(task: TaskSpec, text: str, variant: PromptVariant | None = None) -> Parsed:
    """Parse one completion (text generated after the prompt) with the task's registered parser."""
    return PARSERS[task.parser].fn(task, text, variant or CANONICAL)
