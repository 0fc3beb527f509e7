"""parse_utils/asqp.py, reproduced: ASQP answers as the reference scores them.

No echoed-'Label:' removal; the parsed list is de-duplicated; an unparseable line is repaired and
keeps at most 3 distinct tuples (upstream: set order; ours: sorted by repr, see common.distinct); a tuple of the wrong
arity is dropped; polarity is NOT checked; fields are stripped (gold tuples are not).
Upstream crashes on a non-string field of a 4-tuple: we score that answer as no tuples and count it.
"""

from __future__ import annotations

import ast

from sentidistill.tasks.reference.common import RefParsed, clean_line, repair, distinct

ARITY = 4
REPAIR_KEEP = 3


def raw_tuples(line: str, keep: int | None) -> tuple[list[tuple[object, ...]], bool, bool]:
    """`parse_quards_for_predict`'s first half (shared with SSA): (tuples, failed, repaired).

    A parse that succeeds but cannot become tuples yields nothing: upstream's fallback then calls
    `.rfind` on a non-string and gives up.
    """
    try:
        data = ast.literal_eval(line)
    except Exception:  # noqa: BLE001 - upstream's bare except, then its repair
        try:
            kept = [tuple(x) for x in distinct(ast.literal_eval(repair(line)))]
        except Exception:  # noqa: BLE001
            return [], True, False
        return (kept if keep is None else kept[:keep]), False, True
    try:
        return [tuple(x) for x in distinct(data)], False, False
    except Exception:  # noqa: BLE001
        return [], True, False


def parse(answer: str, sentence: str, output_name: str = "Label:") -> RefParsed:
    """Valid (stripped) 4-tuples; wrong-arity tuples are dropped."""
    line = clean_line(answer)
    tuples, failed, repaired = raw_tuples(line, REPAIR_KEEP)
    quads = [t for t in tuples if len(t) == ARITY]
    if any(not isinstance(v, str) for t in quads for v in t):
        return RefParsed([], line, failed=False, crashed=True, repaired=repaired)
    return RefParsed([tuple(v.strip() for v in t) for t in quads], line, failed=failed,  # type: ignore[union-attr]
                     repaired=repaired)
