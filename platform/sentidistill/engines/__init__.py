"""Engine registry: one dict, lazy imports (vllm and friends load only when used)."""

from __future__ import annotations

import importlib

from sentidistill.config import EngineConfig
from sentidistill.engines.base import Completion, Engine, GenerationRequest

ENGINES: dict[str, str] = {
    "hf": "sentidistill.engines.hf:HFEngine",
}


def engine_class(kind: str) -> type[Engine]:
    if kind not in ENGINES:
        raise KeyError(f"unknown engine {kind!r}; available: {sorted(ENGINES)}")
    module, name = ENGINES[kind].split(":")
    return getattr(importlib.import_module(module), name)


def build_engine(cfg: EngineConfig, cache_dir: str | None = None) -> Engine:
    """Instantiate the engine `cfg.kind` (loads the model)."""
    return engine_class(cfg.kind)(cfg, cache_dir=cache_dir)


__all__ = ["ENGINES", "Completion", "Engine", "GenerationRequest", "build_engine", "engine_class"]
