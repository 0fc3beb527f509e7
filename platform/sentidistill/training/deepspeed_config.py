"""The DeepSpeed JSON: generated from `train.*`, or the user's own with its "auto" values filled.

Either way the result is written next to the stage's artifacts (`train/<stage>/deepspeed.json`)
so a run can be explained and repeated. Batch sizes always come from `train.*`: the data
loader is built from them, so a user JSON that disagrees is an error, not a silent override.
"""

from __future__ import annotations

from typing import Any

from sentidistill.config import TrainConfig
from sentidistill.errors import ConfigError
from sentidistill.readers import read_mapping


def resolve_precision(train: TrainConfig) -> str:
    """'bf16' or 'fp32': auto = bf16 on GPU workers, fp32 on CPU workers."""
    if train.deepspeed.precision == "auto":
        return "bf16" if train.resources.use_gpu else "fp32"
    return train.deepspeed.precision


def grad_accum_steps(train: TrainConfig) -> int:
    """Micro-batches per optimizer step on each worker (the config validator checks divisibility)."""
    opt = train.optimizer
    return opt.effective_batch_size // (opt.micro_batch_size * train.resources.num_workers)


def _ours(train: TrainConfig) -> dict[str, Any]:
    return {
        "train_micro_batch_size_per_gpu": train.optimizer.micro_batch_size,
        "gradient_accumulation_steps": grad_accum_steps(train),
        "train_batch_size": train.optimizer.effective_batch_size,
        "gradient_clipping": train.optimizer.grad_clip,
        "bf16": {"enabled": resolve_precision(train) == "bf16"},
    }


def build_deepspeed_config(train: TrainConfig) -> dict[str, Any]:
    """The generated config: ZeRO stage, optional optimizer offload, precision, accumulation, clipping."""
    zero: dict[str, Any] = {"stage": train.deepspeed.zero_stage}
    if train.deepspeed.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": train.resources.use_gpu}
    if train.deepspeed.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    cfg = {
        **_ours(train),
        "zero_optimization": zero,
        # We pass a torch AdamW unless ds_optimizer: ZeRO must accept it, offload must not insist on CPU-Adam.
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": train.deepspeed.ds_optimizer,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if train.deepspeed.ds_optimizer:
        opt = train.optimizer
        cfg["optimizer"] = {"type": "AdamW", "params": {"lr": opt.lr, "weight_decay": opt.weight_decay}}
    return cfg


def load_user_config(path: str, train: TrainConfig) -> dict[str, Any]:
    """A user's DeepSpeed JSON; "auto" batch/clip/precision values are taken from train.*."""
    cfg = read_mapping(path, "train.deepspeed.config: file", holds="a JSON object", empty_ok=False)
    for key, ours in _ours(train).items():
        theirs = cfg.get(key, "auto")
        if key == "bf16":
            enabled = theirs.get("enabled", "auto") if isinstance(theirs, dict) else theirs
            if enabled == "auto":
                cfg["bf16"] = {**(theirs if isinstance(theirs, dict) else {}), **ours}
            continue
        if theirs == "auto":
            cfg[key] = ours
        elif key != "gradient_clipping" and theirs != ours:
            raise ConfigError(
                f"train.deepspeed.config: {key}={theirs!r} in {path!r} disagrees with train.* ({ours!r}); "
                "set it to \"auto\" or change train.optimizer.micro_batch_size / effective_batch_size / num_workers"
            )
    cfg.setdefault("zero_allow_untested_optimizer", True)
    cfg.setdefault("zero_force_ds_cpu_optimizer", "optimizer" in cfg)
    return cfg


def deepspeed_config(train: TrainConfig) -> dict[str, Any]:
    """The config the workers use: the user's file when given, else the generated one."""
    if train.deepspeed.config:
        return load_user_config(train.deepspeed.config, train)
    return build_deepspeed_config(train)
