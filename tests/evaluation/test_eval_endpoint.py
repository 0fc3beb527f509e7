"""`sentidistill eval --endpoint`: score the tiny model served by our Ray Serve app over real HTTP (127.0.0.1)
and check every prediction against the same weights scored in-process by the hf engine.

The app runs as configured for a cluster: a bearer key (serve.api_key_env) and a /v1/score cap
(serve.max_texts) below the eval engine's batch size.

Run with `pytest -m slow tests/evaluation/test_eval_endpoint.py`."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sentidistill.cli import app
from sentidistill.config import PipelineConfig, load_config
from sentidistill.serving import launch
from sentidistill.stages.evaluate import run

TASKS = ["sst2", "emotion20", "atsa_rest16"]
LIMIT = 5  # more prompts per label set than MAX_TEXTS: one unsplit /v1/score call would be refused (422)
MAX_TEXTS = 4
KEY_ENV = "SENTIDISTILL_TEST_EVAL_KEY"
# Every Ray process must have the key in its environment, as a cluster's nodes get it from the secret
# mechanism (never a runtime_env): set at import, i.e. before the session's Ray starts.
os.environ.setdefault(KEY_ENV, "eval-endpoint-key-5d1e")
SERVE_YAML = f"serve: {{max_texts: {MAX_TEXTS}, api_key_env: {KEY_ENV}}}\n"
pytestmark = pytest.mark.slow  # a Serve app plus three Ray Data runs: a few minutes here


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(ray_local, tiny_model: Path, shared_data: Path):
    cfg = load_config(None, [
        f"data_dir={shared_data}", "train.model.student=unused", f"serve.port={free_port()}", "serve.tasks=[sst2]",
        "serve.app_name=eval-endpoint-test", "serve.engine.name=tiny-student", "serve.engine.dtype=float32",
        "serve.engine.max_model_len=1024", "serve.engine.resources.batch_size=8", f"serve.max_texts={MAX_TEXTS}",
        f"serve.api_key_env={KEY_ENV}",
    ])
    endpoint = launch.start(cfg, str(tiny_model))
    yield endpoint
    launch.stop(cfg.serve.app_name)


def predictions(run_dir: Path, slug: str) -> dict[tuple[str, int], dict]:
    rows = [json.loads(x) for x in (run_dir / "eval" / slug / "predictions.jsonl").read_text().splitlines()]
    return {(r["task"], r["idx"]): r for r in rows}


def test_served_model_scores_like_the_same_weights_in_process(served: launch.Endpoint, tiny_model: Path,
                                                              shared_data: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = tmp_path / "cfg.yaml"
    config.write_text(f"run_dir: {run_dir}\ndata_dir: {shared_data}\ntrain: {{model: {{student: unused}}}}\n{SERVE_YAML}"
                      "eval: {max_new_tokens: 8, engine: {max_model_len: 1024, dtype: float32, "
                      "resources: {batch_size: 16}}}\n")
    result = CliRunner().invoke(app, ["eval", str(config), "--endpoint", served.base_url, "--model", served.served_name,
                                      "--tasks", ",".join(TASKS), "--limit", str(LIMIT), "--seeds", "42"])
    assert result.exit_code == 0, result.output
    local_cfg = PipelineConfig.model_validate({
        "run_dir": str(run_dir), "data_dir": str(shared_data), "train": {"model": {"student": "unused"}},
        "eval": {"tasks": TASKS, "limit": LIMIT, "seeds": [42], "max_new_tokens": 8,
                 "engine": {"kind": "hf", "dtype": "float32", "max_model_len": 1024}}})
    run(local_cfg, {"in-process": str(tiny_model)})

    served_metrics = json.loads((run_dir / "eval" / "tiny-student" / "metrics.json").read_text())
    assert served_metrics["engine"] == "openai" and served_metrics["model_ref"] == "tiny-student"
    remote, local = predictions(run_dir, "tiny-student"), predictions(run_dir, "in-process")
    assert remote.keys() == local.keys() and len(remote) == LIMIT * len(TASKS)
    for key, r in remote.items():
        ref = local[key]
        assert r["prompt_sha256"] == ref["prompt_sha256"] and r["gold"] == ref["gold"]
        if r["task"] == "atsa_rest16":  # greedy generation through /v1/completions
            assert r["raw_output"] == ref["raw_output"] and r["parsed"] == ref["parsed"]
        else:  # exact label logits through /v1/score
            assert r["scores"] == pytest.approx(ref["scores"], abs=1e-3) and r["parsed"] == ref["parsed"]
    manifest = json.loads((run_dir / "eval" / "tiny-student" / "manifest.json").read_text())
    assert list(manifest["inputs"]) == ["endpoint"] and manifest["status"] == "complete"


def test_an_endpoint_error_fails_only_its_parts_with_a_clear_message(served: launch.Endpoint, shared_data: Path,
                                                                     tmp_path: Path) -> None:
    """The openai engine configured by hand (no --endpoint): batches above the served cap are refused by
    /v1/score; the classification parts fail with the server's message, the extraction part is scored."""
    run_dir = tmp_path / "run"
    config = tmp_path / "cfg.yaml"
    config.write_text(
        f"run_dir: {run_dir}\ndata_dir: {shared_data}\ntrain: {{model: {{student: unused}}}}\n{SERVE_YAML}"
        f"eval: {{max_new_tokens: 8, engine: {{kind: openai, openai: {{base_url: '{served.base_url}', "
        f"api_key_env: {KEY_ENV}, max_retries: 0}}, max_model_len: 1024, resources: {{batch_size: 16}}}}}}\n")
    result = CliRunner().invoke(app, ["eval", str(config), "--model", served.served_name, "--tasks", ",".join(TASKS),
                                      "--limit", str(LIMIT), "--seeds", "42"])
    assert result.exit_code == 0, result.output  # the job ran to its end
    out = " ".join(result.output.split())  # rich wraps long lines
    assert "2 parts missing" in out and "EndpointError: HTTP 422" in out
    manifest = json.loads((run_dir / "eval" / served.served_name / "manifest.json").read_text())
    assert sorted(manifest["extra"]["missing"]) == ["emotion20/seed-42", "sst2/seed-42"]
    assert manifest["counts"]["errors"] == 2 * LIMIT
    assert all("EndpointError: HTTP 422 from /score" in e for e in manifest["extra"]["error_samples"])
