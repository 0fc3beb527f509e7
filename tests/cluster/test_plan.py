"""`estimate(cfg)`: token counts follow the config and the data; hours and storage follow the rates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sentidistill.cli import app
from sentidistill.cluster.plan import Throughputs, estimate, params_from_config, params_from_name
from sentidistill.config import PipelineConfig
from sentidistill.errors import ConfigError
from sentidistill.perspectives import select_perspectives

TEXTS = [f"Review {i}: the pasta was {'good ' * (i + 1)}and the service quick." for i in range(10)]


@pytest.fixture
def cfg_data(tiny_config, shared_data: Path, tiny_model: Path) -> dict:
    """jobs/configs/tiny.yaml with every section the estimate reads set here (replaced whole)."""
    corpus = tiny_config.root / "corpus.jsonl"
    rows = TEXTS + TEXTS[:2]  # two exact duplicates: the corpus reader drops them
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
    return tiny_config.data(f"data_dir={shared_data}", replace={
        "teacher": {"kind": "hf", "model": str(tiny_model), "resources": {"num_gpus": 1, "concurrency": 2}},
        "corpus": {"sources": [{"path": str(corpus)}]},
        "generate": {"perspectives": ["overall", "rewrite"], "per_text": 1, "max_new_tokens": 100},
        "icl": {"tasks": ["sst2"], "examples_per_task": 10, "k_max": 2},
        "train": {"model": {"student": str(tiny_model)},
                  "optimizer": {"epochs": 1, "micro_batch_size": 2, "effective_batch_size": 8},
                  "data": {"max_seq_len": 512},
                  "resources": {"num_workers": 2, "use_gpu": True, "resources_per_worker": {"CPU": 1, "GPU": 1}}},
    })


@pytest.mark.ray  # the corpus stats run on Ray Data
def test_tokens_follow_corpus_and_perspectives(cfg_data: dict) -> None:
    cfg = PipelineConfig.model_validate(cfg_data)
    est = estimate(cfg)
    assert est.corpus_texts == 10
    assert est.avg_text_chars == pytest.approx(sum(map(len, TEXTS)) / 10, abs=0.1)
    assert est.knowdist.requests == 10  # per_text 1
    budgets = [p.max_new_tokens or 100 for p in select_perspectives(["overall", "rewrite"])]
    assert est.knowdist.completion_tokens == round(10 * sum(budgets) / 2)
    assert est.knowdist.prompt_tokens > sum(map(len, TEXTS)) / 4  # texts plus the instructions
    assert est.icl_tasks == ["sst2"] and est.icldist.requests == 10
    assert 0 < est.icldist.completion_tokens < 10 * 5  # labels are a token or two, not the budget
    assert est.gen_wall_hours == pytest.approx(est.gen_gpu_hours / 2)  # 2 teacher actors x 1 GPU
    assert est.train_tokens["knowdist"] == est.knowdist.prompt_tokens + est.knowdist.completion_tokens
    assert est.train_wall_hours == pytest.approx(est.train_gpu_hours / 2)
    assert set(est.storage_bytes) == {"knowdist data", "icldist data", "student models", "training checkpoints"}


def test_rates_epochs_steps_and_disabled_stages(cfg_data: dict) -> None:
    cfg = PipelineConfig.model_validate(cfg_data)
    base = estimate(cfg, corpus_texts=1000, avg_text_chars=500.0)
    assert base.knowdist.requests == 1000
    fast = estimate(cfg, Throughputs(gen_tokens_per_s_per_gpu=1000, prefill_tokens_per_s_per_gpu=10000,
                                     train_tokens_per_s_per_gpu=40000), corpus_texts=1000, avg_text_chars=500.0)
    assert fast.gen_gpu_hours == pytest.approx(base.gen_gpu_hours / 2)
    assert fast.train_gpu_hours == pytest.approx(base.train_gpu_hours / 2)
    two = estimate(cfg.model_copy(update={"train": cfg.train.model_copy(update={
        "optimizer": cfg.train.optimizer.model_copy(update={"epochs": 2.0})})}),
                   corpus_texts=1000, avg_text_chars=500.0)
    assert two.train_tokens["knowdist"] == pytest.approx(2 * base.train_tokens["knowdist"], abs=1)
    capped = PipelineConfig.model_validate({**cfg_data, "train": {**cfg_data["train"], "optimizer": {
        **cfg_data["train"]["optimizer"], "max_steps": 1}}})
    assert estimate(capped, corpus_texts=1000, avg_text_chars=500.0).train_tokens["knowdist"] == 8 * 512
    off = PipelineConfig.model_validate({**cfg_data, "generate": {"enabled": False}, "icl": {"enabled": False}})
    est = estimate(off, corpus_texts=1000, avg_text_chars=500.0)
    assert est.knowdist.requests == est.icldist.requests == 0 and est.gen_gpu_hours == 0
    assert est.train_tokens == {"knowdist": 0, "icldist": 0}


def test_api_teacher_costs_no_gpu_hours(cfg_data: dict) -> None:
    api = PipelineConfig.model_validate({**cfg_data, "teacher": {"kind": "openai",
                                                                 "openai": {"base_url": "http://x/v1"}}})
    est = estimate(api, corpus_texts=100, avg_text_chars=300.0)
    assert est.knowdist.completion_tokens > 0 and est.gen_gpu_hours == 0 and est.gen_wall_hours is None


def test_param_counts(tiny_model: Path) -> None:
    from transformers import AutoModelForCausalLM

    config = json.loads((tiny_model / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert params_from_config(config) == sum(p.numel() for p in model.parameters())
    assert params_from_config(config, num_layers=1) < params_from_config(config)
    assert params_from_name("meta-llama/Llama-3.3-70B-Instruct") == 70e9
    assert params_from_name("HuggingFaceTB/SmolLM2-135M-Instruct") == 135e6
    assert params_from_name("Llama-3.2-1B-Instruct") == 1e9 and params_from_name("gpt2") is None


def test_cli_json_and_cluster_check(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    gpu = str(repo / "jobs" / "configs" / "gpu-cluster.yaml")
    common = ["plan", gpu, "--corpus-texts", "1000", "--avg-chars", "600"]
    ok = CliRunner().invoke(app, [*common, "--json", "--cluster", str(repo / "cluster" / "aws.yaml")])
    assert ok.exit_code == 0, ok.output
    est = json.loads(ok.stdout[ok.stdout.index("{"):])
    assert est["knowdist"]["requests"] == 3000 and est["teacher_params"] == 70e9  # per_text 3, 70B teacher
    bad = CliRunner().invoke(app, [*common, "teacher.resources.accelerator_type=B200", "--cluster",
                                   str(repo / "cluster" / "gcp.yaml")])
    assert isinstance(bad.exception, ConfigError) and "B200" in str(bad.exception)
    half = CliRunner().invoke(app, [*common[:-2], "--json"])
    assert isinstance(half.exception, ConfigError) and "--avg-chars" in str(half.exception)
