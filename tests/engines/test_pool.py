"""Engine pools: `concurrency: N` is a fixed Ray Data actor pool, `[min, max]` an autoscaling one; bad ranges
are config errors naming the field; the shipped GPU example uses the elastic form."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentidistill.config import EngineConfig, load_config
from sentidistill.engines.pool import batches_in_flight, map_batches_kwargs
from sentidistill.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_fixed_and_elastic_pools() -> None:
    fixed = map_batches_kwargs(EngineConfig(resources={"concurrency": 3}))["compute"]
    assert (fixed.min_size, fixed.max_size) == (3, 3)
    elastic = map_batches_kwargs(EngineConfig.model_validate({"resources": {"concurrency": [1, 4]}}))["compute"]
    assert (elastic.min_size, elastic.max_size) == (1, 4)
    assert EngineConfig(resources={"concurrency": [2, 2]}).actor_range == (2, 2)


def test_bad_ranges_name_the_field(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train: {model: {student: unused}}\nteacher: {resources: {concurrency: [4, 1]}}\n")
    with pytest.raises(ConfigError, match=r"teacher.*min is larger than max"):
        load_config(cfg)
    cfg.write_text("train: {model: {student: unused}}\nteacher: {resources: {concurrency: [0, 2]}}\n")
    with pytest.raises(ConfigError, match=r"teacher\.resources\.concurrency"):
        load_config(cfg)


def test_gpu_cluster_example_is_elastic() -> None:
    cfg = load_config(REPO / "jobs" / "configs" / "gpu-cluster.yaml")
    low, high = cfg.teacher.actor_range
    assert low < high


def test_continuous_engines_keep_several_batches_per_actor() -> None:
    """vllm actors run `vllm.max_batches_in_flight` async calls at once; engines without continuous batching one."""
    vllm = EngineConfig.model_validate({"kind": "vllm", "model": "m", "vllm": {"max_batches_in_flight": 3}})
    assert batches_in_flight(vllm) == 3
    assert map_batches_kwargs(vllm, batches_in_flight(vllm))["compute"].max_concurrent_calls_per_actor == 3
    assert batches_in_flight(EngineConfig(kind="vllm", model="m")) == 4  # the default
    hf = EngineConfig(kind="hf", model="m")
    assert batches_in_flight(hf) == 1
    assert map_batches_kwargs(hf, batches_in_flight(hf))["compute"].max_concurrent_calls_per_actor is None
    with pytest.raises(ValueError, match="max_batches_in_flight"):
        EngineConfig.model_validate({"kind": "vllm", "model": "m", "vllm": {"max_batches_in_flight": 0}})
