"""Submit a stage to a running Ray cluster as a Ray job, and follow it to its exit status.

`sentidistill submit CONFIG --stage S --address http://HEAD:8265` does what
`ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- sentidistill S CONFIG`
does, plus the checks that save a GPU cluster from a doomed job: the config (and overrides) must
validate here, the config file must travel inside the uploaded working dir, and a local run_dir
is refused when other nodes (already running, or about to be added by the autoscaler) could not
see it. The stage itself runs `runtime.check_shared_storage` again on the cluster.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import shlex
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from sentidistill.cluster.resources import STAGES, per_node, requirements
from sentidistill.config import PipelineConfig, load_config
from sentidistill.errors import ConfigError
from sentidistill.readers import read_mapping
from sentidistill.rundir import is_remote

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

SHARED_FS_ENV = "SENTIDISTILL_SHARED_FS"  # the same switch runtime.check_shared_storage reads
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


@dataclass
class JobSpec:
    """Everything `JobSubmissionClient.submit_job` needs, built and checked before any upload."""

    entrypoint: str
    runtime_env: dict[str, Any]
    metadata: dict[str, str] = field(default_factory=dict)
    submission_id: str | None = None


def load_runtime_env(path: str | Path) -> dict[str, Any]:
    """The job runtime_env YAML (jobs/runtime_env.yaml): a mapping of Ray runtime_env fields."""
    return read_mapping(path, "runtime env file", holds="a mapping of runtime_env fields")


def merge_runtime_env(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """base updated by extra; env_vars merge per variable and excludes add up, as Ray merges them."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if key == "env_vars":
            out["env_vars"] = {**out.get("env_vars", {}), **{k: str(v) for k, v in value.items()}}
        elif key == "excludes":
            out["excludes"] = [*out.get("excludes", []), *[v for v in value if v not in out.get("excludes", [])]]
        else:
            out[key] = copy.deepcopy(value)
    return out


def config_overrides(args: list[str]) -> list[str]:
    """The `key=value` items among a stage's extra arguments (options like --model are passed through)."""
    return [a for a in args if "=" in a and not a.startswith("-")]


def is_loopback(address: str) -> bool:
    """True when the cluster address points at this machine (so local absolute paths are shared)."""
    host = urlparse(address if "://" in address else f"http://{address}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_job(
    config: str | Path, stage: str, args: list[str], *, working_dir: str | Path, runtime_env: dict[str, Any],
    command: str = "sentidistill", local_cluster: bool = False, submission_id: str | None = None,
) -> tuple[JobSpec, PipelineConfig]:
    """Validate the config here and build the job that runs `<command> <stage> CONFIG ARGS` on the cluster.

    The config path is made relative to working_dir, which Ray uploads and makes the job's cwd.
    A relative local run_dir would land in that throw-away copy: on a cluster on this machine it is
    made absolute, elsewhere it is refused.
    """
    if stage not in STAGES:
        raise ConfigError(f"--stage {stage!r} is not one of {', '.join(STAGES)}")
    wd = Path(working_dir).resolve()
    if not wd.is_dir():
        raise ConfigError(f"--working-dir {str(working_dir)!r} is not a folder")
    cfg_path = Path(config).resolve()
    try:
        rel_config = cfg_path.relative_to(wd).as_posix()
    except ValueError:
        raise ConfigError(
            f"config {str(config)!r} is outside the working dir {str(wd)!r} that is uploaded with the job; "
            "move it under the working dir or pass --working-dir"
        ) from None
    args = list(args)
    cfg = load_config(cfg_path, config_overrides(args))
    if not is_remote(cfg.run_dir) and not Path(cfg.run_dir).expanduser().is_absolute():
        if not local_cluster:
            raise ConfigError(
                f"run_dir: {cfg.run_dir!r} is a relative local path; on a remote cluster it would land in the "
                "job's temporary working dir. Use s3://..., gs://... or an absolute path on a shared mount"
            )
        args.append(f"run_dir={Path(cfg.run_dir).expanduser().resolve()}")
    env = merge_runtime_env(runtime_env, cfg.ray.runtime_env)
    env["working_dir"] = str(wd)
    entrypoint = shlex.join([*shlex.split(command), *STAGES[stage].command, rel_config, *args])
    metadata = {"sentidistill_stage": stage, "config": rel_config, "run_dir": cfg.run_dir}
    sid = submission_id or f"sentidistill-{stage}-{uuid.uuid4().hex[:10]}"
    return JobSpec(entrypoint, env, metadata, sid), cfg


