"""`icl` with gold targets (no engine, no Ray): artifact schema, counts, general data share, no-op
reruns, changed configs moved aside, holdout tasks, and the leakage guard failing the build loudly."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from icl_helpers import icl_config, mini_rows, write_jsonl, write_tasks

from sentidistill.errors import StageInputError
from sentidistill.generation.outputs import ROW_SCHEMA
from sentidistill.stages.icl import run
from sentidistill.tasks import PromptVariant, load_registry


def read_rows(run_dir: Path) -> list[dict]:
    folder = run_dir / "icldist" / "data"
    return pq.read_table(folder, schema=ROW_SCHEMA).to_pylist() if folder.exists() else []


def test_gold_build_schema_counts_and_noop_rerun(tiny_config, tmp_path: Path, user_tasks: Path,
                                                 shared_data: Path) -> None:
    general = write_jsonl(tmp_path / "general.jsonl", [
        {"instruction": f"Spell the number {i} in words.", "input": "", "output": f"number {i}"} for i in range(10)])
    cfg = icl_config(tiny_config, tmp_path / "run", user_tasks, shared_data, f"icl.general_data=['{general}']",
                     "icl.general_share=0.2")
    manifest = run(cfg)  # teacher.model does not exist: gold targets must never build an engine
    rows = read_rows(tmp_path / "run")
    assert len(rows) == 15 and len({r["id"] for r in rows}) == 15
    assert {r["perspective"] for r in rows} == {"mini", "mini_absa", "general"}
    assert sum(r["perspective"] == "general" for r in rows) == 3  # 3 / (12 + 3) = general_share
    assert pq.read_schema(next((tmp_path / "run" / "icldist" / "data").glob("*.parquet"))) \
        .remove_metadata().equals(ROW_SCHEMA)
    for r in rows:
        assert r["stage"] == "icldist" and r["messages"] is None and r["qc"] == "kept"
        assert r["response"] == " " + r["gold"] and r["teacher"] == r["engine"] == "gold"
        if r["perspective"] != "general":
            variant = PromptVariant.from_key(r["variant"])
            assert variant.k <= 2 and r["prompt"].endswith(variant.output_name or "Label:")
            assert json.loads(r["meta"])["query_id"] == r["source_id"]
    c = manifest.counts
    assert manifest.status == "complete" and c["examples"] == c["kept"] == 15 and c["missing"] == 0
    assert c["per_task"]["mini"] | {"pool": 40, "prompts": 6, "kept": 6, "dropped_test_overlap": 0} \
        == c["per_task"]["mini"]
    assert c["per_task"]["general"]["prompts"] == 3 and c["agreement"] == {}
    assert sum(c["per_variant"]["k"].values()) == 12 and c["per_variant"]["kind"] == {"general": 3}
    assert set(manifest.outputs) == {str(p.relative_to(tmp_path / "run" / "icldist"))
                                     for p in (tmp_path / "run" / "icldist").rglob("*.parquet")}

    before = sorted((tmp_path / "run" / "icldist").rglob("*"))
    again = run(cfg)
    assert again.finished_at == manifest.finished_at and sorted((tmp_path / "run" / "icldist").rglob("*")) == before

    reseeded = run(icl_config(tiny_config, tmp_path / "run", user_tasks, shared_data, "icl.seed=1"))
    assert (tmp_path / "run" / f"icldist.prev-{manifest.config_hash}" / "manifest.json").is_file()
    assert reseeded.counts["examples"] == 12 and len(read_rows(tmp_path / "run")) == 12


def test_holdout_tasks_are_excluded(tiny_config, tmp_path: Path, user_tasks: Path, shared_data: Path) -> None:
    names = [t.name for t in load_registry(data_dir=str(shared_data)).select(None)]
    holdout = [n for n in names if n not in ("sst2", "acsa_rest16")]
    cfg = icl_config(tiny_config, tmp_path / "run", user_tasks, shared_data, "icl.tasks=null",
                     "icl.examples_per_task=3", f"icl.holdout_tasks={holdout}")
    manifest = run(cfg)
    assert {r["perspective"] for r in read_rows(tmp_path / "run")} == {"sst2", "acsa_rest16"}
    assert set(manifest.counts["per_task"]) == {"sst2", "acsa_rest16"}
    assert manifest.counts["holdout_tasks"] == holdout
    assert manifest.counts["per_task"]["acsa_rest16"]["dropped_test_overlap"] == 10


def test_test_sentence_in_general_data_fails_before_any_teacher_call(
        tiny_config, tmp_path: Path, user_tasks: Path, shared_data: Path) -> None:
    sentence = load_registry(data_dir=str(shared_data)).load_split("sst2", "test", limit=1)[0].text
    general = write_jsonl(tmp_path / "general.jsonl", [
        {"instruction": "Say hello.", "output": "Hello!"},
        {"instruction": "Classify this movie review.", "input": f"Critics wrote: {sentence} I agree.",
         "output": "positive"}])
    cfg = icl_config(tiny_config, tmp_path / "run", user_tasks, shared_data, "icl.target=teacher",
                     f"icl.general_data=['{general}']", "icl.general_share=0.5")
    with pytest.raises(StageInputError) as e:
        run(cfg)  # the teacher does not exist: reaching it would raise another error
    assert "general/0/1" in str(e.value) and sentence[:40] in str(e.value) and "sst2/test/0" in str(e.value)
    assert not (tmp_path / "run" / "icldist").exists()


def test_train_rows_holding_test_sentences_are_dropped_or_fail(tiny_config, tmp_path: Path,
                                                                shared_data: Path) -> None:
    sentence = load_registry(data_dir=str(shared_data)).load_split("sst2", "test", limit=1)[0].text
    tasks = write_tasks(tmp_path / "tasks", mini_train=[*mini_rows(5), {"text": sentence, "label": "positive"}])
    dropped = run(icl_config(tiny_config, tmp_path / "run", tasks, shared_data, "icl.tasks=[mini]"))
    assert dropped.counts["per_task"]["mini"] | {"dropped_test_overlap": 1, "pool": 5, "prompts": 5} \
        == dropped.counts["per_task"]["mini"]
    assert all(sentence not in r["prompt"] for r in read_rows(tmp_path / "run"))
    with pytest.raises(StageInputError, match=r"\(mini, mini/train/5, .* = test item sst2/test/0\)"):
        run(icl_config(tiny_config, tmp_path / "run2", tasks, shared_data, "icl.tasks=[mini]",
                       "icl.drop_test_overlap=false"))
