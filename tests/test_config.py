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
    p = _write(tmp_path, "train:\n  model: {student: x}\n  knowdist:\n    lr: fast\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "train.knowdist.lr" in str(e.value) and "'fast'" in str(e.value)


def test_train_lr_fast_fails_naming_train_lr(tmp_path: Path) -> None:
    p = _write(tmp_path, "train:\n  model: {student: x}\n  optimizer: {lr: fast}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "train.optimizer.lr: Input should be a valid number" in str(e.value) and "'fast'" in str(e.value)


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    p = _write(tmp_path, "train:\n  model: {student: x}\n  lerning_rate: 1\n")
    with pytest.raises(ConfigError, match=r"train\.lerning_rate: unknown key"):
        load_config(p)


def test_all_errors_reported_at_once(tmp_path: Path) -> None:
    p = _write(tmp_path, "train:\n  model: {student: x}\n  deepspeed: {zero_stage: 7}\n  optimizer: {micro_batch_size: -1}\neval:\n  k: many\n")
    msg = str(pytest.raises(ConfigError, load_config, p).value)
    for field in ("train.deepspeed.zero_stage", "train.optimizer.micro_batch_size", "eval.k"):
        assert field in msg


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "train: [unclosed\n"))


def test_cross_field_rule_names_keys(tmp_path: Path) -> None:
    p = _write(tmp_path, "train:\n  model: {student: x}\n  optimizer: {effective_batch_size: 10, micro_batch_size: 4}\n")
    with pytest.raises(ConfigError, match="train.optimizer.effective_batch_size"):
        load_config(p)


def test_engine_kind_requirements(tmp_path: Path) -> None:
    p = _write(tmp_path, "train: {model: {student: x}}\nteacher:\n  kind: openai\n")
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
    assert small.icl.examples_per_task == 3 and small.eval.limit == 3
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

    p = _write(tmp_path, "train:\n  model: {student: x}\n  optimizer: {lr: fast}\n")
    r = subprocess.run([sys.executable, "-m", "sentidistill", "config", "validate", str(p)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "train.optimizer.lr" in r.stderr and "Traceback" not in r.stderr


# -- the config layout (issue 14): old flat keys fail naming their new place ------------------------------
OLD_LAYOUT = """\
train:
  student: x
  lr: 1.0e-4
  num_workers: 4
  checkpoint_every_steps: 5
teacher:
  kind: vllm
  tensor_parallel_size: 2
  num_gpus: 2
eval:
  engine: {kind: openai, base_url: "http://h/v1", batch_size: 4}
knowdist: {per_text: 2}
icldist: {k_max: 2}
"""


def test_old_layout_names_every_moved_key_with_its_new_path(tmp_path: Path) -> None:
    msg = str(pytest.raises(ConfigError, load_config, _write(tmp_path, OLD_LAYOUT)).value)
    for moved in ("train.student -> train.model.student", "train.lr -> train.optimizer.lr",
                  "train.num_workers -> train.resources.num_workers",
                  "train.checkpoint_every_steps -> train.checkpoint.every_steps",
                  "teacher.tensor_parallel_size -> teacher.vllm.tensor_parallel_size",
                  "teacher.num_gpus -> teacher.resources.num_gpus",
                  "eval.engine.base_url -> eval.engine.openai.base_url",
                  "eval.engine.batch_size -> eval.engine.resources.batch_size",
                  "knowdist -> generate", "icldist -> icl"):
        assert moved in msg
    assert "docs/configuration.md" in msg


def test_old_key_in_an_override_fails_the_same_way() -> None:
    with pytest.raises(ConfigError, match=r"train\.lr -> train\.optimizer\.lr"):
        load_config(None, ["train.model.student=x", "train.lr=1e-4"])
    with pytest.raises(ConfigError, match=r"serve\.engine\.num_gpus -> serve\.engine\.resources\.num_gpus"):
        load_config(None, ["train.model.student=x", "serve.engine.num_gpus=1"])


def test_engine_config_alone_names_moved_keys() -> None:
    from pydantic import ValidationError

    from sentidistill.config import EngineConfig

    with pytest.raises(ValidationError, match=r"max_num_seqs -> vllm\.max_num_seqs"):
        EngineConfig(kind="vllm", max_num_seqs=4)


def test_engine_sections_follow_the_kind(tmp_path: Path) -> None:
    cfg = load_config(None, ["train.model.student=x", "teacher.kind=vllm"])
    assert cfg.teacher.vllm is not None and cfg.teacher.hf is None  # the kind's section gets its defaults
    with pytest.raises(ConfigError, match=r"teacher: .*kind is 'hf' but the section\(s\) \['vllm'\] are set"):
        load_config(None, ["train.model.student=x", "teacher.vllm.max_num_seqs=4"])
    with pytest.raises(ConfigError, match=r"eval\.engine: .*'openai' section with base_url"):
        load_config(None, ["train.model.student=x", "eval.engine.kind=openai"])


def test_resources_stay_out_of_stage_hashes() -> None:
    from sentidistill.config import output_settings

    base = load_config(REPO / "jobs/configs/gpu-cluster.yaml")
    faster = load_config(REPO / "jobs/configs/gpu-cluster.yaml", [
        "teacher.resources.concurrency=4", "teacher.resources.batch_size=8", "teacher.vllm.max_num_seqs=8",
        "train.data.tokenize_workers=8", "train.checkpoint.every_steps=7", "train.checkpoint.keep=5"])
    assert output_settings(base.teacher) == output_settings(faster.teacher)
    assert output_settings(base.train) == output_settings(faster.train)
    assert "resources" not in output_settings(base.teacher) and "checkpoint" not in output_settings(base.train)
    other = load_config(REPO / "jobs/configs/gpu-cluster.yaml", ["teacher.vllm.tensor_parallel_size=4",
                                                                  "train.data.max_seq_len=1024"])
    assert output_settings(other.teacher) != output_settings(base.teacher)
    assert output_settings(other.train) != output_settings(base.train)


def test_configuration_doc_lists_every_moved_key() -> None:
    from sentidistill.config import _ENGINE_MOVES, _TRAIN_MOVES

    doc = (REPO / "docs" / "configuration.md").read_text()
    layout = doc[doc.index("## Config layout"):]
    for key in [*_ENGINE_MOVES, *_TRAIN_MOVES]:
        assert f"`{key}`" in layout or f", `{key}`" in layout or f"`<engine>.{key}`" in layout \
            or f"`train.{key}`" in layout, key


def test_tiny_config_fixture_is_the_shipped_tiny_yaml_on_the_tiny_model(tiny_config, tiny_model: Path) -> None:
    shipped = load_config(REPO / "jobs/configs/tiny.yaml")
    cfg = tiny_config.load(eval={"limit": 1})
    assert cfg.teacher.model == str(tiny_model) and cfg.train.model.init is not None
    assert cfg.train.model.init.from_model == str(tiny_model) and cfg.run_dir == str(tiny_config.root / "run")
    assert cfg.eval.limit == 1 and cfg.eval.tasks == shipped.eval.tasks  # merged, not replaced
    assert cfg.generate == shipped.generate and cfg.train.optimizer == shipped.train.optimizer
