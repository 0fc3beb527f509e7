"""Seeded sampling in a batch: each row draws from its own generator, so its text does not depend on its
batch neighbours and seeded requests no longer have to run one at a time.

transformers samples a whole batch from torch's global generator, so a row's draw depends on the
rows beside it. `SeededSampler` is the last logits processor of a greedy `generate` call: it applies
transformers' own sampling warpers (temperature, then the model's top_k, top_p, the model's min_p,
in `generate`'s order), samples every row with `torch.multinomial` from a generator seeded with
that row's seed, and leaves only the drawn token, which greedy decoding then picks. A row therefore
gets the same tokens alone or in any batch, as vLLM's per-request seeds do.
"""

from __future__ import annotations

from typing import Any

import torch


class SeededSampler:
    """Logits processor: per-row seeded draws under the given temperature / top_p (and the model's top_k, min_p)."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float, generation_config: Any, device: str):
        from transformers.generation.logits_process import (
            MinPLogitsWarper, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper,
        )

        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        top_k, min_p = getattr(generation_config, "top_k", None), getattr(generation_config, "min_p", None)
        self.warpers: list[Any] = [TemperatureLogitsWarper(temperature)]
        if top_k:
            self.warpers.append(TopKLogitsWarper(top_k=top_k))
        if top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p=top_p))
        if min_p:
            self.warpers.append(MinPLogitsWarper(min_p=min_p))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for warp in self.warpers:
            scores = warp(input_ids, scores)
        probs = torch.softmax(scores.float(), dim=-1)
        picks = torch.cat([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(self.generators)])
        chosen = torch.full_like(scores, float("-inf"))
        return chosen.scatter_(1, picks[:, None], 0.0)
