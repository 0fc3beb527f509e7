"""parse_utils/acsa.py, reproduced: ACSA answers as the reference scores them.

Like ATSA (placeholders, duplicates, raw list on an unpacking error; no check that the category
exists), except: polarity set without 'conflict', no nested-list flattening, and an unparseable
line is repaired (cut after the last ')', closed with ']') and then returns at most 3 distinct
tuples WITHOUT validation. Which 3: upstream takes them from a set (hash order); we sort them
(common.distinct).
"""

from __future__ import annotations

import ast
import re
from typing import Any

from sentidistill.tasks.reference.common import RefParsed, clean_line, repair, distinct

POLARITIES = ("positive", "neutral", "negative")
REPAIR_KEEP = 3
_SPLIT = re.compile(r",|-|\|")


def _pair(item: Any) -> tuple[str, str] | bool:
    category, polarity = item if type(item) in (tuple, list) else _SPLIT.split(item)
    category, polarity = category.strip(), polarity.strip()
    return (category, polarity) if polarity in POLARITIES else False


def parse(answer: str, sentence: str, output_name: str = "Label:") -> RefParsed:
    """`parse_aspect_polarity` of acsa.py (the sentence is not used, as upstream)."""
    line = clean_line(answer, drop=output_name)
    try:
        data = ast.literal_eval(line)
    except Exception:  # noqa: BLE001 - upstream's bare except, then its repair
        try:
            kept = [tuple(x) for x in distinct(ast.literal_eval(repair(line)))]
        except Exception:  # noqa: BLE001
            return RefParsed([], line, failed=True)
        return RefParsed(kept[:REPAIR_KEEP], line, failed=False, repaired=True)
    if type(data) not in (list, tuple):
        return RefParsed([], line, failed=True)
    if len(data) == 2 and type(data[0]) is str:
        data = [data]
    try:
        return RefParsed([_pair(x) for x in data if x], line, failed=False)
    except Exception:  # noqa: BLE001 - upstream keeps the raw parsed list
        return RefParsed(list(data), line, failed=False)
