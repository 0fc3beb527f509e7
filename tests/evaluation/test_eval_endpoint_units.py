"""`eval --endpoint` without a served model: the engine settings it derives from the serve section, the
actors' resources, and an endpoint failure that fails its items instead of the whole Ray Data job.
(The served model end to end: tests/evaluation/test_eval_endpoint.py, slow.)"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from sentidistill.config import EngineConfig, load_config
from sentidistill.engines.pool import ENGINE_RESTARTS, map_batches_kwargs
from sentidistill.evaluation.items import Part, Protocol, TaskInputs, part_items
from sentidistill.evaluation.udf import EvalUDF
from sentidistill.stages.evaluate import served_engine
from sentidistill.tasks import load_registry

GPU_CONFIG = Path(__file__).resolve().parents[2] / "jobs" / "configs" / "gpu-cluster.yaml"
ENDPOINT = ["eval.engine.kind=openai", "eval.engine.openai.base_url=http://127.0.0.1:8000/v1"]


def test_endpoint_engine_respects_the_score_cap_and_sends_the_serve_key() -> None:
    cfg = load_config(GPU_CONFIG, ENDPOINT)  # eval.engine.resources.batch_size: 128, serve.api_key_env set
    engine = served_engine(cfg)
    assert cfg.eval.engine.resources.batch_size == 128 > cfg.serve.max_texts
    assert engine.openai is not None and engine.openai.api_key_env == cfg.serve.api_key_env
    assert engine.resources.batch_size == cfg.serve.max_texts
    assert engine.kind == "openai" and engine.openai.base_url == "http://127.0.0.1:8000/v1"
    small = served_engine(load_config(GPU_CONFIG, [*ENDPOINT, "eval.engine.resources.batch_size=8", "serve.max_texts=32",
                                                   "eval.engine.openai.api_key_env=OTHER_KEY"]))
    assert small.openai is not None and small.openai.api_key_env == "OTHER_KEY"  # an explicit eval key variable wins
    assert small.resources.batch_size == 8


def test_http_client_actors_reserve_no_gpu() -> None:
    cfg = load_config(GPU_CONFIG, ENDPOINT)
    assert cfg.eval.engine.resources.num_gpus == 1 and cfg.eval.engine.resources.accelerator_type == "H100"
    kwargs = map_batches_kwargs(served_engine(cfg))
    assert kwargs["num_gpus"] == 0 and "accelerator_type" not in kwargs
    local = map_batches_kwargs(load_config(GPU_CONFIG).eval.engine)  # the local vllm engine keeps its GPU
    assert local["num_gpus"] == 1 and local["accelerator_type"] == "H100"
    restarts = local["ray_remote_args_fn"]()  # dead engines: the actor is replaced, its batch retried
    assert restarts == {"max_restarts": ENGINE_RESTARTS, "max_task_retries": ENGINE_RESTARTS}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def test_an_endpoint_error_fails_only_its_items_with_a_clear_message(shared_data: Path) -> None:
    registry = load_registry(data_dir=str(shared_data))
    proto = Protocol(k=None, limit=2, chat=False, max_new_tokens=4, max_model_len=2048)
    rows = []
    for name in ("sst2", "atsa_rest16"):
        task = registry.get(name)
        inputs = TaskInputs(task, registry.load_split(name, "train"), registry.load_split(name, "test", 2))
        rows += part_items(Part(task, 42, "k"), inputs, proto)
    udf = EvalUDF(EngineConfig(kind="openai", model="student", openai={
        "base_url": f"http://127.0.0.1:{closed_port()}/v1", "max_retries": 0, "timeout_s": 5}))
    try:
        out = udf({col: [r[col] for r in rows] for col in rows[0]})  # no exception: the job goes on
    finally:
        udf.close()
    assert out["finish_reason"] == ["error"] * len(rows)
    assert {r["kind"] for r in rows} == {"classify", "extract"}  # label scoring (/score) and generation alike
    for err in out["error"]:
        assert err.startswith("EndpointError: ConnectError") and "gave up after 1 attempts" in err
