"""Ray Data actor-pool settings from an EngineConfig: resources stay out of the UDF logic."""

from __future__ import annotations

from typing import Any

from sentidistill.config import EngineConfig


def map_batches_kwargs(cfg: EngineConfig) -> dict[str, Any]:
    """kwargs for `Dataset.map_batches(UDFClass, **kwargs)` that run `cfg.concurrency` engine actors."""
    from ray.data import ActorPoolStrategy

    kwargs: dict[str, Any] = {
        "compute": ActorPoolStrategy(size=cfg.concurrency),
        "batch_size": cfg.batch_size,
        "num_cpus": cfg.num_cpus,
        "num_gpus": cfg.num_gpus,
    }
    if cfg.accelerator_type:
        kwargs["accelerator_type"] = cfg.accelerator_type
    return kwargs
