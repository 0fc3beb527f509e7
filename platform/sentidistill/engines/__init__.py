"""Engine registry: one dict, lazy imports (vllm and friends load only when used)."""

from __future__ import annotations

import importlib

from sentidistill.config import EngineConfig
from sentidistill.engines.base import Capabilities, Completion, Engine, GenerationRequest, TokenLogprob

ENGINES: dict[str, str] = {
    "hf": "sentidistill.engines.hf:HFEngine",
    "vllm": "sentidistill.engines.vllm:VLLMEngine",
    "openai": "sentidistill.engines.openai:OpenAIEngine",
    "replay": "sentidistill.engines.replay:ReplayEngine",
}


def engine_class(kind: str) -> type[Engine]:
    if kind not in ENGINES:
        raise KeyError(f"unknown engine {kind!r}; available: {sorted(ENGINES)}")
    module, name = ENGINES[kind].split(":")
    return getattr(importlib.import_module(module), name)


def capabilities(kind: str) -> Capabilities:
    """What engine `kind` can do (the class attribute; imports that engine's module, not its model)."""
    return engine_class(kind).capabilities


def returns_logprobs(cfg: EngineConfig) -> bool:
    """Whether engine `cfg` returns per-token log-probabilities (GenerationRequest.logprobs); loads no model."""
    return engine_class(cfg.kind).returns_logprobs(cfg)


def build_engine(cfg: EngineConfig, cache_dir: str | None = None, data_dir: str | None = None) -> Engine:
    """Instantiate the engine `cfg.kind` (loads the model); data_dir resolves a replay corpus's data:// path."""
    if cfg.replay is not None:  # the replay section is set for kind replay only
        return engine_class(cfg.kind)(cfg, cache_dir=cache_dir, data_dir=data_dir)
    return engine_class(cfg.kind)(cfg, cache_dir=cache_dir)


__all__ = ["ENGINES", "Capabilities", "Completion", "Engine", "GenerationRequest", "TokenLogprob", "build_engine",
           "capabilities", "engine_class", "returns_logprobs"]
