"""A GPU training config on nodes that advertise GPUs without CUDA (the CPU rehearsal) runs over gloo."""

from __future__ import annotations

import subprocess
import sys

from sentidistill.config import TrainConfig
from sentidistill.training.trainer import process_group_backend

PROBE = """
import ray, torch
from sentidistill.config import TrainConfig
from sentidistill.training.trainer import process_group_backend
ray.init(num_cpus=2, num_gpus=1, resources={"accelerator_type:A100": 1}, include_dashboard=False)
train = TrainConfig(model={"student": "x"}, optimizer={"effective_batch_size": 1, "micro_batch_size": 1},
                    resources={"use_gpu": True, "num_workers": 1, "resources_per_worker": {"CPU": 1, "GPU": 1},
                               "accelerator_type": "A100"})
print("backend", process_group_backend(train), "cuda", torch.cuda.is_available())
ray.shutdown()
"""


def test_cpu_workers_keep_rays_default() -> None:
    assert process_group_backend(TrainConfig(model={"student": "x"}, resources={"use_gpu": False})) is None


def test_probe_runs_where_a_worker_would_and_falls_back_to_gloo() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300,
                         env={"RAY_AUTH_MODE": "disabled", "PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("backend")), out.stdout + out.stderr[-2000:])
    assert line in ("backend gloo cuda False", "backend nccl cuda True"), line
