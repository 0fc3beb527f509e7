"""Engine capabilities: each engine class says what it can do; code outside engines/ asks, never the kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentidistill.config import PipelineConfig, load_config
from sentidistill.engines import ENGINES, Capabilities, capabilities, engine_class
from sentidistill.engines.pool import map_batches_kwargs
from sentidistill.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
GPU_CONFIG = REPO / "jobs" / "configs" / "gpu-cluster.yaml"
REPLAY = {"kind": "replay", "replay": {"path": "data://teacher-samples/x.jsonl"},
          "resources": {"num_gpus": 1, "accelerator_type": "H100"}}


def test_every_engine_class_declares_its_capabilities() -> None:
    for kind in ENGINES:
        assert isinstance(engine_class(kind).capabilities, Capabilities)
        assert capabilities(kind) is engine_class(kind).capabilities
    assert capabilities("hf").loads_model and capabilities("vllm").loads_model
    assert not capabilities("openai").loads_model and capabilities("openai").scores_labels
    replay = capabilities("replay")
    assert not (replay.loads_model or replay.scores_labels or replay.answers_any_prompt)
    with pytest.raises(KeyError, match="unknown engine 'tgi'"):
        capabilities("tgi")


def test_engines_without_a_model_reserve_no_gpu() -> None:
    """The pool asks loads_model: a replay or endpoint actor never holds a GPU the config gave it."""
    from sentidistill.config import EngineConfig

    replay = map_batches_kwargs(EngineConfig.model_validate(REPLAY))
    assert replay["num_gpus"] == 0 and "accelerator_type" not in replay
    local = map_batches_kwargs(EngineConfig.model_validate({**REPLAY, "kind": "hf", "replay": None}))
    assert local["num_gpus"] == 1 and local["accelerator_type"] == "H100"


def test_stages_and_plans_follow_the_capabilities(tmp_path: Path) -> None:
    from sentidistill.cluster.plan import estimate
    from sentidistill.cluster.resources import requirements
    from sentidistill.rundir import RunDir
    from sentidistill.stages import icl
    from sentidistill.stages.evaluate import model_inputs

    cfg = load_config(GPU_CONFIG)
    teacher = {**REPLAY, "replay": {"path": str(tmp_path / "answers.jsonl")}}
    replayed = PipelineConfig.model_validate({**cfg.model_dump(mode="json"), "teacher": teacher})
    assert {r.component for r in requirements(replayed, "generate")} == set()  # runs no model on the cluster
    assert estimate(replayed, corpus_texts=10, avg_text_chars=100.0).gen_gpu_hours == 0
    with pytest.raises(ConfigError, match="icl.target: the replay teacher"):
        icl.run(replayed)  # replay answers corpus texts only, not few-shot prompts
    scored = PipelineConfig.model_validate({**cfg.model_dump(mode="json"), "eval": {"engine": REPLAY}})
    with pytest.raises(ConfigError, match="eval.engine.kind: 'replay' cannot score a model"):
        model_inputs(scored, RunDir(str(tmp_path / "run")), "some/model")


def test_which_engines_return_logprobs() -> None:
    """The server asks this before a logprobs request (a 422 naming the field when false, never a 5xx)."""
    from sentidistill.config import EngineConfig
    from sentidistill.engines import returns_logprobs

    assert returns_logprobs(EngineConfig(kind="hf", model="m"))
    assert not returns_logprobs(EngineConfig(kind="vllm", model="m"))  # raw_logits mode: label scores need it
    assert returns_logprobs(EngineConfig(kind="vllm", model="m", engine_kwargs={"logprobs_mode": "raw_logprobs"}))
    assert not returns_logprobs(EngineConfig.model_validate(REPLAY))
