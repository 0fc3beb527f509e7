"""The hf engine's log-probabilities: recorded inside `generate`, one step at a time.

transformers applies the processors from the model's generation_config (repetition penalty,
suppressed tokens, ...), then custom logits processors, then temperature / top-k / top-p when it
samples. `StepLogprobs` is a custom processor, so it sees the scores greedy decoding picks from
(for greedy decoding the chosen token is the most likely one) and, when sampling, the distribution
before temperature and top_p: the model's own probabilities, as vLLM's default `raw_logprobs`.
It keeps one step's log-softmax and the top-N of every step (memory batch x vocabulary, not
x steps as `output_scores` would).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import LogitsProcessor

from sentidistill.engines.base import TokenLogprob
from sentidistill.engines.token_logprobs import build_logprobs


class StepLogprobs(LogitsProcessor):
    """Records each step's chosen-token logprob and `top_n` most likely tokens; changes no score."""

    def __init__(self, top_n: int):
        self.top_n = top_n
        self._last: torch.Tensor | None = None  # the previous step's log-softmax, batch x vocabulary
        self.chosen: list[torch.Tensor] = []  # per step: batch
        self.top: list[tuple[torch.Tensor, torch.Tensor]] = []  # per step: (values, ids), batch x top_n

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self._take(input_ids[:, -1])  # the token the previous step chose is now the last input
        self._last = torch.log_softmax(scores.float(), dim=-1)
        if self.top_n:
            values, ids = self._last.topk(min(self.top_n, self._last.shape[-1]), dim=-1)
            self.top.append((values.cpu(), ids.cpu()))
        return scores

    def _take(self, tokens: torch.Tensor) -> None:
        if self._last is not None:
            self.chosen.append(self._last.gather(1, tokens[:, None].to(self._last.device)).squeeze(1).cpu())
            self._last = None

    def finish(self, last_tokens: torch.Tensor) -> None:
        """After `generate`: the last step's chosen tokens (the last column of the output)."""
        self._take(last_tokens)

    def entries(self, tokenizer: Any, row: int, ids: list[int], top_n: int, text: str) -> list[TokenLogprob]:
        """Row `row`'s entries for its generated `ids` (no end-of-sequence token) and returned `text`."""
        chosen = [float(step[row]) for step in self.chosen[:len(ids)]]
        top = [[(int(i), float(v)) for v, i in zip(values[row, :top_n].tolist(), ids_[row, :top_n].tolist(),
                                                     strict=True)]
               for values, ids_ in self.top[:len(ids)]] if top_n else []
        return build_logprobs(tokenizer, ids, chosen, top, text)
