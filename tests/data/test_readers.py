"""The one file-reading module: mappings with errors that name the file, JSON/JSONL rows, file lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentidistill.errors import ConfigError
from sentidistill.readers import BadRecord, iter_json_records, list_files, read_mapping, split_glob_uri, yaml_files


def test_read_mapping_names_the_file_and_the_problem(tmp_path: Path) -> None:
    good = tmp_path / "a.yaml"
    good.write_text("\ufeffkey: 1\n", encoding="utf-8")
    assert read_mapping(good, "config file") == {"key": 1}  # a byte-order mark is fine
    (tmp_path / "empty.yaml").write_text("", encoding="utf-8")
    assert read_mapping(tmp_path / "empty.yaml", "config file") == {}
    with pytest.raises(ConfigError, match=r"task file .*empty.yaml' must hold a mapping \(name"):
        read_mapping(tmp_path / "empty.yaml", "task file", holds="a mapping (name, ...)", empty_ok=False)
    with pytest.raises(ConfigError, match=r"config file .*missing.yaml' does not exist"):
        read_mapping(tmp_path / "missing.yaml", "config file")
    (tmp_path / "bad.yaml").write_text("a: [1,\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.yaml' is not valid YAML"):
        read_mapping(tmp_path / "bad.yaml", "config file")
    (tmp_path / "list.yaml").write_text("- 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"list.yaml' must hold a mapping at the top level"):
        read_mapping(tmp_path / "list.yaml", "config file")
    (tmp_path / "ds.json").write_text('{"a": 1,}', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"train.deepspeed.config: file .*ds.json' is not valid JSON"):
        read_mapping(tmp_path / "ds.json", "train.deepspeed.config: file")


def test_iter_json_records_reports_bad_items_without_raising() -> None:
    text = '\ufeff{"a": 1}\n\n{broken\n[1, 2]\n{"a": 2}\n'
    got = list(iter_json_records(text, "jsonl"))
    assert got[0] == {"a": 1} and got[3] == {"a": 2}
    assert (got[1].where, got[1].reason) == ("line 3", "invalid_json") and got[1].raw == "{broken"
    assert (got[2].where, got[2].reason, got[2].raw) == ("line 4", "not_an_object", [1, 2])
    assert list(iter_json_records('[{"a": 1}, 3]', "json")) == [{"a": 1}, BadRecord("item 1", 3, "not_an_object")]
    (bad,) = iter_json_records("[{", "json")
    assert isinstance(bad, BadRecord) and bad.where == "file" and bad.reason == "invalid_json_file"


def test_file_lists_from_folders_and_globs(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("a.jsonl", "sub/b.jsonl", "_SUCCESS", ".hidden.jsonl", "notes.txt", "sub/_private.yaml", "c.yml"):
        (tmp_path / name).write_text("{}\n", encoding="utf-8")
    fs, root = split_glob_uri(str(tmp_path))
    names = [Path(p).relative_to(tmp_path).as_posix() for p in list_files(fs, root, lambda p: p.endswith(".jsonl"))]
    assert names == ["a.jsonl", "sub/b.jsonl"]  # hidden and private files are skipped in folders
    fs, pattern = split_glob_uri(str(tmp_path / "sub" / "*.jsonl"))
    assert [Path(p).name for p in list_files(fs, pattern, lambda p: True)] == ["b.jsonl"]
    assert [p.name for p in yaml_files(tmp_path, "tasks.extra_files")] == ["c.yml", "_private.yaml"]
    assert [p.name for p in yaml_files(tmp_path, "tasks.extra_files", skip_private=True)] == ["c.yml"]
    with pytest.raises(ConfigError, match=r"tasks.extra_files: .*nope' does not exist"):
        yaml_files(tmp_path / "nope", "tasks.extra_files")
