"""`sentidistill submit` against a real Ray head started here (`ray start --head` on 127.0.0.1).

The head runs in its own temp dir and is stopped by terminating the `ray start --block` process
this module started, never with a machine-wide `ray stop`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentidistill.cluster import submit as sub
from sentidistill.cluster.resources import STAGES
from sentidistill.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
RUNTIME_ENV = REPO / "jobs" / "runtime_env.yaml"
CLI = f"{sys.executable} -m sentidistill"  # the job runs in this machine's venv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    env.update(RAY_AUTH_MODE="disabled", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               RAY_USAGE_STATS_ENABLED="0", RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")  # no Serve to drain
    return env


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    """A one-node Ray cluster with a dashboard on 127.0.0.1; yields the job API URL."""
    from ray.job_submission import JobSubmissionClient

    tmp = Path(f"/tmp/sdray-{os.getpid()}-{_free_port()}")  # short: Ray's socket paths have a length limit
    tmp.mkdir()
    # Other Ray clusters may run on this machine: every fixed default port gets a free one instead.
    ports = [f"--{name}={_free_port()}" for name in (
        "port", "dashboard-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
        "metrics-export-port", "runtime-env-agent-port", "ray-client-server-port")]
    log = open(tmp / "ray-start.log", "w")  # noqa: SIM115  (closed below)
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", *ports,
         "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1", "--num-cpus", "2",
         "--include-dashboard", "true", "--temp-dir", str(tmp), "--disable-usage-stats"],
        env=_env(), stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 180
    while True:  # Ray moves the dashboard to another port if ours was taken meanwhile: read the one it chose
        found = re.search(r"RAY_API_SERVER_ADDRESS='(http://[^']+)'", (tmp / "ray-start.log").read_text())
        try:
            if found:
                url = found.group(1)
                JobSubmissionClient(url)
                break
        except Exception:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.terminate()
            pytest.fail(f"ray head did not start: {(tmp / 'ray-start.log').read_text()[-2000:]}")
        time.sleep(1)
    yield url
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
    shutil.rmtree(tmp, ignore_errors=True)


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sentidistill", *args], env=_env(), capture_output=True,
                          text=True, timeout=timeout)


def _submit(url: str, wd: Path, config: str, stage: str, *extra: str,
            follow: bool = True) -> subprocess.CompletedProcess:
    return _cli("submit", config, "--stage", stage, "--address", url, "--working-dir", str(wd),
                "--runtime-env", str(RUNTIME_ENV), "--command", CLI, *(["--follow"] if follow else []), *extra)


def _write_config(wd: Path, text: str, name: str = "cfg.yaml") -> Path:
    wd.mkdir(parents=True, exist_ok=True)
    (wd / name).write_text(text)
    return wd / name


# ---- client-side job building (no cluster) -------------------------------------------------------

def test_build_job_entrypoint_env_and_paths(tmp_path: Path) -> None:
    _write_config(tmp_path / "wd" / "configs", "run_dir: runs/x\ntrain: {model: {student: s}}\n"
                  "ray: {runtime_env: {env_vars: {A: 1}, excludes: [data/]}}\n")
    base = sub.load_runtime_env(RUNTIME_ENV)
    spec, cfg = sub.build_job(tmp_path / "wd" / "configs" / "cfg.yaml", "train", ["train.optimizer.lr=1e-4", "--", "x y"],
                              working_dir=tmp_path / "wd", runtime_env=base, command=CLI, local_cluster=True)
    words = shlex.split(spec.entrypoint)
    assert words[:5] == [sys.executable, "-m", "sentidistill", "train", "configs/cfg.yaml"]
    # the relative run_dir would land in the job's temporary copy: made absolute for a local cluster
    assert words[5:] == ["train.optimizer.lr=1e-4", "--", "x y", f"run_dir={(Path.cwd() / 'runs/x').resolve()}"]
    assert cfg.train.optimizer.lr == 1e-4
    env = spec.runtime_env
    assert env["working_dir"] == str((tmp_path / "wd").resolve())
    assert env["env_vars"]["A"] == "1" and env["env_vars"]["RAY_OVERRIDE_JOB_RUNTIME_ENV"] == "1"
    assert ".venv/" in env["excludes"] and "data/" in env["excludes"]
    assert spec.metadata["sentidistill_stage"] == "train" and spec.submission_id.startswith("sentidistill-train-")


def test_build_job_refusals(tmp_path: Path) -> None:
    cfg = _write_config(tmp_path / "wd", "run_dir: runs/x\ntrain: {model: {student: s}}\n")
    outside = _write_config(tmp_path / "elsewhere", "train: {model: {student: s}}\n")
    kw = {"working_dir": tmp_path / "wd", "runtime_env": {}}
    with pytest.raises(ConfigError, match="outside the working dir"):
        sub.build_job(outside, "validate", [], **kw)
    with pytest.raises(ConfigError, match="relative local path"):
        sub.build_job(cfg, "generate", [], **kw, local_cluster=False)
    with pytest.raises(ConfigError, match="--stage 'trian'"):
        sub.build_job(cfg, "trian", [], **kw)
    with pytest.raises(ConfigError, match="train.optimizer.lr"):
        sub.build_job(cfg, "train", ["train.optimizer.lr=fast"], **kw, local_cluster=True)


def test_storage_check_sees_existing_and_future_nodes() -> None:
    from sentidistill.config import PipelineConfig

    gpu = PipelineConfig.model_validate({"run_dir": "/data/run", "train": {"model": {"student": "s"}},
                                         "teacher": {"resources": {"num_gpus": 8, "accelerator_type": "H100"}}})
    head = {"CPU": 16.0}
    h100 = {"CPU": 192.0, "GPU": 8.0, "accelerator_type:H100": 1.0}
    sub.check_cluster_storage(gpu, "generate", [head, h100][1:], {})  # one node that hosts the teacher
    sub.check_cluster_storage(gpu, "validate", [head], {})  # starts no actors
    with pytest.raises(ConfigError, match="2 nodes"):
        sub.check_cluster_storage(gpu, "generate", [head, h100], {})
    with pytest.raises(ConfigError, match="autoscaler will add nodes"):
        sub.check_cluster_storage(gpu, "generate", [head], {})
    sub.check_cluster_storage(gpu, "generate", [head, h100], {"SENTIDISTILL_SHARED_FS": "1"})
    sub.check_cluster_storage(gpu.model_copy(update={"run_dir": "s3://b/run"}), "generate", [head, h100], {})


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_runs_a_real_cli_command(stage: str) -> None:
    import typer.main

    from sentidistill.cli import app

    group = typer.main.get_command(app)
    words = STAGES[stage].command
    if words[0] not in group.commands:  # type: ignore[attr-defined]
        pytest.skip(f"`sentidistill {words[0]}` is not registered in this checkout yet")
    cmd = group.commands[words[0]]  # type: ignore[attr-defined]
    for word in words[1:]:
        cmd = cmd.commands[word]
    assert cmd.name == words[-1]


def test_unreachable_cluster_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from sentidistill.cli import app

    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "unset-after-test")  # the command sets it: undone after the test
    cfg = _write_config(tmp_path, f"run_dir: {tmp_path / 'run'}\ntrain: {{model: {{student: s}}}}\n")
    res = CliRunner().invoke(app, ["submit", str(cfg), "--stage", "validate", "--working-dir", str(tmp_path),
                                   "--runtime-env", str(RUNTIME_ENV), "--address", f"http://127.0.0.1:{_free_port()}"])
    assert isinstance(res.exception, ConfigError) and "cannot reach the Ray dashboard" in str(res.exception)


def test_is_loopback() -> None:
    assert sub.is_loopback("http://127.0.0.1:8265") and sub.is_loopback("http://localhost:8265")
    assert not sub.is_loopback("http://10.0.0.5:8265") and not sub.is_loopback("http://head.internal:8265")


# ---- real cluster ---------------------------------------------------------------------------------

def test_submit_validate_succeeds_then_a_failing_job_exits_nonzero(ray_head: str, tmp_path: Path) -> None:
    cfg = _write_config(tmp_path, f"run_dir: {tmp_path / 'run'}\ntrain: {{model: {{student: s}}}}\n")
    ok = _submit(ray_head, tmp_path, str(cfg), "validate")
    assert ok.returncode == 0, ok.stderr + ok.stdout
    job_id = ok.stdout.splitlines()[0]
    assert job_id.startswith("sentidistill-validate-")
    assert "cfg.yaml is valid" in ok.stdout  # the job's own log, streamed by --follow
    from ray.job_submission import JobSubmissionClient

    info = JobSubmissionClient(ray_head).get_job_info(job_id)
    assert info.status == "SUCCEEDED" and info.metadata["config"] == "cfg.yaml"

    # the client accepts it; the stage command on the cluster rejects the option and the job fails
    bad = _submit(ray_head, tmp_path, str(cfg), "validate", "--", "--no-such-option", follow=False)
    assert bad.returncode == 1, bad.stderr + bad.stdout
    assert "FAILED" in bad.stderr


def test_failing_entrypoint_reports_failed(ray_head: str) -> None:
    spec = sub.JobSpec(entrypoint=f"{sys.executable} -c 'raise SystemExit(3)'", runtime_env={})
    job_id = sub.submit(ray_head, spec)
    status = sub.wait(ray_head, job_id, follow=True, write=lambda s: None, poll_s=0.2)
    assert status == "FAILED" and sub.exit_code(status) == 1
    assert "3" in sub.job_message(ray_head, job_id)


def test_client_refuses_bad_config_and_unshared_storage(ray_head: str, tmp_path: Path) -> None:
    cfg = _write_config(tmp_path, f"run_dir: {tmp_path / 'run'}\ntrain: {{model: {{student: s}}}}\n")
    bad = _submit(ray_head, tmp_path, str(cfg), "train", "train.deepspeed.zero_stage=7")
    assert bad.returncode == 2 and "train.deepspeed.zero_stage" in bad.stderr
    # this one-node CPU cluster would have to grow for an H100 teacher: a local run_dir is refused
    gpu = _submit(ray_head, tmp_path, str(cfg), "generate", "teacher.resources.num_gpus=8", "teacher.resources.accelerator_type=H100")
    assert gpu.returncode == 2 and "autoscaler will add nodes" in gpu.stderr


def _generate_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("sentidistill.stages.generate") is not None


@pytest.mark.slow
@pytest.mark.skipif(not _generate_available(), reason="stages.generate is not in this checkout yet")
def test_submit_generate_writes_artifacts(ray_head: str, tmp_path: Path, tiny_model: Path) -> None:
    (tmp_path / "corpus.jsonl").write_text("".join(
        json.dumps({"text": f"Review {i}: the soup was {w} and the staff were friendly."}) + "\n"
        for i, w in enumerate(["great", "cold", "salty"])))
    run_dir = tmp_path / "run"
    cfg = _write_config(tmp_path, f"""
run_dir: {run_dir}
ray: {{runtime_env: {{env_vars: {{SENTIDISTILL_JOB_MARK: "1"}}}}}}
teacher: {{kind: hf, model: {tiny_model}, max_model_len: 512, resources: {{batch_size: 4, concurrency: 1}}}}
corpus: {{sources: [{{path: corpus.jsonl}}]}}
generate: {{perspectives: [overall], max_new_tokens: 8, temperature: 0}}
train: {{model: {{student: {tiny_model}}}}}
""")
    done = _submit(ray_head, tmp_path, str(cfg), "generate")
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    manifest = json.loads((run_dir / "knowdist" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"]["pairs"] == 3
    assert manifest["outputs"] and all((run_dir / "knowdist" / o).is_file() for o in manifest["outputs"])

    # a bad config the client cannot see through: the corpus file is missing on the cluster
    missing = _submit(ray_head, tmp_path, str(cfg), "generate", "corpus.sources=[{path: nope.jsonl}]",
                      f"run_dir={tmp_path / 'run2'}", follow=False)
    assert missing.returncode == 1 and "FAILED" in missing.stderr
