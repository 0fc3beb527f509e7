"""The README's main command, for real: `sentidistill run jobs/configs/local.yaml` on SmolLM2 and ../shared/data.

Marked `e2e`: several minutes, but part of CI's default set (scripts/test.sh skips only `slow` and
`gpu`). `--limit 3` keeps every stage small (3 texts per corpus source, 3 ICL prompts and 3 test
items per task) while all 12 SentiBench tasks, both training stages and the three evaluated models run.
The report it writes is opened in a real headless Chromium.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from headless_browser import render
from sentidistill.cli import app
from sentidistill.rundir import RunDir
from sentidistill.tasks import load_registry

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[1]
MODELS = ("teacher", "student-before", "student-after")
STAGES = ("knowdist", "icldist", "train/knowdist", "train/icldist", *(f"eval/{m}" for m in MODELS), "report")


def run_default(run_dir: Path, cache_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The README command (plus a run dir, the test model cache and --limit), as a user runs it."""
    cmd = [sys.executable, "-m", "sentidistill", "run", "jobs/configs/local.yaml", f"run_dir={run_dir}",
           f"cache_dir={cache_dir}", "--limit", "3", *extra]
    env = {**os.environ, "COLUMNS": "200", "RAY_AUTH_MODE": "disabled"}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory, shared_data: Path, cache_dir: Path) -> tuple[Path, str]:
    run_dir = tmp_path_factory.mktemp("default-run") / "run"
    done = run_default(run_dir, cache_dir)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return run_dir, done.stdout + done.stderr  # rich's console (summary, tables) writes to stderr


def test_default_pipeline_runs_every_stage(default_run: tuple[Path, str]) -> None:
    run_dir, output = default_run
    rd = RunDir(str(run_dir))
    for stage in STAGES:
        assert rd.manifest(stage).status == "complete", stage
    assert rd.manifest("knowdist").counts["kept"] > 0
    assert rd.manifest("icldist").counts["kept"] > 0
    bench = [t.name for t in load_registry().benchmark()]
    for model in MODELS:
        metrics = rd.read_json(f"eval/{model}/metrics.json")
        assert sorted(metrics["tasks"]) == sorted(bench), model
        assert metrics["limit"] == 3 and metrics["sentibench"]["complete"]
        assert 0.0 <= metrics["sentibench"]["score"] <= 100.0
    # the student really is smaller than the teacher, and stage 2 started from stage 1's weights
    student_cfg = json.loads((run_dir / "train/icldist/model/config.json").read_text())
    assert student_cfg["num_hidden_layers"] == 12
    for stage in ("knowdist", "icldist"):  # exported students: safetensors only (DeepSpeed's resume state aside)
        exported = {p.suffix for p in (run_dir / f"train/{stage}/model").iterdir()}
        assert ".safetensors" in exported and not exported & {".bin", ".pt", ".pth", ".pkl"}, exported
    # the summary printed at the end: every step, then teacher / before / after side by side
    for step in ("generate", "icl", "train-knowdist", "train-icldist", "eval", "report"):
        assert step in output
    header = next(line for line in output.splitlines() if "student-before" in line and "teacher" in line)
    assert header.index("teacher") < header.index("student-before") < header.index("student-after")
    assert "SentiBench" in output and "report/index.html" in output
    # what the numbers cannot show is said under the table: 3 items per task, one seed
    assert "Only 3 test items per task" in output and "eval.limit=200 'eval.seeds=[42,52,62]'" in output
    assert "Seeds 42: the SentiBench protocol averages seeds 42, 52 and 62" in output


def test_report_renders_in_headless_chromium(default_run: tuple[Path, str], tmp_path: Path) -> None:
    run_dir, _ = default_run
    probe = """JSON.stringify({
      sections: [...document.querySelectorAll('h2[id]')].map(h => h.id),
      images: [...document.images].map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0,
                                               width: i.getBoundingClientRect().width})),
      header: [...document.querySelectorAll('#sentibench-table tr:first-child th')].map(c => c.textContent),
      rows: [...document.querySelectorAll('#sentibench-table tr')].slice(1).map(r => [...r.cells].map(c => c.textContent)),
      stages: [...document.querySelectorAll('#stages-table tr')].slice(1).map(r => r.cells[1].textContent),
      teacherSamples: document.querySelectorAll('#teacher-samples ~ h3').length,
      height: document.documentElement.scrollHeight,
    })"""
    shot = tmp_path / "report.png"
    page = render(run_dir / "report/index.html", probe, shot)
    seen = page["probe"]
    assert page["errors"] == [], page["errors"]  # no failed image loads, no script errors
    assert {"stages", "sentibench", "data", "training", "teacher-samples", "student-samples", "config"} <= set(seen["sections"])
    # each model with its interval; the teacher and the distilled student also with their paired
    # difference to the undistilled student
    assert seen["header"] == ["task", "teacher", "Δ teacher", "student-before", "student-after", "Δ student-after"]
    names = [r[0] for r in seen["rows"]]
    assert set(t.name for t in load_registry().benchmark()) <= set(names) and names[-1] == "SentiBench"
    score = re.compile(r"^\d+\.\d \[\d+\.\d, \d+\.\d\]$")
    delta = re.compile(r"^[+-]\d+\.\d \[[+-]\d+\.\d, [+-]\d+\.\d\]( \*)?$")
    for r in seen["rows"]:
        assert all(score.match(r[i]) for i in (1, 3, 4)) and all(delta.match(r[i]) for i in (2, 5)), r
    assert set(seen["stages"]) == {"complete"}
    srcs = [i["src"] for i in seen["images"]]
    assert any("comparison" in s for s in srcs) and sum("train" in s for s in srcs) >= 2, srcs
    assert all(i["ok"] and i["width"] > 100 for i in seen["images"]), seen["images"]
    # the screenshot shows a page, not a blank one: long, and with the charts' colours in it
    img = Image.open(shot).convert("RGB")
    assert img.height >= 1600 and img.height >= seen["height"] * 0.9
    colours = img.resize((256, img.height * 256 // img.width)).getcolors(maxcolors=1 << 16)
    assert colours is not None and len(colours) > 50


def test_rerun_skips_everything_and_status_reports_complete(default_run: tuple[Path, str], cache_dir: Path) -> None:
    run_dir, _ = default_run
    before = {s: RunDir(str(run_dir)).manifest(s).finished_at for s in STAGES if s != "report"}
    again = run_default(run_dir, cache_dir, "--until", "eval")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("skipped") >= 5, again.stderr[-3000:]
    assert {s: RunDir(str(run_dir)).manifest(s).finished_at for s in before} == before
    status = CliRunner().invoke(app, ["status", str(run_dir)], env={"COLUMNS": "250"})
    assert status.exit_code == 0
    assert "eval/student-after" in status.output and "running or interrupted" not in status.output
