"""replay engine on the real shared Mixtral sample (UTF-8 BOM, one repeated ID) and on small local files."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sentidistill.config import EngineConfig, ReplayConfig
from sentidistill.engines import GenerationRequest, build_engine
from sentidistill.data.corpus import text_hash
from sentidistill.engines.replay import iter_replay_rows, read_replay_table
from sentidistill.errors import ConfigError, DataNotFoundError

YELP = "teacher-samples/yelp_mixtral_rewrite_500.jsonl"


def yelp_cfg(path: str) -> ReplayConfig:
    return ReplayConfig(path=path, text_column="Text", response_column="mixtral_response", id_column="ID",
                        teacher_name="mixtral-8x7b")


@pytest.fixture(scope="module")
def yelp(shared_data: Path) -> ReplayConfig:
    return yelp_cfg(str(shared_data / YELP))


def test_shared_yelp_file_loads_with_bom(yelp: ReplayConfig) -> None:
    raw = read_replay_table(yelp)
    assert len(raw) == 500
    assert set(raw[0]) == {"ID", "Text", "Overall", "mixtral_response"}  # no '\ufeffID' key
    rows = list(iter_replay_rows(yelp))
    assert len(rows) == 499  # ID 1898262 appears twice with different answers: the first one wins
    assert len({r["source_id"] for r in rows}) == 499
    assert rows[0]["source_id"] == str(raw[0]["ID"]) and rows[0]["text"] == raw[0]["Text"]
    assert json.loads(rows[0]["meta"]) == {"Overall": raw[0]["Overall"]}


def test_data_uri_resolves_in_data_dir(shared_data: Path) -> None:
    rows = list(iter_replay_rows(yelp_cfg(f"data://{YELP}"), data_dir=str(shared_data)))
    assert len(rows) == 499


def test_lookup_by_id_and_text_and_miss(yelp: ReplayConfig) -> None:
    engine = build_engine(EngineConfig(kind="replay", replay=yelp))
    assert len(engine) == 499 and engine.name == "mixtral-8x7b"
    raw = read_replay_table(yelp)
    first, second = raw[0], raw[1]
    msgs = [{"role": "user", "content": "Rewrite: " + second["Text"]}]
    out = engine.generate([
        GenerationRequest(prompt="p", source_id=str(first["ID"])),
        GenerationRequest(messages=msgs, source_text="  " + second["Text"].replace(" ", "\n", 3)),
        GenerationRequest(prompt="p", source_id="no-such-id", source_text="never seen"),
        GenerationRequest(prompt="p"),
    ])
    assert out[0].text == first["mixtral_response"] and out[0].finish_reason == "stop"
    assert out[0].completion_tokens == len(first["mixtral_response"].split())
    assert out[1].text == second["mixtral_response"] and out[1].finish_reason == "stop"
    assert out[2].finish_reason == "error" and "not in the replay corpus" in out[2].error
    assert out[3].finish_reason == "error" and "source_id or source_text" in out[3].error
    with pytest.raises(TypeError, match="cannot score"):
        engine.score_next_token(["x"], [" a"])


def test_repeated_id_keeps_first_answer(yelp: ReplayConfig) -> None:
    engine = build_engine(EngineConfig(kind="replay", replay=yelp))
    dup = [r for r in read_replay_table(yelp) if r["ID"] == 1898262]
    assert len(dup) == 2 and dup[0]["mixtral_response"] != dup[1]["mixtral_response"]
    assert engine.generate([GenerationRequest(prompt="p", source_id="1898262")])[0].text == dup[0]["mixtral_response"]


def test_glob_parquet_and_hashed_ids(tmp_path: Path) -> None:
    for i in range(2):
        pq.write_table(pa.table({"text": [f"text {i}"], "response": [f"answer {i}"]}), tmp_path / f"part-{i}.parquet")
    cfg = ReplayConfig(path=str(tmp_path / "part-*.parquet"))
    rows = list(iter_replay_rows(cfg))
    assert [r["response"] for r in rows] == ["answer 0", "answer 1"]
    assert rows[1]["source_id"] == text_hash("text  1 ") and rows[1]["meta"] is None
    engine = build_engine(EngineConfig(kind="replay", replay=cfg))
    assert engine.generate([GenerationRequest(prompt="p", source_id=text_hash("text 1"))])[0].text == "answer 1"


def test_bad_inputs_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="teacher.replay.path: .* matches no file"):
        list(iter_replay_rows(ReplayConfig(path=str(tmp_path / "missing.jsonl"))))
    (tmp_path / "a.jsonl").write_text('{"text": "t", "answer": "r"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"replay.response_column='response'.*\['answer', 'text'\]"):
        list(iter_replay_rows(ReplayConfig(path=str(tmp_path / "a.jsonl"))))


def test_replay_ids_follow_the_corpus_rule(tmp_path: Path) -> None:
    """The engine reads its file through the corpus reader: the rows and ids the generate stage keeps."""
    lines = ['{"id": " 7 ", "text": "seven", "response": "r7"}', "{not json",
             '{"id": null, "text": "no id", "response": "r?"}', '{"id": 8, "text": "  ", "response": "blank"}',
             '{"id": 9, "text": "nine", "response": "r9"}']
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = ReplayConfig(path=str(tmp_path / "t.jsonl"), id_column="id")
    rows = list(iter_replay_rows(cfg))
    assert [(r["source_id"], r["response"]) for r in rows] == [("7", "r7"), ("9", "r9")]
    engine = build_engine(EngineConfig(kind="replay", replay=cfg))
    out = engine.generate([GenerationRequest(prompt="p", source_id="7"),
                           GenerationRequest(prompt="p", source_text="no id")])
    assert out[0].text == "r7" and out[1].finish_reason == "error"
