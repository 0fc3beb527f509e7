"""Task fixtures: the registry and a cache of loaded splits (real SentiBench files, read once)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentidistill.tasks import Example, TaskRegistry, load_registry
from sentidistill.tasks.splits import load_split


@pytest.fixture(scope="session")
def registry(shared_data: Path) -> TaskRegistry:
    return load_registry(data_dir=str(shared_data))


@pytest.fixture(scope="session")
def splits(registry: TaskRegistry):
    """splits(name, split) -> list[Example], each file read once per session."""
    cache: dict[tuple[str, str], list[Example]] = {}

    def get(name: str, split: str) -> list[Example]:
        if (name, split) not in cache:
            cache[name, split] = load_split(registry.get(name), split, registry.data_dir)
        return cache[name, split]

    return get
