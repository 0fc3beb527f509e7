"""Build the Serve application: `build_app(args)` for `serve run`/`serve deploy` YAML, `student_app(cfg)` for code.

    # serve/student.yaml (or a KubeRay RayService's serveConfigV2)
    import_path: sentidistill.serving.app:build_app
    args: {config: jobs/configs/local.yaml, model: null, overrides: []}

Two deployments: `StudentModel` (the engine; replicas, resources and autoscaling from `serve.*`)
behind `Ingress` (FastAPI). Relative local paths are made absolute here, on the machine that builds
the app, because replicas do not share its working directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray.serve import Application

from sentidistill.config import PipelineConfig, load_config
from sentidistill.errors import ConfigError, ModelNotFoundError
from sentidistill.layout import RunLayout
from sentidistill.rundir import RunDir, is_remote
from sentidistill.serving.deployment import StudentModel
from sentidistill.serving.ingress import AppSettings, Ingress


class AppArgs(BaseModel):
    """The `args` of a Serve application entry that imports `build_app`."""

    model_config = ConfigDict(extra="forbid")

    config: str | None = Field(None, description="Pipeline YAML (absolute for `serve deploy`); None = defaults.")
    overrides: list[str] = Field(default_factory=list, description="Dotted overrides, e.g. serve.k=0.")
    model: str | None = Field(None, description="Model to serve; None = serve.model, else the run's final student.")


def _absolute(path: str) -> str:
    """A relative local path that exists here, made absolute; anything else unchanged."""
    if is_remote(path):
        return path
    p = Path(path).expanduser()
    return str(p.resolve()) if p.exists() else path


def final_student(cfg: PipelineConfig) -> str:
    """The run's last trained student (the pipeline's choice); a clear error if it was not trained yet."""
    ref = RunLayout(_absolute(cfg.run_dir)).final_student(cfg)
    if not RunDir(ref).exists("config.json"):
        raise ModelNotFoundError(f"serve.model is not set and the run has no trained student at {ref}; "
                                 "train it first (`sentidistill train CONFIG`) or pass --model")
    return ref


def app_settings(cfg: PipelineConfig, model: str | None = None) -> AppSettings:
    """Resolve what to serve (default: serve.model, else the run's final student) and under which name."""
    given = model or cfg.serve.model
    ref = _absolute(given) if given else final_student(cfg)
    tasks = cfg.tasks.model_copy(update={"extra_files": [_absolute(f) for f in cfg.tasks.extra_files]})
    cfg = cfg.model_copy(update={"data_dir": cfg.data_dir and _absolute(cfg.data_dir),
                                 "cache_dir": cfg.cache_dir and _absolute(cfg.cache_dir), "tasks": tasks})
    served_name = cfg.serve.served_model_name or cfg.serve.engine.name or short_name(given or ref)
    return AppSettings(cfg=cfg, model_ref=ref, served_name=served_name)


def short_name(ref: str) -> str:
    """The name a model is served under by default: its folder's name, never a filesystem path.

    `.../students/tiny` -> `tiny`; a run's `.../train/icldist/model` -> `icldist-model`; a hub id
    `org/name` -> `name`; a named model stays as it is.
    """
    parts = [p for p in ref.split("://")[-1].replace("\\", "/").split("/") if p not in ("", ".", "..")]
    if not parts:
        return ref
    last = parts[-1].removesuffix(".gguf")
    return f"{parts[-2]}-{last}" if last == "model" and len(parts) > 1 else last


def bind_app(settings: AppSettings) -> Application:
    """`StudentModel` (engine, autoscaled, batching) bound behind `Ingress`, with resources from serve.*."""
    cfg, s = settings.cfg, settings.cfg.serve
    engine_cfg = s.engine.model_copy(update={"model": settings.model_ref})
    runtime_env = {"runtime_env": s.runtime_env} if s.runtime_env else {}
    res = s.engine.resources
    model_options: dict[str, Any] = {"num_cpus": res.num_cpus, "num_gpus": res.num_gpus, **runtime_env}
    if res.accelerator_type:
        model_options["accelerator_type"] = res.accelerator_type
    model_app = StudentModel.options(
        ray_actor_options=model_options,
        autoscaling_config=s.autoscaling.model_dump(),
        max_ongoing_requests=s.replica_max_ongoing_requests,
        health_check_period_s=s.health_check_period_s,
        health_check_timeout_s=s.health_check_timeout_s,
    ).bind(engine_cfg, cfg.cache_dir, s.max_batch_size, s.batch_wait_timeout_s, s.engine_stall_s,
           0.8 * s.health_check_timeout_s)
    return Ingress.options(
        num_replicas=s.ingress_replicas,
        max_ongoing_requests=s.ingress_max_ongoing_requests,
        ray_actor_options={"num_cpus": s.ingress_num_cpus, **runtime_env},
    ).bind(model_app, settings)


def student_app(cfg: PipelineConfig, model: str | None = None) -> Application:
    """The bound application serving `model` (default: serve.model, else the run's final student)."""
    return bind_app(app_settings(cfg, model))


def build_app(args: dict[str, Any]) -> Application:
    """Entry point of `import_path: sentidistill.serving.app:build_app` (serve run / serve deploy / RayService)."""
    try:
        parsed = AppArgs.model_validate(args or {})
    except ValidationError as e:
        problems = "; ".join(f"args.{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        raise ConfigError(f"invalid Serve application args: {problems}") from None
    return student_app(load_config(parsed.config, parsed.overrides), parsed.model)
