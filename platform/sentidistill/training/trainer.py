"""Driver side of training: the TorchTrainer from config, and a live view of the workers' metrics.

Resume is Ray Train's own: the same `RunConfig(storage_path, name)` finds the run's latest
checkpoint, both when a worker dies (FailureConfig restarts the group) and when the whole
command is run again after a crash. The stage decides beforehand whether that run folder may
be reused (same config and inputs) or must be cleared.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from sentidistill.config import TrainConfig
from sentidistill.rundir import RunDir
from sentidistill.training.loop import LoopSpec, train_loop

MetricsCallback = Callable[[dict[str, Any]], None]
log = logging.getLogger("sentidistill")


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def process_group_backend(train: TrainConfig) -> str | None:
    """nccl when GPU workers' nodes have CUDA, gloo when they advertise GPUs without it (a CPU rehearsal of
    a GPU config); None (Ray's default, gloo) for CPU workers.

    The driver runs on the head, which has no GPU, so it asks one task placed exactly like a worker.
    """
    if not train.resources.use_gpu:
        return None
    import ray

    per_worker = dict(train.resources.resources_per_worker)
    probe = ray.remote(_has_cuda).options(
        num_cpus=per_worker.get("CPU", 1.0), num_gpus=per_worker.get("GPU", 1.0),
        accelerator_type=train.resources.accelerator_type,
    )
    if ray.get(probe.remote()):
        return "nccl"
    log.warning("train.resources.use_gpu: the training nodes advertise GPUs but have no CUDA; the workers run on CPU "
                "(DeepSpeed over gloo)")
    return "gloo"


def fit(spec: LoopSpec, dataset: Any, train: TrainConfig, storage_uri: str) -> Any:
    """Run the loop on train.resources.num_workers Ray Train workers; returns the ray.train.Result."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    trainer = TorchTrainer(
        train_loop,
        train_loop_config=spec.model_dump(),
        torch_config=TorchConfig(backend=process_group_backend(train)),
        scaling_config=ScalingConfig(
            num_workers=train.resources.num_workers, use_gpu=train.resources.use_gpu,
            resources_per_worker=dict(train.resources.resources_per_worker),
            accelerator_type=train.resources.accelerator_type,
        ),
        run_config=RunConfig(
            name=spec.stage, storage_path=storage_uri,
            checkpoint_config=CheckpointConfig(num_to_keep=train.checkpoint.keep),
            failure_config=FailureConfig(max_failures=train.checkpoint.max_failures),
        ),
        datasets={"train": dataset},
    )
    return trainer.fit()


class MetricsWatcher:
    """Polls train/<stage>/metrics.jsonl while fit() blocks and hands each new row to a callback.

    The file is written by rank 0 wherever it runs (shared storage), so the driver needs no
    channel to the workers; the CLI turns the rows into a progress bar.
    """

    def __init__(self, run_dir: RunDir, rel: str, callback: MetricsCallback | None, interval_s: float = 1.0):
        self.run_dir, self.rel, self.callback, self.interval_s = run_dir, rel, callback, interval_s
        self._seen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="sentidistill-metrics", daemon=True)

    def __enter__(self) -> MetricsWatcher:
        if self.callback:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.callback:
            self._stop.set()
            self._thread.join()
            self._drain()

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._drain()

    def _drain(self) -> None:
        if not self.run_dir.exists(self.rel):
            return
        lines = [line for line in self.run_dir.read_text(self.rel).splitlines() if line.strip()]
        for line in lines[self._seen:]:
            self.callback(json.loads(line))  # type: ignore[misc]
        self._seen = len(lines)
