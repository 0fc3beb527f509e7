"""parse_utils/atsa.py, reproduced: ATSA answers as the reference scores them.

Harsh parts kept: no repair of a cut-off list; an invalid pair (term not in the sentence, polarity
outside the set, compared case-sensitively) stays as a `False` placeholder (a false positive);
duplicates count; if one element cannot be unpacked into two values, the whole parsed list is kept
unvalidated (upstream's `except` around the list comprehension).
"""

from __future__ import annotations

import ast
import re
from typing import Any

from sentidistill.tasks.reference.common import RefParsed, clean_line

POLARITIES = ("positive", "neutral", "negative", "conflict")
_SPLIT = re.compile(r",|-|\|")


def _pair(item: Any, sentence: str) -> tuple[str, str] | bool:
    aspect, polarity = item if type(item) in (tuple, list) else _SPLIT.split(item)
    aspect, polarity = aspect.strip(), polarity.strip()
    if aspect not in sentence or polarity not in POLARITIES:
        return False
    return aspect, polarity


def parse(answer: str, sentence: str, output_name: str = "Label:") -> RefParsed:
    """`parse_aspect_polarity`: one cleaned line -> pairs (with placeholders) or []."""
    line = clean_line(answer, drop=output_name)
    try:
        data = ast.literal_eval(line)
    except Exception:  # noqa: BLE001 - upstream's bare except: any parse error yields []
        return RefParsed([], line, failed=True)
    if type(data) not in (list, tuple):
        return RefParsed([], line, failed=True)
    if len(data) == 2 and type(data[0]) is str:
        data = [data]
    try:
        if len(data) > 0 and len(data[0]) > 0 and type(data[0][0]) in (list, tuple):
            data = data[-1]  # a list nested one level too deep: upstream keeps its LAST element
    except Exception:  # noqa: BLE001
        return RefParsed([], line, failed=True)
    try:
        return RefParsed([_pair(x, sentence) for x in data if x], line, failed=False)
    except Exception:  # noqa: BLE001 - upstream keeps the raw parsed list
        return RefParsed(list(data), line, failed=False)
