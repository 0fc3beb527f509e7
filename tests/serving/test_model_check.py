"""A model the replicas could not load fails `serve` in seconds, before Ray starts, naming the cause."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sentidistill.errors import ModelNotFoundError
from sentidistill.serving.app import short_name
from sentidistill.serving.model_check import check_model


@pytest.fixture
def broken(tmp_path: Path, tiny_model: Path) -> dict[str, Path]:
    no_config = tmp_path / "no-config"
    shutil.copytree(tiny_model, no_config)
    (no_config / "config.json").unlink()
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model, pickled)
    for w in pickled.glob("*.safetensors"):
        w.rename(w.with_suffix(".bin"))
    truncated = tmp_path / "truncated"
    shutil.copytree(tiny_model, truncated)
    weights = next(truncated.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return {"missing": tmp_path / "nowhere", "no_config": no_config, "pickled": pickled, "truncated": truncated}


@pytest.mark.parametrize(("case", "cause"), [
    ("missing", "not found"), ("no_config", "has no config.json"), ("pickled", "only pickle weights"),
    ("truncated", "truncated"),
])
def test_bad_model_folders_name_the_cause(broken: dict[str, Path], case: str, cause: str) -> None:
    with pytest.raises(ModelNotFoundError, match=cause):
        check_model(str(broken[case]), None, resolve_remote=True)


def test_good_folder_and_unknown_hub_id(tiny_model: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    check_model(str(tiny_model), None, resolve_remote=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="Hugging Face hub 'no-such-org/no-such-model'"):
        check_model("no-such-org/no-such-model", str(tmp_path), resolve_remote=True)
    check_model("no-such-org/no-such-model", str(tmp_path), resolve_remote=False)  # the cluster may see it


@pytest.mark.parametrize(("case", "cause"), [("pickled", "only pickle weights"), ("truncated", "truncated")])
def test_cli_fails_before_ray_with_the_cause_last(broken: dict[str, Path], shared_data: Path, tmp_path: Path,
                                                  case: str, cause: str) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text(f"data_dir: {shared_data}\nrun_dir: {tmp_path / 'run'}\ntrain: {{model: {{student: unused}}}}\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "80"}
    env.pop("RAY_ADDRESS", None)
    t0 = time.monotonic()
    done = subprocess.run([str(Path(sys.executable).parent / "sentidistill"), "serve", str(config), "--model",
                           str(broken[case])], capture_output=True, text=True, env=env, timeout=120)
    elapsed = time.monotonic() - t0
    out = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 2, out
    assert cause in out[-1] and str(broken[case]) in out[-1], out[-3:]
    assert not any("Ray" in line for line in out), out  # Ray never started
    assert elapsed < 60


def test_short_served_names() -> None:
    assert short_name("/abs/runs/local/train/icldist/model") == "icldist-model"
    assert short_name("/srv/students/tiny/") == "tiny"
    assert short_name("HuggingFaceTB/SmolLM2-135M") == "SmolLM2-135M"
    assert short_name("s3://bucket/students/1b") == "1b"
    assert short_name("smollm2-135m-instruct") == "smollm2-135m-instruct"
