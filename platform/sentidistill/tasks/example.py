"""`Example`: one task item as every consumer sees it (prompts, metrics, ICL rows, serving)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Gold = str | list[tuple[str, ...]] | None


@dataclass(frozen=True)
class Example:
    """A row, normalised.

    `gold` is the canonical label (classify) or the list of gold tuples (extract); None for an
    unlabeled query. `text` is the row's text unchanged (SSA scoring uses its character offsets).
    `raw` keeps the source row for metrics that need more than the gold (SSA offsets).
    """

    id: str
    text: str
    gold: Gold = None
    target: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def query(cls, text: str, target: str | None = None, id: str = "query") -> Example:
        """An unlabeled item to prompt with (serving, ad-hoc use)."""
        return cls(id=id, text=text, target=target)
