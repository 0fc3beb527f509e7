"""Ray Data actor-pool settings from an EngineConfig: resources stay out of the UDF logic.

Also what an engine actor does when its engine dies. An HTTP engine (kind openai) only waits on the
network, so its actors reserve no GPU and no accelerator, whatever the section's resource fields say
(an eval section written for a local vllm engine is reused by `eval --endpoint`).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from sentidistill.config import EngineConfig, VLLMEngineConfig
from sentidistill.engines.base import Engine, EngineDeadError

log = logging.getLogger("sentidistill")

# How often Ray replaces one pool actor whose engine died (each time with a fresh engine, retrying the
# batch it held) before the job fails: a flaky engine recovers, a broken node or model does not loop forever.
ENGINE_RESTARTS = 3
DEAD_ENGINE_EXIT_CODE = 70  # EX_SOFTWARE: the actor process ends so that Ray restarts it


def map_batches_kwargs(cfg: EngineConfig, in_flight: int = 1) -> dict[str, Any]:
    """kwargs for `Dataset.map_batches(UDFClass, **kwargs)`: `cfg.resources.concurrency` engine actors, a fixed
    pool for N, Ray Data's autoscaling pool for [min, max] (grows while batches queue, shrinks when idle).
    `in_flight` > 1 (an async UDF, see `batches_in_flight`): each actor runs that many calls at once."""
    from ray.data import ActorPoolStrategy

    low, high = cfg.actor_range
    # in_flight > 1: Ray Core actor concurrency; the calls share the actor's event loop, not its engine
    calls = {"max_concurrent_calls_per_actor": in_flight} if in_flight > 1 else {}
    compute = (ActorPoolStrategy(size=low, **calls) if low == high
               else ActorPoolStrategy(min_size=low, max_size=high, **calls))
    from sentidistill.engines import capabilities

    res = cfg.resources
    local_model = capabilities(cfg.kind).loads_model  # openai and replay actors hold no model
    kwargs: dict[str, Any] = {
        "compute": compute,
        "batch_size": res.batch_size,
        "num_cpus": res.num_cpus,
        "num_gpus": res.num_gpus if local_model else 0,
        "ray_remote_args_fn": restart_args,  # merged over Ray Data's unbounded defaults when an actor starts
    }
    if res.accelerator_type and local_model:
        kwargs["accelerator_type"] = res.accelerator_type
    return kwargs


def batches_in_flight(cfg: EngineConfig) -> int:
    """Batches one generation actor keeps in its engine at once: `vllm.max_batches_in_flight` for an engine
    with continuous batching, 1 (one blocking call per batch) for the others."""
    from sentidistill.engines import capabilities

    if not capabilities(cfg.kind).continuous_batching:
        return 1
    return (cfg.vllm or VLLMEngineConfig()).max_batches_in_flight


def restart_args() -> dict[str, int]:
    """Actor options of every engine pool: a dead engine's actor is restarted and its batch retried."""
    return {"max_restarts": ENGINE_RESTARTS, "max_task_retries": ENGINE_RESTARTS}


def in_ray_actor() -> bool:
    """True inside a Ray actor process (a pool actor); False on the driver and in plain tests."""
    import ray

    return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None


def exit_if_engine_dead(engine: Engine, error: BaseException) -> None:
    """Called with any exception a UDF got from its engine; returns when the engine is still alive.

    A dead engine would turn every remaining row into an error. Inside a Ray actor the process exits
    instead, so Ray restarts the actor (a new engine) and retries its batch (`max_restarts`,
    `max_task_retries`); elsewhere EngineDeadError is raised.
    """
    if not engine.is_dead(error):
        return
    if in_ray_actor():
        log.error("engine %s (%s) is dead: %s: %s; exiting this actor so that Ray replaces it",
                  engine.name, engine.kind, type(error).__name__, error)
        logging.shutdown()
        os._exit(DEAD_ENGINE_EXIT_CODE)
    if isinstance(error, EngineDeadError):
        raise error
    raise EngineDeadError(f"engine {engine.kind}: {type(error).__name__}: {error}") from error
