"""`icl` with a real teacher: the tiny Llama through the KnowDist engine pool on a local Ray.
Every prompt answered and judged, general rows take their gold under teacher_agree_gold, and an
interrupted build (a lost part, manifest still 'running') regenerates exactly the missing rows."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
from icl_helpers import icl_config, write_jsonl

from sentidistill.generation.outputs import ROW_SCHEMA
from sentidistill.rundir import RunDir
from sentidistill.stages.icl import run

QC = {"kept", "empty", "truncated", "refused", "repetitive", "unparseable", "test_leak", "disagrees_with_gold"}


def all_rows(run_dir: Path) -> list[dict]:
    return [r for sub in ("data", "filtered") if (run_dir / "icldist" / sub).exists()
            for r in pq.read_table(run_dir / "icldist" / sub, schema=ROW_SCHEMA).to_pylist()]


def test_teacher_agree_gold_build_and_resume(tiny_config, tmp_path: Path, user_tasks: Path, shared_data: Path,
                                             tiny_model: Path, ray_local) -> None:
    general = write_jsonl(tmp_path / "general.jsonl", [
        {"instruction": "Name a fruit.", "output": "Apple"}, {"instruction": "Name a colour.", "output": "Blue"}])
    teacher = {"kind": "hf", "model": str(tiny_model), "name": "tiny", "max_model_len": 512, "resources": {"batch_size": 4}}
    cfg = icl_config(tiny_config, tmp_path / "run", user_tasks, shared_data, "icl.target=teacher_agree_gold",
                     "icl.examples_per_task=4", "icl.k_max=1", "icl.max_new_tokens=6",
                     f"icl.general_data=['{general}']", "icl.general_share=0.2", teacher=teacher)
    first = run(cfg)
    rows = all_rows(tmp_path / "run")
    assert len(rows) == 10 and len({r["id"] for r in rows}) == 10 and {r["qc"] for r in rows} <= QC
    asked = [r for r in rows if r["perspective"] != "general"]
    assert all(r["engine"] == "hf" and r["teacher"] == "tiny" and r["prompt_tokens"] > 0 for r in asked)
    assert all(r["completion_tokens"] <= 6 and r["response"][:1] in ("", " ") for r in asked)
    assert all("agrees" in json.loads(r["meta"]) for r in asked)
    general_rows = [r for r in rows if r["perspective"] == "general"]
    assert {r["response"] for r in general_rows} == {" Apple", " Blue"} and general_rows[0]["engine"] == "gold"
    c = first.counts
    assert c["missing"] == 0 and c["errors"] == 0 and c["generated_this_run"] == 8 and c["kept"] + c["filtered"] == 10
    assert {t: a["judged"] for t, a in c["agreement"].items()} == {"mini": 4, "mini_absa": 4}
    assert "tuple_f1" in c["agreement"]["mini_absa"] and first.extra["teacher"] == "tiny"
    agrees = {r["id"]: json.loads(r["meta"])["agrees"] for r in asked}
    assert sum(a["agree"] for a in c["agreement"].values()) == sum(agrees.values())
    assert all(agrees[r["id"]] for r in asked if r["qc"] == "kept")
    assert not any(agrees[r["id"]] for r in asked if r["qc"] == "disagrees_with_gold")
    assert c["qc"].get("kept", 0) == sum(r["qc"] == "kept" for r in rows) >= 2  # the general rows at least

    # Interrupted: one teacher part lost, the manifest still says running -> only its rows come back.
    rd = RunDir(str(tmp_path / "run"))
    part = next(p for p in sorted((tmp_path / "run" / "icldist").glob("*/part-*.parquet")) if "-gold-" not in p.name)
    lost = {r["id"] for r in pq.read_table(part, schema=ROW_SCHEMA).to_pylist()}
    part.unlink()
    manifest = rd.manifest("icldist")
    rd.write_manifest(manifest.model_copy(update={"status": "running"}))
    resumed = run(cfg)
    assert resumed.counts["generated_this_run"] == len(lost) > 0
    again = {r["id"]: r for r in all_rows(tmp_path / "run")}
    assert set(again) == {r["id"] for r in rows}
    assert all({**r, "latency_s": 0} == {**again[r["id"]], "latency_s": 0} for r in rows)  # greedy: same answers
    assert {k: v for k, v in resumed.counts.items() if k not in ("generated_this_run", "completion_tokens_per_s")} \
        == {k: v for k, v in c.items() if k not in ("generated_this_run", "completion_tokens_per_s")}
    assert run(cfg).finished_at == resumed.finished_at
