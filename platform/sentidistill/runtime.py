"""Connect to a Ray cluster or start a local one; resource helpers. The only place ray.init runs."""

from __future__ import annotations

import logging
import os

from sentidistill.config import PipelineConfig, RayConfig
from sentidistill.errors import ConfigError
from sentidistill.rundir import is_remote

log = logging.getLogger("sentidistill")


def init_ray(cfg: RayConfig) -> str | None:
    """Join cfg.address or $RAY_ADDRESS, else start a local cluster; returns the dashboard URL.

    Idempotent: inside a Ray job (or a test fixture) the existing connection is reused.
    """
    import ray

    if ray.is_initialized():
        return None
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    # log_to_driver: workers' stdout/stderr come to this process, which the CLI sends to <run_dir>/logs/
    # (sentidistill.console) unless -v; Ray Data's progress dump is off there too (RAY_DATA_DISABLE_PROGRESS_BARS).
    kwargs = {"namespace": cfg.namespace, "runtime_env": cfg.runtime_env or None, "log_to_driver": True}
    if address:
        ctx = ray.init(address=address, **kwargs)
    else:
        ctx = ray.init(
            num_cpus=cfg.num_cpus or os.cpu_count(),
            num_gpus=cfg.num_gpus,
            include_dashboard=cfg.include_dashboard,
            **kwargs,
        )
    url = getattr(ctx, "dashboard_url", None)
    where = address or "a new local cluster"
    log.info("Ray: connected to %s%s", where, f"; dashboard at http://{url}" if url else "")
    return url


def start_ray(cfg: PipelineConfig) -> None:
    """What every stage that runs on Ray does first: join or start the cluster, then check that the
    run directory is visible from every node. Idempotent."""
    init_ray(cfg.ray)
    check_shared_storage(cfg.run_dir)


def alive_nodes() -> int:
    import ray

    return sum(1 for n in ray.nodes() if n.get("Alive"))


def check_shared_storage(run_dir: str) -> None:
    """Refuse a local-only run_dir on a multi-node cluster: workers on other nodes could not see it."""
    if is_remote(run_dir) or alive_nodes() <= 1:
        return
    if os.environ.get("SENTIDISTILL_SHARED_FS") == "1":
        return
    raise ConfigError(
        f"run_dir: {run_dir!r} is a local path but the Ray cluster has {alive_nodes()} nodes; "
        "use shared storage (s3://bucket/run, gs://bucket/run) or a shared mount "
        "and set SENTIDISTILL_SHARED_FS=1 on every node"
    )


def has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()
