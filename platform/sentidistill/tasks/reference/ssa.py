"""parse_utils/ssa.py, reproduced: SSA answers and the weighted sentiment-graph F1 as upstream computes them.

The score reads the raw de-duplicated tuples (`original_prediction`), not the validated ones:
polarity is compared as `capitalize()` of the raw string against the gold's 'Positive'/'Negative';
one tuple of the wrong arity drops the whole item's predictions; the holder is located whole
(not split); target and expression are split on the bare substring 'AND' (inside words too) and
each stripped part is located (first occurrence; an empty part sits at offset 0); the instructed
('NULL', 'NULL', 'NULL', 'NULL') answer has an empty expression, so it is a false positive.
Precision and recall carry upstream's 1e-16 denominators. Upstream crashes on a non-string target,
expression or polarity: we score that answer as no tuples and count it. Items are keyed by position
(upstream keys by `sent_id`, unique in the OpeNER test set, so the result is the same).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sentidistill.tasks import ssa_f1
from sentidistill.tasks.reference.asqp import raw_tuples
from sentidistill.tasks.reference.common import RefParsed, clean_line

NULL = "NULL"
SPLIT = "AND"
Graph = tuple[frozenset[int], frozenset[int], frozenset[int], Any]
_EPS_PR, _EPS_F1 = 1e-16, 1e-17


def parse(answer: str, sentence: str, output_name: str = "Label:") -> RefParsed:
    """`parse_quards_for_predict` of ssa.py: the raw tuples the graph is built from (no repair limit)."""
    line = clean_line(answer)
    tuples, failed, repaired = raw_tuples(line, None)
    if any(not isinstance(v, str) for t in tuples if len(t) == 4 for v in t[1:]):
        return RefParsed([], line, failed=False, crashed=True, repaired=repaired)
    return RefParsed(tuples, line, failed=failed, repaired=repaired)


def _spans(sentence: str, value: str, split: bool) -> list[tuple[int, int]]:
    spans = []
    for part in value.split(SPLIT) if split else [value]:
        part = part.strip() if split else part
        begin = sentence.find(part)
        if begin != -1:
            spans.append((begin, begin + len(part)))
    return spans


def pred_graph(sentence: str, tuples: Sequence[Sequence[Any]]) -> list[Graph]:
    """`parse_to_origin` + `convert_opinion_to_tuple` for one answer."""
    if any(len(t) != 4 for t in tuples):
        return []
    tokens = list(ssa_f1.space_token_spans(sentence))
    out = []
    for holder, target, expression, polarity in tuples:
        holder = holder if isinstance(holder, str) else NULL
        target = target if isinstance(target, str) else NULL
        expression = expression if isinstance(expression, str) else NULL
        h = [] if holder == NULL else _spans(sentence, holder, split=False)
        out.append((ssa_f1.spans_to_tokens(h, tokens), ssa_f1.spans_to_tokens(_spans(sentence, target, True), tokens),
                    ssa_f1.spans_to_tokens(_spans(sentence, expression, True), tokens), polarity.capitalize()))
    return out


def gold_graph(row: dict[str, Any]) -> list[Graph]:
    """`convert_opinion_to_tuple` of a gold row: polarity as stored (not lowercased)."""
    tokens = list(ssa_f1.space_token_spans(row["sentence"]))

    def toks(offsets: list[str]) -> frozenset[int]:
        return ssa_f1.spans_to_tokens([tuple(int(x) for x in o.split(":")) for o in offsets], tokens)  # type: ignore[misc]

    return [(toks(o["Source"][1]), toks(o["Target"][1]), toks(o["Polar_expression"][1]), o["Polarity"])
            for o in row["opinions"]]


def _weighted(side: Sequence[list[Graph]], other: Sequence[list[Graph]]) -> float:
    """`tuple_precision` / `tuple_recall`: weighted hits over (hits + misses + 1e-16)."""
    total, count = 0.0, 0
    for mine, theirs in zip(side, other, strict=True):
        for t in mine:
            count += 1
            if any(ssa_f1.overlaps(t, o) and t[3] == o[3] for o in theirs):
                total += ssa_f1.best_overlap(t, theirs)
    return total / (count + _EPS_PR)


def graph_f1(gold: Sequence[list[Graph]], pred: Sequence[list[Graph]]) -> tuple[float, float, float]:
    """`tuple_f1`: (f1, precision, recall) with upstream's epsilons."""
    precision, recall = _weighted(pred, gold), _weighted(gold, pred)
    return 2 * precision * recall / (precision + recall + _EPS_F1), precision, recall
