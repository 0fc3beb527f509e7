"""Quality control for teacher answers: one verdict per row, "kept" or the reason it was filtered.

The paper used teacher answers unfiltered; we drop empty, truncated, refused, degenerate
(repetitive) answers and answers that fail their prompt's own output check. Filtered rows are
never deleted: stages write them aside (`filtered/`) so people can look at what was dropped.
Shared by KnowDist generation and the ICLDist builder; no heavy imports.

Output checks form a CLOSED registry (`CHECKS`): templates name a check, they never carry code.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from collections.abc import Callable

from sentidistill.config import QualityConfig

KEPT = "kept"
_FIRST_PERSON = re.compile(r"\b(I|I'm|I've|I'd|I'll|me|my|mine|myself|we|us|our|ours)\b", re.IGNORECASE)
_POLARITY = re.compile(r"\b(positive|negative|neutral|mixed)\b", re.IGNORECASE)
_FENCE = re.compile(r"```(?:[a-zA-Z]+)?\s*(.*?)```", re.DOTALL)
_TOKEN = re.compile(r"\w+|([^\w\s])\1*")  # a run of one punctuation mark is one token


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


def repetition_share(text: str, n: int = 4) -> float:
    """Share of tokens covered by the most frequent token n-gram (0 when nothing repeats).

    Tokens are words and punctuation runs: "good! good! good!..." is repetitive, a "-----" separator
    line is one token, not a degenerate loop.
    """
    toks = [m.group(0) for m in _TOKEN.finditer(text.lower())]
    if len(toks) < 2 * n:
        return 0.0
    grams = Counter(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))
    top = max(grams.values())
    return 0.0 if top < 2 else min(1.0, top * n / len(toks))


class QualityFilter:
    """Compiled once per actor or stage; `verdict()` is called per row."""

    def __init__(self, cfg: QualityConfig):
        self.cfg = cfg
        self.refusals = [re.compile(p, re.IGNORECASE) for p in cfg.refusal_patterns]

    def verdict(self, response: str, finish_reason: str, check: str | None = None) -> str:
        """"kept", or the first failing reason: empty, truncated, refused, repetitive, failed_check:<name>."""
        text = (response or "").strip()
        if len(text) < max(1, self.cfg.min_response_chars):
            return "empty"
        if self.cfg.drop_truncated and finish_reason == "length":
            return "truncated"
        if any(p.search(text, 0, self.cfg.refusal_window) for p in self.refusals):
            return "refused"
        if repetition_share(text) > self.cfg.max_repetition:
            return "repetitive"
        if check and self.cfg.run_checks and not CHECKS[check](text):
            return f"failed_check:{check}"
        return KEPT
