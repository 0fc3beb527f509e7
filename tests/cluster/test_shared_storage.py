"""Cluster first-run blockers on a real S3 server: SentiBench on s3://, remote models without their
weights on the head, the teacher scored on its own resources, secrets at node start."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from typer.testing import CliRunner

from sentidistill.cli import app
from sentidistill.config import load_config
from sentidistill.data.locate import resolve_data_path
from sentidistill.errors import DataNotFoundError
from sentidistill.tasks import load_registry
from sentidistill.tasks.splits import load_split

REPO = Path(__file__).resolve().parents[2]


def _put(uri: str, data: bytes) -> None:
    fs, path = pafs.FileSystem.from_uri(uri)
    with fs.open_output_stream(path) as f:
        f.write(data)


def test_data_fetch_to_s3_and_every_split_read_there(bucket: str, tmp_path: Path, monkeypatch) -> None:
    local = tmp_path / "sentibench" / "sc" / "sst2"
    local.mkdir(parents=True)
    (local / "train.json").write_text('\ufeff[{"sentence": "a gripping film", "label": "positive"}]', encoding="utf-8")
    (local / "test.json").write_text('[{"sentence": "dull", "label": "negative"}]', encoding="utf-8")
    res = CliRunner().invoke(app, ["data", "fetch", "sentibench", "--from", str(tmp_path / "sentibench"),
                                   "--to", f"{bucket}/data"])
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1] == f"{bucket}/data"
    fs, root = pafs.FileSystem.from_uri(f"{bucket}/data/sentibench")
    with fs.open_input_stream(f"{root}/fetch-manifest.json") as f:
        assert set(json.loads(f.read())["files"]) == {"sc/sst2/train.json", "sc/sst2/test.json"}

    # a local copy exists too (the shared checkout): a remote data_dir must never fall back to it
    monkeypatch.setenv("SENTIDISTILL_DATA", str(tmp_path))
    got = resolve_data_path("data://sentibench/sc/sst2/test.json", f"{bucket}/data")
    assert got == f"{bucket}/data/sentibench/sc/sst2/test.json"
    cfg = load_config(None, ["train.model.student=x", f"data_dir={bucket}/data"])
    task = load_registry(cfg)["sst2"]
    rows = load_split(task, "train", cfg.data_dir)
    assert [r.text for r in rows] == ["a gripping film"]
    with pytest.raises(DataNotFoundError, match=rf"{bucket}/data/sentibench/sc/imdb/test.json.*fetch sentibench --to"):
        resolve_data_path("data://sentibench/sc/imdb/test.json", f"{bucket}/data")
    monkeypatch.setenv("SENTIDISTILL_DATA", f"{bucket}/data")  # the env var a node image may set instead
    assert resolve_data_path("data://sentibench/sc/sst2/test.json").startswith(f"{bucket}/data/")


def test_data_fetch_to_needs_shared_storage(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["data", "fetch", "sentibench", "--from", str(tmp_path), "--to", str(tmp_path)])
    assert res.exit_code != 0
    assert "s3://bucket/path" in str(res.exception) + res.output


def test_remote_model_metadata_without_weights(bucket: str, tiny_model: Path, tmp_path: Path) -> None:
    from sentidistill.models import remote_fingerprint, resolve_metadata

    ref = f"{bucket}/models/tiny"
    for f in tiny_model.iterdir():
        _put(f"{ref}/{f.name}", f.read_bytes())
    before = remote_fingerprint(ref)
    path = resolve_metadata(ref, tmp_path / "cache")
    names = {p.name for p in path.iterdir()}
    assert "config.json" in names and "tokenizer.json" in names
    assert not [n for n in names if n.endswith(".safetensors")], names  # no weights on the head
    assert not list((tmp_path / "cache").rglob("*.safetensors"))
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(path)("hello")["input_ids"]
    _put(f"{ref}/config.json", (tiny_model / "config.json").read_bytes() + b"\n")
    assert remote_fingerprint(ref) != before


def test_eval_fingerprints_remote_models_from_metadata(bucket: str, tiny_model: Path, tmp_path: Path) -> None:
    from sentidistill.rundir import RunDir
    from sentidistill.stages.evaluate import model_inputs

    ref = f"{bucket}/models/teacher"
    for f in tiny_model.iterdir():
        _put(f"{ref}/{f.name}", f.read_bytes())
    cfg = load_config(None, ["train.model.student=x", f"cache_dir={tmp_path / 'cache'}", "eval.engine.kind=vllm"])
    inputs, path = model_inputs(cfg, RunDir(str(tmp_path / "run")), ref)
    assert set(inputs) == {"model"} and path is not None and (path / "tokenizer.json").is_file()
    assert not list((tmp_path / "cache").rglob("*.safetensors"))


def test_teacher_is_scored_on_its_own_resources() -> None:
    from sentidistill.stages.evaluate import model_engine, teacher_engine

    cfg = load_config(REPO / "jobs/configs/gpu-cluster.yaml")
    engine = teacher_engine(cfg)
    assert engine.vllm is not None and engine.vllm.tensor_parallel_size == 8
    assert (engine.resources.num_gpus, engine.resources.accelerator_type) == (8, "H100")
    assert (engine.kind, engine.resources.batch_size, engine.dtype) == (cfg.eval.engine.kind, cfg.eval.engine.resources.batch_size,
                                                              cfg.eval.engine.dtype)
    assert model_engine(engine, cfg.teacher.model).model == cfg.teacher.model
    assert cfg.eval.engine.resources.num_gpus == 1  # the students keep eval.engine's one-GPU slot


def _start(tmp_path: Path, env_file: str, extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    fake = tmp_path / "fake-ray"
    fake.write_text('#!/usr/bin/env bash\necho "args=$*"\necho "token=${HF_TOKEN:-}"\n')
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "SENTIDISTILL_API_KEY")}
    env.update({"RAY": str(fake), "SENTIDISTILL_ENV_FILE": env_file, **extra})
    return subprocess.run(["bash", str(REPO / "cluster/start-ray.sh"), "--head", "--port=6379"],
                          env=env, capture_output=True, text=True, timeout=30)


def test_start_ray_exports_the_env_file_and_names_what_is_missing(tmp_path: Path) -> None:
    env_file = tmp_path / "sentidistill.env"
    env_file.write_text("HF_TOKEN=hf_abc\n")
    missing = _start(tmp_path, str(env_file), {})
    assert missing.returncode == 78
    assert "SENTIDISTILL_API_KEY not set" in missing.stderr and "hf_abc" not in missing.stderr
    env_file.write_text("HF_TOKEN=hf_abc\nSENTIDISTILL_API_KEY=sk-1\n")
    ok = _start(tmp_path, str(env_file), {})
    assert ok.returncode == 0, ok.stderr
    assert "args=start --head --port=6379" in ok.stdout and "token=hf_abc" in ok.stdout
    only_hf = _start(tmp_path, str(tmp_path / "absent.env"), {"SENTIDISTILL_REQUIRED_ENV": "HF_TOKEN"})
    assert only_hf.returncode == 78 and "HF_TOKEN not set" in only_hf.stderr
