"""`sentidistill ablate`: variant configs, shared data, the step budget of the gold baseline and the
summary (fast, no Ray), then the whole ablation on the tiny model with its resume (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from sentidistill.cli import app
from sentidistill.config import load_config
from sentidistill.errors import ConfigError, StageInputError
from sentidistill.rundir import Manifest, RunDir
from sentidistill.stages import ablate
from sentidistill.tasks import load_registry
from test_pipeline import pipeline_config
from test_report_stage import scored

STUDENT = "/models/base-student"


def complete(rd: RunDir, stage: str, **counts: int) -> Manifest:
    m = Manifest(stage=stage, status="complete", config_hash="h", counts=counts, finished_at="2026-01-01T00:00:00")
    rd.write_manifest(m)
    return m


def test_variant_configs_share_data_and_give_gold_the_same_steps(tiny_config) -> None:
    cfg = load_config(pipeline_config(tiny_config), ["train.icldist.replay_share=0.2"])
    rd = RunDir(cfg.run_dir)
    with pytest.raises(StageInputError, match="train/knowdist .* not complete"):
        ablate.distilled_steps(rd)
    complete(rd, "train/knowdist", steps=3)
    complete(rd, "train/icldist", steps=4)
    assert ablate.distilled_steps(rd) == 7

    only = ablate.variant_config(cfg, rd, "icldist", STUDENT)
    assert only.run_dir == rd.uri("ablate/icldist") and only.train.model.student == STUDENT and only.train.model.init is None
    assert not only.train.knowdist.enabled and only.train.icldist.enabled and only.train.icldist.replay_share == 0
    assert only.icl.target == cfg.icl.target and only.eval == cfg.eval
    gold = ablate.variant_config(cfg, rd, "gold", STUDENT, 7)
    assert gold.icl.target == "gold" and gold.train.stage("icldist").max_steps == 7
    assert gold.train.stage("icldist").epochs >= 7 and gold.run_dir == rd.uri("ablate/gold")
    with pytest.raises(StageInputError, match="step count is unknown"):
        ablate.variant_config(cfg, rd, "gold", STUDENT)

    models = ablate.models(cfg, rd, STUDENT)
    assert list(models) == ["student-before", "knowdist", "icldist", "knowdist-icldist", "gold"]
    assert models["knowdist-icldist"] == rd.uri("train/icldist/model")
    assert models["gold"] == rd.uri("ablate/gold/train/icldist/model")

    off = load_config(pipeline_config(tiny_config), ["train.knowdist.enabled=false"])
    with pytest.raises(ConfigError, match="train.knowdist.enabled must be true"):
        ablate.check(off)


def test_shared_data_is_copied_once_with_its_manifest(tmp_path: Path) -> None:
    src, dst = RunDir(str(tmp_path / "run")), RunDir(str(tmp_path / "run/ablate/icldist"))
    with pytest.raises(StageInputError, match="icldist in .* is not complete"):
        ablate.share(src, dst, "icldist")
    buf = pa.BufferOutputStream()
    pq.write_table(pa.table({"id": ["a", "b"]}), buf)
    src.write_bytes("icldist/data/part-0.parquet", buf.getvalue().to_pybytes())
    m = complete(src, "icldist", kept=2)
    assert ablate.share(src, dst, "icldist") is True
    assert dst.list_files("icldist/data") == ["part-0.parquet"]
    assert dst.manifest("icldist").fingerprint() == m.fingerprint()
    assert ablate.share(src, dst, "icldist") is False  # already there: nothing copied
    complete(src, "icldist", kept=3)  # the base run rebuilt its data: the variant's copy is replaced
    dst.write_text("icldist/data/stale.parquet", "x")
    assert ablate.share(src, dst, "icldist") is True and dst.list_files("icldist/data") == ["part-0.parquet"]


def test_summary_pairs_every_variant_with_the_undistilled_student(tiny_config, shared_data: Path) -> None:
    registry = load_registry(data_dir=str(shared_data))
    cfg = load_config(pipeline_config(tiny_config))
    rd = RunDir(cfg.run_dir)
    targets = ablate.models(cfg, rd, STUDENT)
    scored(rd, registry, targets, n=40, resamples=200, period=5)
    first = ablate.summarise(cfg, rd, targets)
    summary = rd.read_text(ablate.SUMMARY_MD)
    assert "| task | student-before | knowdist | Δ knowdist | icldist | Δ icldist | knowdist-icldist |" in summary
    assert "| sst2 |" in summary and "imdb" not in summary and " * |" in summary  # 80% vs 20% right: significant
    assert "Seeds 42: the SentiBench protocol averages seeds 42, 52 and 62" in summary
    assert rd.read_bytes(ablate.CHART_PNG)[:4] == b"\x89PNG"
    table = first.extra["table"]
    assert table["reference"] == "student-before" and [r["name"] for r in table["rows"]][0] == "sst2"
    assert ablate.summarise(cfg, rd, targets).finished_at == first.finished_at  # unchanged inputs: skipped


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_ablate_on_the_tiny_model_then_resume(tiny_config, shared_data: Path, ray_local) -> None:
    config = pipeline_config(tiny_config)
    runner = CliRunner()
    env = {"COLUMNS": "250", "RAY_AUTH_MODE": "disabled"}
    # one training worker: four trainings start four Ray Train groups, the slow part here
    args = ["ablate", str(config), "ray.num_cpus=4", "train.resources.num_workers=1", "train.optimizer.effective_batch_size=1",
            "--limit", "2"]
    first = runner.invoke(app, args, env=env)
    assert first.exit_code == 0, first.output + repr(first.exception)
    cfg = load_config(config)
    rd = RunDir(cfg.run_dir)
    for folder in ("knowdist", "icldist", "train/knowdist", "train/icldist", "ablate/icldist/icldist",
                   "ablate/icldist/train/icldist", "ablate/gold/icldist", "ablate/gold/train/icldist", "ablate",
                   *(f"eval/{s}" for s in ("student-before", "knowdist", "icldist", "knowdist-icldist", "gold"))):
        assert rd.manifest(folder).status == "complete", folder
    steps = rd.manifest("ablate").counts["steps"]
    assert steps["gold"] == steps["knowdist"] + steps["knowdist-icldist"]
    assert rd.manifest("ablate/gold/icldist").extra["teacher"] == "gold"  # no teacher in the baseline
    only = rd.manifest("ablate/icldist/train/icldist")
    assert only.inputs["data:icldist"] == rd.manifest("icldist").fingerprint()  # the same data, not rebuilt
    header = next(line for line in first.output.splitlines() if "Δ gold" in line)
    assert header.index("student-before") < header.index("Δ knowdist") < header.index("Δ gold")
    assert "sst2" in first.output and "atsa_rest16" in first.output and "imdb" not in first.output
    assert "paired bootstrap" in first.output and "Only 2 test items per task" in first.output
    metrics = json.loads((Path(cfg.run_dir) / "eval/gold/metrics.json").read_text())
    assert metrics["tasks"]["sst2"]["ci"] and metrics["bootstrap"]["resamples"] == 1000

    # an interrupted ablation: the gold variant's evaluation and the summary never happened
    finished = {f: rd.manifest(f).finished_at for f in ("knowdist", "ablate/gold/train/icldist", "eval/icldist")}
    rd.delete("eval/gold")
    rd.delete("ablate/manifest.json")
    again = runner.invoke(app, args, env=env)
    assert again.exit_code == 0, again.output + repr(again.exception)
    assert {f: rd.manifest(f).finished_at for f in finished} == finished  # nothing else redone
    lines = [line.strip() for line in again.output.splitlines()]
    assert sum(line.startswith("skipped") for line in lines) >= 8, again.output
    assert any(line.startswith("ran") and "eval" in line for line in lines)
    assert rd.manifest("eval/gold").status == "complete" and "Δ gold" in again.output


def test_variant_subset_keeps_table_order_and_refuses_unknown_names() -> None:
    assert ablate.chosen(None) == ablate.VARIANTS
    assert ablate.chosen(["gold", "knowdist"]) == ("knowdist", "gold")
    with pytest.raises(ConfigError, match=r"--variant \['gld'\]: not a variant"):
        ablate.chosen(["gold", "gld"])
