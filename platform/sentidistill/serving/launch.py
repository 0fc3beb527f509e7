"""Start and stop the served student on a Ray cluster: what `sentidistill serve` and `run --serve` call.

Everything that can be checked on the driver is checked before any replica starts (tasks, aliases,
demonstration pools, the API key variable on a local cluster, the model: folder, config.json,
safetensors weights, hub id),
so a mistake is one clear error rather than a replica crash-looping on the cluster.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from sentidistill.config import PipelineConfig
from sentidistill.errors import ConfigError, SentiDistillError


@dataclass(frozen=True)
class Endpoint:
    """Where a started app answers."""

    url: str
    app_name: str
    served_name: str
    model_ref: str

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL (for `openai.OpenAI(base_url=...)` and `eval.engine.openai.base_url`)."""
        return f"{self.url}/v1"

    @property
    def docs_url(self) -> str:
        return f"{self.url}/docs"


def joins_cluster(cfg: PipelineConfig) -> bool:
    return bool(cfg.ray.address or os.environ.get("RAY_ADDRESS"))


def start(cfg: PipelineConfig, model: str | None = None, *, detach: bool = False) -> Endpoint:
    """Deploy the app on serve.host:serve.port and wait until it answers; `detach` needs a running cluster."""
    from ray import serve

    from sentidistill.runtime import init_ray
    from sentidistill.serving.app import app_settings, bind_app
    from sentidistill.serving.auth import load_key
    from sentidistill.serving.model_check import check_model
    from sentidistill.serving.tasks import ServedTasks

    if detach and not joins_cluster(cfg):
        raise ConfigError("--detach leaves the app running in a cluster, but none is configured: set ray.address "
                          "or RAY_ADDRESS (start one with `ray start --head`), or serve in the foreground")
    settings = app_settings(cfg, model)
    # A model the replica could not load: one clear error now, not minutes of replica restarts.
    check_model(settings.model_ref, cfg.cache_dir, resolve_remote=not joins_cluster(cfg))
    ServedTasks.load(cfg)  # unknown tasks, bad aliases, missing train pools: fail here, not in a replica
    if not joins_cluster(cfg):
        load_key(cfg.serve.api_key_env)  # a local cluster's replicas inherit this process's environment
    s = cfg.serve
    init_ray(cfg.ray)
    serve.start(http_options={"host": s.host, "port": s.port})
    try:
        serve.run(bind_app(settings), name=s.app_name, route_prefix="/")
    except RuntimeError as e:
        stop(s.app_name)
        raise SentiDistillError(f"serving app {s.app_name!r} failed to start: {e}") from None
    host = "127.0.0.1" if s.host in ("0.0.0.0", "::") else s.host
    return Endpoint(f"http://{host}:{s.port}", s.app_name, settings.served_name, settings.model_ref)


def stop(app_name: str) -> None:
    """Delete the app; shut Serve down (controller, proxies) when no other app is left on the cluster.

    A no-op when Ray or Serve is not running (stopping after a failed start must not start Ray).
    """
    import ray
    from ray import serve
    from ray.serve.exceptions import RayServeException

    if not ray.is_initialized():
        return
    try:
        serve.delete(app_name)
    except RayServeException:  # no Serve instance on this cluster
        return
    if not serve.status().applications:
        serve.shutdown()
