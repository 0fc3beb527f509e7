"""Config: every shipped YAML validates; bad input names the dotted field and the value."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sentidistill.cli import app
from sentidistill.config import PipelineConfig, apply_overrides, config_hash, load_config, with_limit
from sentidistill.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "jobs" / "configs").rglob("*.yaml"))


def test_shipped_configs_are_found() -> None:
    names = {p.name for p in SHIPPED}
    assert {"local.yaml", "gpu-cluster.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_validates(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, PipelineConfig)


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_wrong_type_names_field_and_value(tmp_path: Path) -> None:
    p = _write(tmp_path, "train:\n  student: x\n  knowdist:\n    lr: fast\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "train.knowdist.lr" in str(e.value) and "'fast'" in str(e.value)


def test_train_lr_fast_fails_naming_train_lr(tmp_path: Path) -> None:
    p = _write(tmp_path, "train:\n  student: x\n  lr: fast\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "train.lr: Input should be a valid number" in str(e.value) and "'fast'" in str(e.value)


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    p = _write(tmp_path, "train:\n  student: x\n  lerning_rate: 1\n")
    with pytest.raises(ConfigError, match=r"train\.lerning_rate: unknown key"):
        load_config(p)


def test_all_errors_reported_at_once(tmp_path: Path) -> None:
    p = _write(tmp_path, "train:\n  student: x\n  zero_stage: 7\n  micro_batch_size: -1\neval:\n  k: many\n")
    msg = str(pytest.raises(ConfigError, load_config, p).value)
    for field in ("train.zero_stage", "train.micro_batch_size", "eval.k"):
        assert field in msg


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "train: [unclosed\n"))


def test_cross_field_rule_names_keys(tmp_path: Path) -> None:
    p = _write(tmp_path, "train:\n  student: x\n  effective_batch_size: 10\n  micro_batch_size: 4\n")
    with pytest.raises(ConfigError, match="train.effective_batch_size"):
        load_config(p)


def test_engine_kind_requirements(tmp_path: Path) -> None:
    p = _write(tmp_path, "train: {student: x}\nteacher:\n  kind: openai\n")
    with pytest.raises(ConfigError, match="teacher: .*base_url"):
        load_config(p)


def test_overrides_typed_and_nested() -> None:
    data = apply_overrides({}, ["train.knowdist.lr=1e-4", "eval.seeds=[1,2]", "run_dir=s3://b/r"])
    assert data == {"train": {"knowdist": {"lr": 1e-4}}, "eval": {"seeds": [1, 2]}, "run_dir": "s3://b/r"}
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides({}, ["nonsense"])


def test_overrides_address_list_items() -> None:
    data = {"corpus": {"sources": [{"path": "a", "limit": 10}, {"path": "b"}]}}
    apply_overrides(data, ["corpus.sources.1.limit=3", "corpus.sources.0.path=c"])
    assert data["corpus"]["sources"] == [{"path": "c", "limit": 10}, {"path": "b", "limit": 3}]
    with pytest.raises(ConfigError, match="corpus.sources is a list of 2; '2' is not an index"):
        apply_overrides(data, ["corpus.sources.2.limit=3"])
    with pytest.raises(ConfigError, match="corpus.sources.0.path is not a section"):
        apply_overrides(data, ["corpus.sources.0.path.x=3"])


def test_with_limit_caps_every_data_size() -> None:
    cfg = load_config(REPO / "jobs/configs/local.yaml")
    small = with_limit(cfg, 3)
    assert [s.limit for s in small.corpus.sources] == [min(s.limit or 3, 3) for s in cfg.corpus.sources]
    assert small.icldist.examples_per_task == 3 and small.eval.limit == 3
    assert with_limit(cfg, 1000).eval.limit == cfg.eval.limit  # a smaller configured limit is kept
    assert with_limit(cfg, 1000).corpus.sources[0].limit == cfg.corpus.sources[0].limit
    with pytest.raises(ConfigError, match="--limit must be at least 1"):
        with_limit(cfg, 0)


def test_config_hash_is_stable_and_sensitive() -> None:
    a = load_config(SHIPPED[0])
    b = load_config(SHIPPED[0], ["eval.k=2"])
    assert config_hash(a.eval) == config_hash(load_config(SHIPPED[0]).eval)
    assert config_hash(a.eval) != config_hash(b.eval)


def test_cli_validate_show_schema(tmp_path: Path) -> None:
    runner = CliRunner()
    local = str(REPO / "jobs" / "configs" / "local.yaml")
    assert runner.invoke(app, ["config", "validate", local]).exit_code == 0
    shown = runner.invoke(app, ["config", "show", local, "eval.k=3"])
    assert shown.exit_code == 0 and "k: 3" in shown.output and "max_failures" in shown.output
    schema = runner.invoke(app, ["config", "schema"])
    assert schema.exit_code == 0 and '"PipelineConfig"' in schema.output


def test_cli_main_prints_error_without_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    p = _write(tmp_path, "train:\n  student: x\n  lr: fast\n")
    r = subprocess.run([sys.executable, "-m", "sentidistill", "config", "validate", str(p)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "train.lr" in r.stderr and "Traceback" not in r.stderr
