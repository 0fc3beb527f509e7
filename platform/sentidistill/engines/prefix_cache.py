"""Which prompt prefixes to reuse across scoring calls: automatic, token-exact, LRU-bounded.

Served prompts share long prefixes (the task instruction and the served demonstrations); eval prompts
share their instruction. The hf engine computes the key/value cache of such a prefix once and then
runs only each prompt's suffix. This module decides *which* prefixes: a prompt reuses the longest
stored prefix it starts with; otherwise its longest common token prefix with a recently seen prompt
becomes a new entry when it is long enough. It holds the KV tensors but never runs the model.
vLLM does the same by itself (automatic prefix caching), so only the hf engine uses this.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

Tokens = tuple[int, ...]


def common_prefix_len(a: Tokens, b: Tokens) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class PrefixCache:
    """LRU of prefix -> KV (whatever the engine stores), plus the recent prompts new prefixes come from."""

    def __init__(self, max_entries: int, min_tokens: int, recent: int = 64) -> None:
        self.max_entries = max_entries
        self.min_tokens = min_tokens
        self.entries: OrderedDict[Tokens, Any] = OrderedDict()  # prefix -> KV (None until computed)
        self.recent: deque[Tokens] = deque(maxlen=recent)
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0

    def _stored_match(self, prompt: Tokens) -> Tokens | None:
        best = None
        for prefix in self.entries:
            if len(prefix) < len(prompt) and prompt[: len(prefix)] == prefix and (best is None or len(prefix) > len(best)):
                best = prefix
        return best

    def _new_prefix(self, prompt: Tokens) -> Tokens | None:
        """Longest prefix shared with a recent prompt, leaving this prompt at least one token to run."""
        best = 0
        for other in self.recent:
            best = max(best, min(common_prefix_len(prompt, other), len(prompt) - 1))
        return prompt[:best] if best >= self.min_tokens else None

    def assign(self, prompts: list[Tokens]) -> list[Tokens | None]:
        """The prefix each prompt will reuse (None: run it whole); registers new prefixes, evicts old ones."""
        if not self.enabled:
            return [None] * len(prompts)
        out: list[Tokens | None] = []
        for prompt in prompts:
            prefix = self._stored_match(prompt)
            if prefix is None:
                prefix = self._new_prefix(prompt)
                if prefix is not None:
                    self.entries[prefix] = None
            if prefix is not None:
                self.entries.move_to_end(prefix)
            self.hits += prefix is not None
            self.misses += prefix is None
            self.recent.append(prompt)
            out.append(prefix)
        used = set(out)
        while len(self.entries) > self.max_entries:  # never evict one this call is about to use
            victim = next((p for p in self.entries if p not in used), None)
            if victim is None:
                break
            del self.entries[victim]
        return out

    def get(self, prefix: Tokens) -> Any:
        return self.entries.get(prefix)

    def put(self, prefix: Tokens, kv: Any) -> None:
        self.entries[prefix] = kv
