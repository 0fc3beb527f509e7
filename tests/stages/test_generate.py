"""KnowDist generation on a real local Ray: hf engine end to end, rejected rows, replay of the shared
Mixtral file, per-row engine errors retried on rerun, no-op reruns, changed configs moved aside."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from sentidistill.config import PipelineConfig
from sentidistill.perspectives import sample_for_text
from sentidistill.perspectives.checks import check_first_person
from sentidistill.rundir import RunDir
from sentidistill.stages.generate import ROW_SCHEMA, pair_id, run

GOOD = [{"id": f"r{i}", "text": f"Review {i}: the noodles were {w} and the waiter was {v}.", "stars": i % 5 + 1}
        for i, (w, v) in enumerate([("superb", "kind"), ("cold", "rude"), ("fine", "slow"), ("salty", "funny"),
                                    ("fresh", "absent"), ("bland", "patient")])]
BAD_LINES = ['{"id": "b1", "text": ', '{"id": "b2", "text": 17}', '{"id": "b3"}']
PERSPECTIVES = ["emotions", "stance", "rewrite"]


def write_corpus(path: Path) -> Path:
    lines = [json.dumps(GOOD[0]), BAD_LINES[0], *map(json.dumps, GOOD[1:4]), *BAD_LINES[1:], *map(json.dumps, GOOD[4:])]
    path.write_text("\n".join(lines) + "\n")
    return path


def make_cfg(tiny: Any, run_dir: Path, teacher: dict[str, Any], corpus: Path | None = None,
             *overrides: str) -> PipelineConfig:
    """jobs/configs/tiny.yaml (`tiny`: a TinyConfig) with this teacher and corpus, 2 of PERSPECTIVES per text."""
    sources = {"sources": [{"path": str(corpus), "id_column": "id", "meta_columns": ["stars"]}], "min_chars": 10}
    return tiny.load(f"run_dir={run_dir}", "generate.quality={drop_truncated: false}", *overrides,
                     replace={"teacher": teacher, "corpus": sources if corpus is not None else {}},
                     generate={"perspectives": PERSPECTIVES, "per_text": 2, "max_new_tokens": 6, "temperature": 0.0,
                               "rows_per_part": 4})


def read_stage(run_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    data = pq.read_table(run_dir / "knowdist" / "data", schema=ROW_SCHEMA).to_pylist() \
        if (run_dir / "knowdist" / "data").exists() else []
    filtered = pq.read_table(run_dir / "knowdist" / "filtered", schema=ROW_SCHEMA).to_pylist() \
        if (run_dir / "knowdist" / "filtered").exists() else []
    return data, filtered


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, tiny_configs, ray_local):
    root = tmp_path_factory.mktemp("gen-hf")
    teacher = {"kind": "hf", "model": str(tiny_model), "name": "tiny", "max_model_len": 512, "resources": {"batch_size": 4}}
    cfg = make_cfg(tiny_configs(root), root / "run", teacher, write_corpus(root / "corpus.jsonl"))
    return cfg, run(cfg)


def test_hf_end_to_end_schema_counts_and_rejected(hf_run) -> None:
    cfg, manifest = hf_run
    run_dir = Path(cfg.run_dir)
    data, filtered = read_stage(run_dir)
    rows = data + filtered
    expected = {pair_id(g["id"], p) for g in GOOD for p in sample_for_text(PERSPECTIVES, 2, 0, g["id"])}
    assert len(rows) == len(expected) == 12 and {r["id"] for r in rows} == expected
    assert all(r["qc"] == "kept" for r in data) and all(r["qc"] != "kept" for r in filtered)
    first = next(r for r in rows if r["source_id"] == "r0")
    assert GOOD[0]["text"] in json.loads(first["messages"])[-1]["content"] and first["prompt"] is None
    assert first["teacher"] == "tiny" and first["engine"] == "hf" and first["stage"] == "knowdist"
    assert json.loads(first["meta"]) == {"stars": 1} and first["completion_tokens"] <= 6
    assert pq.read_schema(next((run_dir / "knowdist" / "filtered").glob("*.parquet"))) \
        .remove_metadata().equals(ROW_SCHEMA)

    c = manifest.counts
    assert manifest.status == "complete" and c["pairs"] == 12 and c["missing"] == 0 and c["errors"] == 0
    assert c["kept"] == len(data) and c["filtered"] == len(filtered) and sum(c["qc"].values()) == 12
    assert sum(v["pairs"] for v in c["per_perspective"].values()) == 12
    assert c["corpus"]["rejected_by_reason"] == {"invalid_json": 1, "wrong_type": 1, "missing_text": 1}
    assert c["completion_tokens"] == sum(r["completion_tokens"] for r in rows) and c["completion_tokens_per_s"] > 0
    rejected = pq.read_table(run_dir / "knowdist" / "rejected").to_pylist()  # parts written by Ray Data tasks
    assert sorted(r["reason"] for r in rejected) == ["invalid_json", "missing_text", "wrong_type"]
    assert set(manifest.outputs) == {str(p.relative_to(run_dir / "knowdist"))
                                     for p in (run_dir / "knowdist").rglob("*.parquet")}


def test_finished_run_is_a_noop(hf_run) -> None:
    cfg, manifest = hf_run
    before = sorted((Path(cfg.run_dir) / "knowdist").rglob("*"))
    again = run(cfg)
    assert again.finished_at == manifest.finished_at and again.counts == manifest.counts
    assert sorted((Path(cfg.run_dir) / "knowdist").rglob("*")) == before


def replay_teacher(path: Path | str, **kw: Any) -> dict[str, Any]:
    return {"kind": "replay", "resources": {"batch_size": 64}, "replay": {
        "path": str(path), "text_column": "Text", "response_column": "mixtral_response", "id_column": "ID",
        "teacher_name": "mixtral-8x7b", **kw}}


def test_replay_imports_the_shared_mixtral_file(tiny_config, tmp_path: Path, shared_data: Path, ray_local) -> None:
    yelp = shared_data / "teacher-samples" / "yelp_mixtral_rewrite_500.jsonl"
    cfg = make_cfg(tiny_config, tmp_path / "run", replay_teacher(yelp), None, "generate.rows_per_part=128")
    manifest = run(cfg)
    data, filtered = read_stage(tmp_path / "run")
    c = manifest.counts
    assert c["texts"] == c["pairs"] == 499 and c["missing"] == 0 and len(data) + len(filtered) == 499
    assert c["per_perspective"] == {"rewrite": {"pairs": 499, "kept": len(data), "filtered": len(filtered)}}
    # The file mixes ~140 third-person aspect analyses into its "rewrites": the first_person check drops them.
    assert len(data) > 350 and set(c["qc"]) == {"kept", "failed_check:first_person"}
    assert not any(check_first_person(r["response"]) for r in filtered)
    assert any(r["response"].startswith("Opinion Target 1") for r in filtered)
    source = {str(r["ID"]): r for r in map(json.loads, yelp.read_text(encoding="utf-8-sig").splitlines())}
    row = data[0]
    assert row["response"] == source[row["source_id"]]["mixtral_response"]
    assert row["teacher"] == "mixtral-8x7b" and row["engine"] == "replay" and row["perspective"] == "rewrite"
    assert source[row["source_id"]]["Text"] in json.loads(row["messages"])[-1]["content"]


def test_engine_errors_are_retried_and_config_changes_move_aside(tiny_config, tmp_path: Path,
                                                                 ray_local) -> None:
    answers = [{"ID": g["id"], "Text": g["text"], "mixtral_response": f"I felt it: {g['text']} My honest view."}
               for g in GOOD[:4]]
    answers[2]["mixtral_response"] = ""  # the replay engine answers this one with an error
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps(a) + "\n" for a in answers))
    cfg = make_cfg(tiny_config, tmp_path / "run", replay_teacher(path))
    first = run(cfg)
    assert first.status == "complete" and first.counts["errors"] == 1 and first.counts["missing"] == 1
    assert "r2" not in {r["source_id"] for r in sum(read_stage(tmp_path / "run"), [])}
    assert first.extra["error_samples"] and "empty" in first.extra["error_samples"][0]

    retry = run(cfg)  # not skipped: the missing pair is retried, nothing else is regenerated
    assert retry.finished_at != first.finished_at
    assert retry.counts["generated_this_run"] == 0 and retry.counts["errors"] == 1

    renamed = make_cfg(tiny_config, tmp_path / "run", replay_teacher(path, teacher_name="mixtral-v2"))
    moved = run(renamed)
    prev = tmp_path / "run" / f"knowdist.prev-{first.config_hash}"
    assert prev.is_dir() and RunDir(str(tmp_path / "run")).manifest(f"knowdist.prev-{first.config_hash}") is not None
    assert moved.counts["generated_this_run"] == 3
    assert {r["teacher"] for r in sum(read_stage(tmp_path / "run"), [])} == {"mixtral-v2"}

    forced = run(renamed, force=True)
    assert (tmp_path / "run" / f"knowdist.prev-{moved.config_hash}").is_dir()
    assert forced.counts["generated_this_run"] == 3 and forced.config_hash == moved.config_hash
