"""Output checks a prompt template names (`check: json`): a CLOSED registry, templates never carry code.

Used to validate perspective files (an unknown check name fails at load) and by the quality
filter (`generation.quality`) to drop answers that fail their prompt's own check.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable

_FIRST_PERSON = re.compile(r"\b(I|I'm|I've|I'd|I'll|me|my|mine|myself|we|us|our|ours)\b", re.IGNORECASE)
_POLARITY = re.compile(r"\b(positive|negative|neutral|mixed)\b", re.IGNORECASE)
_FENCE = re.compile(r"```(?:[a-zA-Z]+)?\s*(.*?)```", re.DOTALL)


def _unfenced(text: str) -> str:
    """The content of the first ``` code fence, else the text itself (teachers love fences)."""
    m = _FENCE.search(text)
    return (m.group(1) if m else text).strip()


def _span(text: str, open_ch: str, close_ch: str) -> str | None:
    start, end = text.find(open_ch), text.rfind(close_ch)
    return text[start:end + 1] if 0 <= start < end else None


def check_first_person(text: str) -> bool:
    """The answer speaks as the author (I / my / we...): the rewrite perspective asks for this."""
    return _FIRST_PERSON.search(text) is not None


def check_python_list(text: str) -> bool:
    """A non-empty Python list literal is present and parses with ast.literal_eval (never eval)."""
    span = _span(_unfenced(text), "[", "]")
    if span is None:
        return False
    try:
        value = ast.literal_eval(span)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False
    return isinstance(value, list) and len(value) > 0


def check_json(text: str) -> bool:
    """A JSON object or array is present and parses."""
    body = _unfenced(text)
    for span in (_span(body, "{", "}"), _span(body, "[", "]")):
        if span is None:
            continue
        try:
            json.loads(span)
            return True
        except ValueError:
            continue
    return False


def check_mentions_polarity(text: str) -> bool:
    """The answer names a polarity (positive / negative / neutral / mixed)."""
    return _POLARITY.search(text) is not None


CHECKS: dict[str, Callable[[str], bool]] = {
    "first_person": check_first_person,
    "python_list": check_python_list,
    "json": check_json,
    "mentions_polarity": check_mentions_polarity,
}
