"""The one train loop (both stages): runs on every Ray Train worker under DeepSpeed.

Read it top to bottom: load the student -> DeepSpeed engine -> resume from the latest Ray
Train checkpoint -> micro-batches from this worker's shard -> report metrics, checkpoint
every N steps -> gather the weights and export a plain HF folder. The two stages differ only
in the LoopSpec they are given (student, data, lr, steps), never in code.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from sentidistill.models import default_cache_dir, resolve_model
from sentidistill.rundir import RunDir
from sentidistill.training.data import collate
from sentidistill.training.export import export_model, gather_state_dict
from sentidistill.training.model import load_student, lora_config, weights_digest

log = logging.getLogger("sentidistill")

PROGRESS_FILE = "progress.json"
DS_TAG = "ds"


class LoopSpec(BaseModel):
    """Everything a worker needs, as plain values (it travels to every worker as train_loop_config)."""

    model_config = ConfigDict(extra="forbid")

    stage: str
    student: str
    cache_dir: str | None
    trust_remote_code: bool
    attn_implementation: str
    gradient_checkpointing: bool
    lora: dict[str, Any] | None
    deepspeed: dict[str, Any]
    lr: float
    weight_decay: float
    lr_schedule: str
    warmup_ratio: float
    total_steps: int
    steps_per_epoch: int
    grad_accum: int
    micro_batch_size: int
    packed: bool
    packing_efficiency: float
    checkpoint_every_steps: int
    log_every_steps: int
    seed: int
    run_dir: str
    metrics_rel: str
    model_rel: str


def train_loop(config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train entry point on each worker; rank 0's return value lands in Result.return_value."""
    import ray.train
    import torch
    from transformers import AutoTokenizer

    spec = LoopSpec.model_validate(config)
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    torch.manual_seed(spec.seed)

    student_dir = resolve_model(spec.student, default_cache_dir(spec.cache_dir))
    tokenizer = AutoTokenizer.from_pretrained(student_dir, trust_remote_code=spec.trust_remote_code)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model = load_student(student_dir, trust_remote_code=spec.trust_remote_code,
                         attn_implementation=spec.attn_implementation,
                         gradient_checkpointing=spec.gradient_checkpointing)
    init_digest = weights_digest(model)  # what this stage starts from, before any adapter or update
    if spec.lora:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(spec.lora))
    engine = init_engine(model, spec)
    start_step = restore(engine)
    metrics_log = MetricsLog(spec) if rank == 0 else None

    shard = ray.train.get_dataset_shard("train")
    step = start_step
    last: dict[str, Any] = {}
    window = _Window()
    while step < spec.total_steps:
        skip = (step % spec.steps_per_epoch) * spec.grad_accum
        for n, (batch, tokens) in enumerate(micro_batches(shard, spec, pad_id, skip)):
            boundary = (skip + n + 1) % spec.grad_accum == 0
            lr = engine.get_lr()[0]
            # use_cache=False: with a KV cache transformers would ignore the packed position_ids.
            out = engine(**{k: v.to(engine.device) for k, v in batch.items()}, use_cache=False)
            engine.backward(out.loss)
            engine.step()
            window.add(out.loss.item(), tokens)
            if not boundary:
                continue
            step += 1
            save = step % spec.checkpoint_every_steps == 0 or step == spec.total_steps
            if save or step % spec.log_every_steps == 0:
                last = window.flush(engine.device) | {
                    "stage": spec.stage, "step": step, "total_steps": spec.total_steps,
                    "epoch": round(step / spec.steps_per_epoch, 4), "lr": lr,
                    "packing_efficiency": spec.packing_efficiency, "resumed_from": start_step,
                    "checkpoint": save,
                }
                report(engine, last, save, rank)
                if metrics_log:  # after report: a row marked checkpoint=true is already persisted
                    metrics_log.append(last)
            if step >= spec.total_steps:
                break

    state = gather_state_dict(engine, rank)
    if rank == 0:
        export_model(state, student_dir, tokenizer, lora=spec.lora, bf16=spec.deepspeed["bf16"]["enabled"],
                     trust_remote_code=spec.trust_remote_code, run_dir=spec.run_dir, rel=spec.model_rel)
    torch.distributed.barrier()
    return {"final_step": step, "resumed_from": start_step, "init_digest": init_digest, "last_metrics": last}


