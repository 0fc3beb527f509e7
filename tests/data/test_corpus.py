"""Corpus reader: every format, BOMs, globs, bad rows to `rejected`, dedup, limits, clear config errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sentidistill.config import CorpusConfig, CorpusSource, load_config
from sentidistill.data.corpus import load_corpus, resolve_sources, text_hash, text_stats
from sentidistill.errors import ConfigError, DataNotFoundError

pytestmark = pytest.mark.usefixtures("ray_local")  # the corpus pipeline runs on Ray Data
REPO = Path(__file__).resolve().parents[2]
TEXTS = [f"Review number {i}: the soup was {'great' if i % 2 else 'cold'} and the staff were friendly."
         for i in range(6)]


def corpus(*sources: CorpusSource, **kw: object) -> CorpusConfig:
    return CorpusConfig(sources=list(sources), **{"min_chars": 10, **kw})


def load(*sources: CorpusSource, **kw: object):
    return load_corpus(corpus(*sources, **kw), None, None)


def test_jsonl_with_bom_and_bad_rows_goes_to_rejected(tmp_path: Path) -> None:
    lines = [json.dumps({"id": 1, "body": TEXTS[0], "stars": 5}).encode(),
             b'{"id": 2, "body": "broken json',                                  # invalid JSON
             json.dumps({"id": 3, "stars": 2}).encode(),                         # missing text
             json.dumps({"id": 4, "body": 42}).encode(),                         # wrong type
             b'{"id": 5, "body": "bad bytes \xff\xfe in the middle of a long review"}',  # undecodable
             json.dumps({"id": 6, "body": "  short "}).encode(),                 # near-empty
             b'["not", "an", "object"]',
             b"",
             json.dumps({"id": 7, "body": TEXTS[1], "stars": 1}).encode()]
    path = tmp_path / "c.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"\n".join(lines) + b"\n")
    res = load(CorpusSource(path=str(path), text_column="body", id_column="id", meta_columns=["stars"]))
    assert [r["source_id"] for r in res.rows] == ["1", "7"]
    assert [json.loads(r["meta"]) for r in res.rows] == [{"stars": 5}, {"stars": 1}]
    assert res.counts["rejected_by_reason"] == {"invalid_json": 1, "missing_text": 1, "wrong_type": 1,
                                                "undecodable": 1, "too_short": 1, "not_an_object": 1}
    assert res.counts["read"] == 8 and res.counts["kept"] == 2 and res.counts["rejected"] == 6
    by_reason = {r["reason"]: r for r in res.rejected}
    assert "line 2" in by_reason["invalid_json"]["source"] and "broken json" in by_reason["invalid_json"]["raw"]
    assert "\\xff" in by_reason["undecodable"]["raw"]  # kept printable for inspection
    pq.write_table(pa.Table.from_pylist(res.rejected), tmp_path / "rejected.parquet")  # always UTF-8 safe


def test_json_array_with_bom_hash_ids_dedup_and_truncation(tmp_path: Path) -> None:
    items = [{"sentence": TEXTS[0]}, {"sentence": "  " + TEXTS[0].replace(" ", "   ") + "\n"},  # duplicate
             {"sentence": TEXTS[2] * 5}, "just a string"]
    path = tmp_path / "arr.json"
    path.write_text("\ufeff" + json.dumps(items, indent=2), encoding="utf-8")
    res = load(CorpusSource(path=str(path), text_column="sentence"), max_chars=100)
    assert [r["source_id"] for r in res.rows] == [text_hash(TEXTS[0]), text_hash(TEXTS[2] * 5)]
    assert res.rows[0]["meta"] is None
    assert len(res.rows[1]["text"]) <= 100
    assert res.counts["duplicates"] == 1 and res.counts["truncated"] == 1
    assert res.counts["rejected_by_reason"] == {"not_an_object": 1}


def test_parquet_csv_tsv_gz_glob_and_folder(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    pq.write_table(pa.table({"text": TEXTS[:2], "stars": [1, 2]}), folder / "a.parquet")
    (folder / "b.csv").write_bytes(
        b"\xef\xbb\xbftext,stars\n"
        + f'"{TEXTS[2]}",3\n'.encode() + b'"bad \xff bytes in this csv review text",4\n'
        + b"too,many,fields,here\n" + f'"{TEXTS[3]}, with a comma",5\n'.encode())
    (folder / "c.tsv").write_text(f"text\tstars\n{TEXTS[4]}\t4\n")
    with gzip.open(folder / "d.jsonl.gz", "wt") as f:
        f.write(json.dumps({"text": TEXTS[5], "stars": 5}) + "\n")
    (folder / "_SUCCESS").write_text("")
    src = CorpusSource(path=str(folder), meta_columns=["stars"])
    assert [Path(f.uri).name for f in resolve_sources(corpus(src), None, None)] == [
        "a.parquet", "b.csv", "c.tsv", "d.jsonl.gz"]
    res = load(src)
    assert [r["text"] for r in res.rows] == [*TEXTS[:3], TEXTS[3] + ", with a comma", TEXTS[4], TEXTS[5]]
    assert [json.loads(r["meta"])["stars"] for r in res.rows] == [1, 2, 3, 5, 4, 5]
    assert res.counts["rejected_by_reason"] == {"malformed_csv_row": 1, "undecodable": 1}
    globbed = load(CorpusSource(path=str(folder / "*.parquet")))
    assert [r["text"] for r in globbed.rows] == TEXTS[:2]
    as_uri = load(CorpusSource(path=f"file://{folder}/[ab].*"))  # URIs go through pyarrow filesystems
    assert [r["text"] for r in as_uri.rows] == [*TEXTS[:3], TEXTS[3] + ", with a comma"]


def test_hf_save_to_disk_and_local_dataset_folder(tmp_path: Path) -> None:
    import datasets

    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"review": TEXTS[:3], "label": [0, 1, 0]})})
    dd.save_to_disk(str(tmp_path / "saved"))
    res = load(CorpusSource(path=str(tmp_path / "saved"), text_column="review", meta_columns=["label"]))
    assert [r["text"] for r in res.rows] == TEXTS[:3]
    with pytest.raises(ConfigError, match=r"corpus.sources\[0\].split: 'test' not in"):
        load(CorpusSource(path=str(tmp_path / "saved"), format="hf_disk", text_column="review", split="test"))
    (tmp_path / "hub_like").mkdir()
    pq.write_table(pa.table({"text": TEXTS[3:5]}), tmp_path / "hub_like" / "train.parquet")
    res = load(CorpusSource(path=str(tmp_path / "hub_like"), format="hf"))
    assert [r["text"] for r in res.rows] == TEXTS[3:5]


def test_limit_counts_kept_texts_and_ids_collide_loudly(tmp_path: Path) -> None:
    rows = [{"id": "a", "t": TEXTS[0]}, {"id": "a", "t": TEXTS[1]}, {"id": "b", "t": TEXTS[0]},
            {"id": None, "t": TEXTS[2]}, {"id": "c", "t": TEXTS[3]}, {"id": "d", "t": TEXTS[4]}]
    path = tmp_path / "ids.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = load(CorpusSource(path=str(path), text_column="t", id_column="id", limit=2))
    assert [r["source_id"] for r in res.rows] == ["a", "c"]
    assert res.counts["rejected_by_reason"] == {"duplicate_id": 1, "missing_id": 1}
    assert res.counts["duplicates"] == 1 and res.counts["per_source"][0]["read"] == 5
    # the plan's corpus statistics: the same rows (limit, id conflicts, dedup), summed on Ray Data
    stats = text_stats(corpus(CorpusSource(path=str(path), text_column="t", id_column="id", limit=2)), None, None)
    assert stats == (2, (len(TEXTS[0]) + len(TEXTS[3])) / 2)


def test_column_typo_and_missing_path_are_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"Text": TEXTS[0]}) + "\n")
    with pytest.raises(ConfigError, match=r"corpus.sources\[0\].text_column: column 'text' is in no row.*'Text'"):
        load(CorpusSource(path=str(path)))
    with pytest.raises(ConfigError, match=r"meta_columns: column 'stars'"):
        load(CorpusSource(path=str(path), text_column="Text", meta_columns=["stars"]))
    with pytest.raises(DataNotFoundError, match=r"corpus.sources\[0\].path"):
        load(CorpusSource(path=str(tmp_path / "nope" / "*.jsonl")))
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ConfigError, match="cannot guess the format"):
        load(CorpusSource(path=str(tmp_path / "x.txt")))


def test_local_config_reads_the_shared_files(shared_data: Path) -> None:
    cfg = load_config(REPO / "jobs" / "configs" / "local.yaml")
    res = load_corpus(cfg.corpus, str(shared_data), None)
    per = {s["path"]: s["kept"] for s in res.counts["per_source"]}
    assert per == {src.path: src.limit for src in cfg.corpus.sources}  # both files hold more than the limits
    yelp = res.rows[0]
    assert yelp["source_id"] == "2296877" and json.loads(yelp["meta"]) == {"Overall": 4.0}
    assert all(len(r["text"]) <= cfg.corpus.max_chars for r in res.rows)
