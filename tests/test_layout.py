"""RunLayout: where every stage lives, the stage order, the final student, and the run dir's housekeeping."""

from __future__ import annotations

from pathlib import Path

from sentidistill.config import PipelineConfig
from sentidistill.layout import ORDER, RunLayout
from sentidistill.rundir import RunDir


def _cfg(run_dir: Path, icldist: bool = True) -> PipelineConfig:
    return PipelineConfig.model_validate({"run_dir": str(run_dir),
                                          "train": {"model": {"student": "some/student"},
                                                    "icldist": {"enabled": icldist}}})


def _complete(rd: RunDir, folder: str) -> None:
    with rd.stage_run(folder, "h", {}):
        pass


def test_artifact_paths() -> None:
    assert RunLayout.data("knowdist") == "knowdist/data"
    assert RunLayout.train("icldist") == "train/icldist"
    assert RunLayout.model("knowdist") == "train/knowdist/model"
    assert RunLayout.metrics("icldist") == "train/icldist/metrics.jsonl"
    assert RunLayout.ray_checkpoints("knowdist") == "train/ray/knowdist"
    assert RunLayout.eval("student-after") == "eval/student-after"
    assert (RunLayout.REPORT_HTML, RunLayout.EVAL_SUMMARY) == ("report/index.html", "eval/summary.md")
    assert ORDER.index("knowdist") < ORDER.index("train/knowdist") < ORDER.index("eval") < ORDER.index("report")


def test_final_student_follows_the_enabled_stages(tmp_path: Path) -> None:
    lay = RunLayout(str(tmp_path))
    assert lay.final_student(_cfg(tmp_path)) == str(tmp_path / "train/icldist/model")
    assert lay.final_student(_cfg(tmp_path, icldist=False)) == str(tmp_path / "train/knowdist/model")
    assert lay.trained_stage(str(tmp_path / "train/knowdist/model/")) == "train/knowdist"
    assert lay.trained_stage("HuggingFaceTB/SmolLM2-135M") is None


def test_stage_states_in_pipeline_order(tmp_path: Path) -> None:
    rd = RunDir(str(tmp_path))
    for folder in ("report", "eval/b", "train/icldist", "eval/a", "knowdist", "ablate", "icldist", "train/knowdist"):
        _complete(rd, folder)
    rd.write_json("train/ray/knowdist/manifest.json", {"not": "a stage"})  # Ray Train's storage is skipped
    assert [f for f, _ in RunLayout(rd).stage_states()] == [
        "knowdist", "icldist", "train/knowdist", "train/icldist", "eval/a", "eval/b", "report", "ablate"]
    lay = RunLayout(rd)
    finished = lay.finished(["knowdist", "eval/missing"])
    assert finished["knowdist"] and finished["eval/missing"] is None


def test_partial_writes_are_dropped(tmp_path: Path) -> None:
    rd = RunDir(str(tmp_path))
    rd.write_text("eval/m/parts/a.json", "{}")
    rd.write_text("eval/m/parts/b.json.tmp-1234abcd", "half")
    RunLayout(rd).drop_partial_writes("eval/m/parts")
    assert rd.list_files("eval/m/parts") == ["a.json"]


def test_set_aside_moves_other_settings_and_never_deletes(tmp_path: Path) -> None:
    rd = RunDir(str(tmp_path))
    lay = RunLayout(rd)
    with rd.stage_run("knowdist", "old", {"corpus": "1"}):
        rd.write_text("knowdist/data/part-0.parquet", "x")
    assert lay.set_aside("knowdist", "old", {"corpus": "1"}, force=False) is None  # same settings: kept
    assert rd.exists("knowdist/data/part-0.parquet")
    assert lay.set_aside("knowdist", "new", {"corpus": "1"}, force=False) == "knowdist.prev-old"
    assert not rd.exists("knowdist") and rd.exists("knowdist.prev-old/data/part-0.parquet")
    rd.write_text("knowdist/data/part-1.parquet", "y")  # no manifest at all: moved too, under 'unknown'
    assert lay.set_aside("knowdist", "new", {}, force=False) == "knowdist.prev-unknown"
    with rd.stage_run("knowdist", "old", {}):
        pass
    assert lay.set_aside("knowdist", "old", {}, force=True) == "knowdist.prev-old-2"  # --force, name taken


def test_publish_replaces_the_folder_whole(tmp_path: Path) -> None:
    rd = RunDir(str(tmp_path / "run"))
    rd.write_text("train/knowdist/model/stale.bin", "old")
    src = tmp_path / "export"
    src.mkdir()
    (src / "config.json").write_text("{}")
    RunLayout(rd).publish(src, RunLayout.model("knowdist"))
    assert rd.list_files("train/knowdist/model") == ["config.json"]
    assert not [p for p in (tmp_path / "run/train/knowdist").iterdir() if ".tmp-" in p.name]



def test_status_command_lists_stages_in_order(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sentidistill.cli import app

    rd = RunDir(str(tmp_path))
    _complete(rd, "train/knowdist")
    _complete(rd, "knowdist")
    rd.write_manifest(rd.manifest("knowdist").model_copy(update={"stage": "icldist", "status": "running"}))
    result = CliRunner().invoke(app, ["status", str(tmp_path)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.index("knowdist") < out.index("icldist") < out.index("train/knowdist")
    assert "running or interrupted" in out
    empty = CliRunner().invoke(app, ["status", str(tmp_path / "none")])
    assert empty.exit_code == 1 and "no stage has started" in empty.output
