"""The entry type shared by the closed registries (gold builders, parsers, metrics)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["classify", "extract"]


@dataclass(frozen=True)
class Entry:
    """A registered function and the task kind it serves (checked when a TaskSpec loads)."""

    kind: Kind
    fn: Callable[..., Any]
    doc: str
