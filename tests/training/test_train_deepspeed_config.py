"""The DeepSpeed JSON generated from train.*, and a user's own JSON with "auto" values."""

from __future__ import annotations

import json

import pytest

from sentidistill.config import load_config
from sentidistill.errors import ConfigError
from sentidistill.training.deepspeed_config import deepspeed_config, grad_accum_steps, resolve_precision


def _train(**over):
    """Train settings with `section__key=value` overrides (e.g. optimizer__lr=1e-4 -> train.optimizer.lr)."""
    items = [f"train.{k.replace('__', '.')}={json.dumps(v)}" for k, v in over.items()]
    return load_config(None, ["train.model.student=some/model", *items]).train


def test_generated_config_follows_train_settings():
    train = _train(optimizer__micro_batch_size=2, optimizer__effective_batch_size=16, resources__num_workers=2,
                   deepspeed__zero_stage=3, deepspeed__offload_optimizer=True, optimizer__grad_clip=0.5)
    ds = deepspeed_config(train)
    assert grad_accum_steps(train) == 4
    assert ds["train_micro_batch_size_per_gpu"] == 2 and ds["gradient_accumulation_steps"] == 4
    assert ds["train_batch_size"] == 16 and ds["gradient_clipping"] == 0.5
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert ds["bf16"] == {"enabled": False}  # CPU workers train in fp32 by default
    assert "optimizer" not in ds and ds["zero_force_ds_cpu_optimizer"] is False


def test_precision_and_ds_optimizer_switches():
    assert resolve_precision(_train(resources__use_gpu=True)) == "bf16"
    assert resolve_precision(_train(deepspeed__precision="bf16")) == "bf16"
    ds = deepspeed_config(_train(deepspeed__ds_optimizer=True, optimizer__lr=1e-4))
    assert ds["optimizer"]["type"] == "AdamW" and ds["optimizer"]["params"]["lr"] == 1e-4


def test_user_config_auto_values_are_filled(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
                                "bf16": {"enabled": "auto"}, "zero_optimization": {"stage": 1}}))
    ds = deepspeed_config(_train(deepspeed__config=str(path), optimizer__micro_batch_size=4,
                                           optimizer__effective_batch_size=32))
    assert ds["train_micro_batch_size_per_gpu"] == 4 and ds["gradient_accumulation_steps"] == 4
    assert ds["train_batch_size"] == 32 and ds["bf16"] == {"enabled": False}
    assert ds["zero_optimization"] == {"stage": 1}


def test_user_config_that_disagrees_names_the_key(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"train_micro_batch_size_per_gpu": 8}))
    with pytest.raises(ConfigError, match="train_micro_batch_size_per_gpu=8"):
        deepspeed_config(_train(deepspeed__config=str(path), optimizer__micro_batch_size=4,
                                           optimizer__effective_batch_size=32))
    with pytest.raises(ConfigError, match="does not exist"):
        deepspeed_config(_train(deepspeed__config=str(tmp_path / "missing.json")))


def test_replay_share_is_only_for_icldist():
    with pytest.raises(ConfigError, match="train.knowdist.replay_share must be 0"):
        _train(knowdist__replay_share=0.2)
    assert _train(icldist__replay_share=0.2).stage("icldist").replay_share == 0.2
