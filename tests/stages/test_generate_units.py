"""KnowDist pieces without Ray: perspective registry, seeded sampling, work list, and the UDF on a dict."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from sentidistill.config import DEFAULT_PERSPECTIVES, EngineConfig, GenerateConfig
from sentidistill.errors import ConfigError
from sentidistill.generation.generation import GenerateUDF
from sentidistill.perspectives import load_registry, sample_for_text, select_perspectives
from sentidistill.stages.generate import build_work, pair_id


def test_default_perspectives_ship_and_render() -> None:
    registry = load_registry()
    assert sorted(registry) == sorted(DEFAULT_PERSPECTIVES)
    msgs = registry["aspects"].messages('The "pho" {was} great')
    assert msgs[0]["role"] == "system" and msgs[1]["content"].endswith('Text: The "pho" {was} great')
    assert registry["rewrite"].check == "first_person" and registry["aspects"].check == "python_list"
    assert len({p.variant for p in registry.values()}) == 6


def test_user_files_add_perspectives_and_fail_loudly(tmp_path: Path) -> None:
    (tmp_path / "sarcasm.yaml").write_text("name: sarcasm\nuser: |-\n  Is this sarcastic?\n  {text}\ncheck: json\n")
    assert select_perspectives(["sarcasm", "overall"], [str(tmp_path)])[0].check == "json"
    with pytest.raises(ConfigError, match="Did you mean 'emotions'"):
        select_perspectives(["emotion"])
    dup = tmp_path / "dup" / "x.yaml"
    dup.parent.mkdir()
    dup.write_text("- name: overall\n  user: '{text}'\n")
    with pytest.raises(ConfigError, match="'overall' is defined twice"):
        load_registry([str(dup)])
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nuser: no slot here\ncheck: firstperson\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*must contain \{text\}"):
        load_registry([str(bad)])
    bad.write_text("name: x\nuser: '{text}'\ncheck: firstperson\n")
    with pytest.raises(ConfigError, match="Did you mean 'first_person'"):
        load_registry([str(bad)])
    with pytest.raises(ConfigError, match="does not exist"):
        load_registry([str(tmp_path / "missing.yaml")])


def test_sampling_is_seeded_by_source_id_not_row_order() -> None:
    names = list(DEFAULT_PERSPECTIVES)
    picks = {sid: sample_for_text(names, 2, 0, sid) for sid in ("a", "b", "c", "d", "e", "f")}
    assert all(len(p) == 2 and p == [n for n in names if n in p] for p in picks.values())
    assert picks == {sid: sample_for_text(names, 2, 0, sid) for sid in reversed(list(picks))}
    assert len({tuple(p) for p in picks.values()}) > 1
    assert any(sample_for_text(names, 2, 1, sid) != picks[sid] for sid in picks)
    assert sample_for_text(names, None, 0, "a") == names


def test_work_list_ids_params_and_raw_prompts() -> None:
    rows = [{"source_id": "s1", "text": "Great pho.", "meta": '{"stars": 5}'},
            {"source_id": "s2", "text": "Cold soup.", "meta": None}]
    kd = GenerateConfig(perspectives=["overall", "rewrite"], max_new_tokens=32, temperature=0.0)
    work = build_work(rows, select_perspectives(kd.perspectives), kd)
    assert [(w["source_id"], w["perspective"]) for w in work] == [
        ("s1", "overall"), ("s1", "rewrite"), ("s2", "overall"), ("s2", "rewrite")]
    assert work[0]["id"] == pair_id("s1", "overall") != pair_id("s1", "rewrite")
    assert json.loads(work[0]["messages"])[-1]["content"].endswith("Text: Great pho.") and work[0]["prompt"] is None
    assert work[0]["max_new_tokens"] == 32 and work[1]["check"] == "first_person"
    raw = build_work(rows, select_perspectives(kd.perspectives), kd.model_copy(update={"apply_chat_template": False}))
    assert raw[0]["messages"] is None and raw[0]["prompt"].endswith("Text: Great pho.\n\n")


def test_udf_answers_a_plain_batch_and_names_missing_columns(tiny_model: Path) -> None:
    kd = GenerateConfig(perspectives=["overall"], max_new_tokens=4, temperature=0.0)
    work = build_work([{"source_id": "s1", "text": "Great pho.", "meta": None}], select_perspectives(["overall"]), kd)
    udf = GenerateUDF(EngineConfig(kind="hf", model=str(tiny_model), name="tiny"))
    out = udf(pa.Table.from_pylist(work))
    assert out["id"] == [work[0]["id"]] and out["teacher"] == ["tiny"] and out["engine"] == ["hf"]
    assert out["finish_reason"] == ["length"] and out["completion_tokens"] == [4] and out["prompt_tokens"][0] > 10
    same = udf({k: [v] for k, v in work[0].items()})  # dict of columns works too (no Ray, no pyarrow)
    assert same["response"] == out["response"]
    with pytest.raises(ValueError, match=r"GenerateUDF: required input columns \['max_new_tokens', 'seed'\]"):
        udf({k: [v] for k, v in work[0].items() if k not in ("seed", "max_new_tokens")})