def check_cluster_storage(cfg: PipelineConfig, stage: str, nodes: list[dict[str, float]],
                          env_vars: dict[str, str]) -> None:
    """Refuse a local run_dir when the stage's work can land on another node.

    nodes: total resources of each alive node. A cluster with one node today still grows when the
    stage asks for resources no alive node has (GPU groups scale up from 0 nodes).
    """
    if is_remote(cfg.run_dir) or env_vars.get(SHARED_FS_ENV) == "1":
        return
    fix = (f"use shared storage (run_dir=s3://bucket/run or gs://bucket/run), or a shared mount mounted on every "
           f"node plus env var {SHARED_FS_ENV}=1 in ray.runtime_env.env_vars")
    if len(nodes) > 1:
        raise ConfigError(f"run_dir: {cfg.run_dir!r} is a local path but the Ray cluster has {len(nodes)} nodes; "
                          f"other nodes cannot see it. {fix}")
    pending = [r for r in requirements(cfg, stage) if not any(per_node(r, n) for n in nodes)]
    if pending:
        raise ConfigError(
            f"run_dir: {cfg.run_dir!r} is a local path but {pending[0].describe()} fits on no running node, so "
            f"the autoscaler will add nodes that cannot see it. {fix}"
        )


def alive_node_resources(address: str) -> list[dict[str, float]]:
    """Total resources of every alive node, from the cluster's state API (the dashboard address)."""
    from ray.util.state import list_nodes

    nodes = list_nodes(address=address, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)
    return [dict(n.resources_total or {}) for n in nodes]


def client(address: str) -> JobSubmissionClient:
    """A job client for address; an unreachable cluster is a clear error naming the address."""
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except ConnectionError as e:
        raise ConfigError(f"--address {address}: cannot reach the Ray dashboard ({e})") from None


def submit(address: str, spec: JobSpec, retry_s: float = 60.0) -> str:
    """Submit the job (uploading the working dir) and return its submission id.

    Right after a head starts its job agent may not be up yet; the server then answers "try again
    later", and so do we, for up to retry_s.
    """
    jobs = client(address)
    deadline = time.monotonic() + retry_s
    while True:
        try:
            return jobs.submit_job(entrypoint=spec.entrypoint, runtime_env=spec.runtime_env,
                                   metadata=spec.metadata, submission_id=spec.submission_id)
        except RuntimeError as e:
            if "try again later" not in str(e) or time.monotonic() > deadline:
                raise ConfigError(f"--address {address}: the cluster refused the job: {e}") from None
            time.sleep(2.0)


def wait(address: str, job_id: str, *, follow: bool, write: Callable[[str], None], poll_s: float = 1.0) -> str:
    """Block until the job ends, streaming its logs to write() when follow; returns the final status name."""
    jobs = client(address)
    if follow:
        async def tail() -> None:
            async for chunk in jobs.tail_job_logs(job_id):
                write(chunk)

        try:
            asyncio.run(tail())
        except RuntimeError as e:  # the log stream dropped; the job goes on, so keep polling its status
            write(f"\n[log stream ended early: {e}]\n")
    while (status := str(jobs.get_job_status(job_id).value)) not in TERMINAL:
        time.sleep(poll_s)
    return status


def job_message(address: str, job_id: str) -> str:
    """The cluster's one-line reason for a job's status (e.g. the entrypoint's exit code)."""
    return client(address).get_job_info(job_id).message or ""


def exit_code(status: str) -> int:
    """Process exit code for a final job status: 0 only when the job succeeded."""
    return 0 if status == "SUCCEEDED" else 1
