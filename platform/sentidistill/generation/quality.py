"""Quality control for teacher answers: one verdict per row, "kept" or the reason it was filtered.

The paper used teacher answers unfiltered; we drop empty, truncated, refused, degenerate
(repetitive) answers and answers that fail their prompt's own output check. Filtered rows are
never deleted: stages write them aside (`filtered/`) so people can look at what was dropped.
Shared by KnowDist generation and the ICLDist builder; no heavy imports.

The output checks a prompt names live in `perspectives.checks` (a closed registry, `CHECKS`).
"""

from __future__ import annotations

import re
from collections import Counter

from sentidistill.config import QualityConfig
from sentidistill.perspectives.checks import CHECKS

KEPT = "kept"
_TOKEN = re.compile(r"\w+|([^\w\s])\1*")  # a run of one punctuation mark is one token


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
