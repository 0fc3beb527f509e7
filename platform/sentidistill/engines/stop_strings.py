"""Stop strings for the hf engine at a cost that does not depend on the vocabulary.

transformers' `stop_strings` precomputes, per stop string, tables over the whole vocabulary (seconds
for a long string on a 49k vocabulary, and its memory stays cached). Here each step decodes only the
last few generated tokens of each row and looks for the strings in that text: the cost per step is
proportional to the stop strings' length, and nothing is kept between calls.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

# A character can take up to 4 byte-level tokens (UTF-8) and a token may decode to nothing (special).
TOKENS_PER_CHAR = 4


class StopOnStrings(StoppingCriteria):
    """True for a row once its generated text (after `prompt_len`) contains one of `stops`."""

    def __init__(self, tokenizer: Any, stops: list[str], prompt_len: int):
        self.tokenizer = tokenizer
        self.stops = stops
        self.prompt_len = prompt_len
        self.window = TOKENS_PER_CHAR * max(len(s) for s in stops) + 2

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        start = max(self.prompt_len, input_ids.shape[1] - self.window)
        texts = self.tokenizer.batch_decode(input_ids[:, start:], skip_special_tokens=True)
        hits = [any(s in t for s in self.stops) for t in texts]
        return torch.tensor(hits, dtype=torch.bool, device=input_ids.device)


def stop_criteria(tokenizer: Any, stops: list[str], prompt_len: int) -> StoppingCriteriaList:
    """The `stopping_criteria` argument of `generate` for `stops` (non-empty strings)."""
    return StoppingCriteriaList([StopOnStrings(tokenizer, stops, prompt_len)])


def first_stop(text: str, stops: tuple[str, ...] | list[str]) -> int | None:
    """Where the earliest stop string starts in `text` (the completion ends there), or None."""
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(found) if found else None
