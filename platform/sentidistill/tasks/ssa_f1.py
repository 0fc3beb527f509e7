"""Weighted sentiment-graph F1 of SemEval-2022 Task 10 (structured sentiment analysis), as in the
SentiBench reference scorer.

Gold opinions come from the row's character offsets; predicted strings are located in the
sentence (first occurrence). Holder, target and expression become sets of whitespace-token
indices. A predicted tuple matches a gold one when all three sets overlap and polarities agree;
its weight is the mean of the three overlap ratios against the best-overlapping tuple.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

NULL = "NULL"
SPLIT = " AND "  # how multi-span fields are joined in gold renderings
_EMPTY = frozenset({"_"})  # a missing holder/target matches another missing one

Graph = tuple[frozenset[int], frozenset[int], frozenset[int], str]


def space_token_spans(text: str) -> Iterator[tuple[int, int]]:
    """Spans of the tokens between single spaces (NLTK's SpaceTokenizer, used by the scorer)."""
    left = 0
    while True:
        right = text.find(" ", left)
        if right == -1:
            if left != len(text):
                yield left, len(text)
            return
        if right != 0:
            yield left, right
        left = right + 1


def spans_to_tokens(spans: Sequence[tuple[int, int]], tokens: Sequence[tuple[int, int]]) -> frozenset[int]:
    """Token indices covered by char spans: from the token starting at a span's begin up to the one
    ending at its end (the scorer's rule; a span not starting on a token boundary covers nothing)."""
    idx: list[int] = []
    for begin, end in spans:
        inside = False
        for i, (b, e) in enumerate(tokens):
            if b == begin:
                inside = True
            if inside:
                idx.append(i)
            if e == end:
                inside = False
    return frozenset(idx)


def gold_graph(row: dict[str, Any]) -> list[Graph]:
    """Gold tuples from an OpeNER-style row (`sentence`, `opinions` with "b:e" offsets)."""
    tokens = list(space_token_spans(row["sentence"]))

    def toks(offsets: list[str]) -> frozenset[int]:
        return spans_to_tokens([tuple(int(x) for x in o.split(":")) for o in offsets], tokens)  # type: ignore[misc]

    return [
        (toks(o["Source"][1]), toks(o["Target"][1]), toks(o["Polar_expression"][1]), o["Polarity"].lower())
        for o in row["opinions"]
    ]


def locate(text: str, value: str) -> list[tuple[int, int]]:
    """Char spans of each ' AND '-joined part of a predicted field (first occurrence; NULL = none)."""
    spans = []
    for part in value.split(SPLIT):
        part = part.strip()
        if not part or part.upper() == NULL:
            continue
        begin = text.find(part)
        if begin != -1:
            spans.append((begin, begin + len(part)))
    return spans


def pred_graph(text: str, tuples: Sequence[tuple[str, ...]]) -> list[Graph]:
    """Predicted (holder, target, expression, polarity) strings -> token-set tuples."""
    tokens = list(space_token_spans(text))
    return [
        (*(spans_to_tokens(locate(text, field), tokens) for field in t[:3]), t[3].lower())  # type: ignore[misc]
        for t in tuples
    ]


def _fill(s: frozenset[int]) -> frozenset[Any]:
    return s if s else _EMPTY


def overlaps(a: Graph, b: Graph) -> bool:
    return bool(_fill(a[0]) & _fill(b[0])) and bool(_fill(a[1]) & _fill(b[1])) and bool(a[2] & b[2])


def best_overlap(t: Graph, others: Sequence[Graph]) -> float:
    """Best mean overlap ratio of t against any overlapping tuple (polarity not considered, as in the scorer)."""
    best = 0.0
    h1, t1, e1 = _fill(t[0]), _fill(t[1]), t[2]
    for o in others:
        if overlaps(t, o):
            h2, t2, e2 = _fill(o[0]), _fill(o[1]), o[2]
            best = max(best, (len(h1 & h2) / len(h1) + len(t1 & t2) / len(t1) + len(e1 & e2) / len(e1)) / 3)
    return best


def _weighted_hits(side: Sequence[list[Graph]], other: Sequence[list[Graph]]) -> tuple[float, int]:
    total, count = 0.0, 0
    for mine, theirs in zip(side, other, strict=True):
        for t in mine:
            count += 1
            if any(overlaps(t, o) and t[3] == o[3] for o in theirs):
                total += best_overlap(t, theirs)
    return total, count


def graph_f1(gold: Sequence[list[Graph]], pred: Sequence[list[Graph]]) -> dict[str, float]:
    """Weighted precision, recall and F1 over aligned per-sentence tuple lists (0 when a side is empty)."""
    p_hits, n_pred = _weighted_hits(pred, gold)
    r_hits, n_gold = _weighted_hits(gold, pred)
    precision = p_hits / n_pred if n_pred else 0.0
    recall = r_hits / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "n_pred": float(n_pred), "n_gold": float(n_gold)}