def init_engine(model: Any, spec: LoopSpec) -> Any:
    """DeepSpeed engine with our torch AdamW and LR schedule (unless the DS config names its own)."""
    import deepspeed
    import torch
    from transformers import get_scheduler

    if torch.cuda.is_available():
        import ray.train.torch

        torch.cuda.set_device(ray.train.torch.get_device())
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [  # no weight decay on biases and norm weights
        {"params": [p for _, p in trainable if p.ndim >= 2], "weight_decay": spec.weight_decay},
        {"params": [p for _, p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    # fused=True: one kernel over all parameters instead of ~10 elementwise passes; on 2 CPU threads
    # the step over DeepSpeed's flat 135M fp32 partition drops from ~0.6 s to ~0.08 s (bench/README.md).
    optimizer = None if "optimizer" in spec.deepspeed else torch.optim.AdamW(groups, lr=spec.lr, fused=True)
    schedule = "constant_with_warmup" if spec.lr_schedule == "constant" else spec.lr_schedule
    warmup = round(spec.warmup_ratio * spec.total_steps)

    def scheduler(opt: Any) -> Any:
        return get_scheduler(schedule, opt, num_warmup_steps=warmup, num_training_steps=spec.total_steps)

    engine, *_ = deepspeed.initialize(
        model=model, model_parameters=groups, optimizer=optimizer, config=spec.deepspeed,
        lr_scheduler=None if "scheduler" in spec.deepspeed else scheduler,
    )
    return engine


def restore(engine: Any) -> int:
    """Load the latest Ray Train checkpoint (after a worker failure or a rerun); returns its step."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as d:
        engine.load_checkpoint(d, tag=DS_TAG)
        progress = json.loads((Path(d) / PROGRESS_FILE).read_text())
    log.info("resumed from checkpoint at step %d", progress["step"])
    return int(progress["step"])


def report(engine: Any, metrics: dict[str, Any], save: bool, rank: int) -> None:
    """ray.train.report on every rank (it is a barrier); with a checkpoint, each rank adds its shards."""
    import ray.train
    from ray.train import Checkpoint

    if not save:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="sentidistill-ckpt-", ignore_cleanup_errors=True) as d:
        engine.save_checkpoint(d, tag=DS_TAG)
        if rank == 0:
            progress = {"step": metrics["step"], "epoch": metrics["epoch"], "stage": metrics["stage"]}
            (Path(d) / PROGRESS_FILE).write_text(json.dumps(progress))
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(d))


def micro_batches(shard: Any, spec: LoopSpec, pad_id: int, skip: int) -> Iterator[tuple[dict[str, Any], int]]:
    """This epoch's micro-batches from the worker's shard, after skipping those already trained on.

    Every worker takes exactly steps_per_epoch * grad_accum full micro-batches, so all ranks
    reach each DeepSpeed and Ray Train collective the same number of times.
    """
    want = spec.steps_per_epoch * spec.grad_accum
    seen = 0
    for batch in shard.iter_batches(batch_size=spec.micro_batch_size, batch_format="numpy", drop_last=True):
        if seen >= want:
            return
        seen += 1
        if seen > skip:
            yield collate(batch, pad_id, spec.packed), sum(len(r) for r in batch["input_ids"])
    if seen < want:
        raise RuntimeError(f"worker shard ran out after {seen} of {want} micro-batches this epoch")


class _Window:
    """Loss and token counts since the last report, summed over all workers on flush."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.loss_sum, self.micro, self.tokens, self.t0 = 0.0, 0, 0, time.perf_counter()

    def add(self, loss: float, tokens: int) -> None:
        self.loss_sum += loss
        self.micro += 1
        self.tokens += tokens

    def flush(self, device: Any) -> dict[str, Any]:
        import torch
        import torch.distributed as dist

        t = torch.tensor([self.loss_sum, self.micro, self.tokens], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        elapsed = time.perf_counter() - self.t0
        out = {"loss": round(t[0].item() / max(t[1].item(), 1), 6), "tokens": int(t[2].item()),
               "tokens_per_s": round(t[2].item() / max(elapsed, 1e-9), 1)}
        self._reset()
        return out


class MetricsLog:
    """Rank 0's per-step metrics in train/<stage>/metrics.jsonl; a resumed attempt appends."""

    def __init__(self, spec: LoopSpec):
        self.run_dir = RunDir(spec.run_dir)
        self.rel = spec.metrics_rel
        existing = self.run_dir.read_text(self.rel) if self.run_dir.exists(self.rel) else ""
        self.lines = [line for line in existing.splitlines() if line.strip()]
        self.t0 = time.perf_counter()

    def append(self, row: dict[str, Any]) -> None:
        row = {**row, "elapsed_s": round(time.perf_counter() - self.t0, 3),
               "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self.lines.append(json.dumps(row))
        self.run_dir.write_text(self.rel, "\n".join(self.lines) + "\n")
