"""Typed stage counts: manifests written by older versions still read; a malformed one names its file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sentidistill.errors import StageInputError
from sentidistill.rundir import Manifest, RunDir
from sentidistill.stage_counts import EvalCounts, GenerationExtra, ICLDistCounts, KnowDistCounts, TrainCounts

# A knowdist manifest as an earlier version wrote it: no per_perspective, no token counts, a key since dropped.
OLD_KNOWDIST = {
    "schema_version": 1, "stage": "knowdist", "status": "complete", "config_hash": "3f2a", "inputs": {"corpus": "ab"},
    "outputs": ["data/part-0.parquet"],
    "counts": {"texts": 40, "pairs": 80, "kept": 71, "filtered": 9, "missing": 0, "generated_this_run": 80,
               "errors": 0, "qc": {"kept": 71, "truncated": 9}, "legacy_rows": 80,
               "corpus": {"read": 45, "rejected": 3, "duplicates": 2, "kept": 40,
                          "rejected_by_reason": {"too_short": 3}}},
    "timings": {"total_s": 12.5}, "versions": {"python": "3.11.7"},
    "extra": {"teacher": "smollm2", "engine": "hf"}, "started_at": "2026-01-01T00:00:00+00:00",
    "finished_at": "2026-01-01T00:00:12+00:00", "error": None,
}


def _write(tmp_path: Path, folder: str, manifest: dict) -> RunDir:
    rd = RunDir(str(tmp_path))
    rd.write_text(f"{folder}/manifest.json", json.dumps(manifest))
    return rd


def test_old_manifest_parses_with_defaults_and_keeps_unknown_keys(tmp_path: Path) -> None:
    m = _write(tmp_path, "knowdist", OLD_KNOWDIST).manifest("knowdist")
    counts = KnowDistCounts.of(m)
    assert (counts.texts, counts.kept, counts.missing) == (40, 71, 0)
    assert counts.corpus.rejected_by_reason == {"too_short": 3}
    assert counts.filtered_by_reason == {"truncated": 9}
    assert counts.per_perspective == {} and counts.prompt_tokens == 0  # not recorded then
    assert counts.model_extra == {"legacy_rows": 80}
    assert GenerationExtra.of(m).teacher == "smollm2" and m.seconds == 12.5


def test_missing_is_unknown_when_not_recorded(tmp_path: Path) -> None:
    """A manifest without `missing` must not pass as fully generated (the stage then reruns)."""
    rd = _write(tmp_path, "icldist", {**OLD_KNOWDIST, "stage": "icldist", "counts": {"kept": 3}})
    assert ICLDistCounts.of(rd.manifest("icldist")).missing is None


def test_stage_writes_round_trip(tmp_path: Path) -> None:
    rd = RunDir(str(tmp_path))
    with rd.stage_run("eval/m", "h", {}) as m:
        m.counts = EvalCounts(tasks=2, seeds=1, parts=2, items=8, sentibench=None).dump()
    assert "sentibench" not in json.loads(rd.read_text("eval/m/manifest.json"))["counts"]
    assert EvalCounts.of(rd.manifest("eval/m")) == EvalCounts(tasks=2, seeds=1, parts=2, items=8)


def test_malformed_counts_name_the_file_and_field(tmp_path: Path) -> None:
    bad = {**OLD_KNOWDIST, "stage": "train/knowdist", "counts": {"steps": "many", "packing_efficiency": [1]}}
    m = _write(tmp_path, "train/knowdist", bad).manifest("train/knowdist")
    with pytest.raises(StageInputError, match=r"train/knowdist/manifest\.json.*counts\.steps"):
        TrainCounts.of(m)


def test_malformed_manifest_names_the_file(tmp_path: Path) -> None:
    rd = _write(tmp_path, "knowdist", {"stage": "knowdist", "status": "finished"})
    with pytest.raises(StageInputError, match=r"knowdist/manifest\.json: not a stage manifest.*status"):
        rd.manifest("knowdist")
    (tmp_path / "knowdist/manifest.json").write_text("{not json")
    with pytest.raises(StageInputError, match=r"knowdist/manifest\.json: not a stage manifest"):
        rd.manifest("knowdist")


def test_combined_manifest_holds_the_parts() -> None:
    a = Manifest(stage="eval/a", config_hash="1", status="complete")
    b = Manifest(stage="eval/b", config_hash="2", status="failed")
    both = Manifest.combine("eval", [a, b])
    assert both.status == "failed" and [p.stage for p in both.parts] == ["eval/a", "eval/b"]
    assert "parts" not in both.model_dump()  # never stored


def test_cli_summaries_render_old_manifests(tmp_path: Path) -> None:
    from rich.console import Console

    from sentidistill.cli.generate_cmd import summary_table as generate_table
    from sentidistill.cli.icl_cmd import summary_table as icl_table
    from sentidistill.cli.train_cmd import summary_table as train_table

    rd = _write(tmp_path, "knowdist", OLD_KNOWDIST)
    icl = {**OLD_KNOWDIST, "stage": "icldist",
           "counts": {"examples": 6, "kept": 5, "filtered": 1, "missing": 0, "qc": {"kept": 5, "refusal": 1},
                      "per_task": {"sst2": {"pool": 9, "dropped_test_overlap": 1, "prompts": 4, "kept": 3,
                                            "filtered": 1},
                                   "general": {"prompts": 2, "kept": 2, "filtered": 0}},
                      "agreement": {"sst2": {"judged": 4, "agree": 3, "rate": 0.75, "parse_failures": 0}}}}
    rd.write_text("icldist/manifest.json", json.dumps(icl))
    train = {**OLD_KNOWDIST, "stage": "train/knowdist", "counts": {"train_examples": 70, "rows": 20, "steps": 4},
             "extra": {"final_metrics": {"loss": 1.25}}}
    rd.write_text("train/knowdist/manifest.json", json.dumps(train))
    console = Console(width=200, record=True)
    console.print(generate_table(KnowDistCounts.of(rd.manifest("knowdist")), "smollm2"))
    console.print(icl_table(ICLDistCounts.of(rd.manifest("icldist")), "smollm2", "teacher"))
    console.print(train_table([rd.manifest("train/knowdist")]))
    text = console.export_text()
    assert "too_short 3" in text and "filtered: truncated" in text
    assert "75%" in text and "refusal 1" in text and "general" in text
    assert "70 / 0" in text and "1.25" in text
