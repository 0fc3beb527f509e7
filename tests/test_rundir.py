"""Run directory: atomic writes, manifests, completeness for the same inputs, failure recording."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentidistill.errors import StageInputError
from sentidistill.rundir import RunDir, fingerprint_path


def test_stage_run_writes_manifest_and_config(tmp_path: Path) -> None:
    rd = RunDir(str(tmp_path / "run"))
    with rd.stage_run("knowdist", "abc", {"corpus": "f1"}, config_yaml="x: 1\n") as m:
        assert rd.manifest("knowdist").status == "running"
        m.counts["rows"] = 3
    got = rd.manifest("knowdist")
    assert got.status == "complete" and got.counts == {"rows": 3} and got.finished_at
    assert "torch" in got.versions and rd.read_text("knowdist/config.yaml") == "x: 1\n"
    assert rd.is_complete("knowdist", "abc", {"corpus": "f1"})
    assert not rd.is_complete("knowdist", "abd", {"corpus": "f1"})
    assert not rd.is_complete("knowdist", "abc", {"corpus": "f2"})


def test_failed_stage_is_recorded_and_not_complete(tmp_path: Path) -> None:
    rd = RunDir(str(tmp_path))
    with pytest.raises(RuntimeError), rd.stage_run("eval/m", "h", {}):
        raise RuntimeError("boom")
    m = rd.manifest("eval/m")
    assert m.status == "failed" and "boom" in m.error
    assert not rd.is_complete("eval/m", "h", {})
    with pytest.raises(StageInputError, match="eval/m.*failed"):
        rd.stage_fingerprint("eval/m")


def test_file_uri_and_listing(tmp_path: Path) -> None:
    rd = RunDir(f"file://{tmp_path}")
    rd.write_json("a/b/x.json", {"k": 1})
    rd.write_text("a/y.txt", "hi")
    assert rd.read_json("a/b/x.json") == {"k": 1}
    assert rd.list_files("a") == ["b/x.json", "y.txt"] and rd.list_files("a", ".txt") == ["y.txt"]
    assert rd.list_files("nope") == []
    rd.delete("a/b")
    assert not rd.exists("a/b/x.json")
    assert not list(tmp_path.rglob("*.tmp-*"))  # atomic writes leave no temp files


def test_fingerprint_changes_with_content(tmp_path: Path) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text("a\n")
    before = fingerprint_path(str(f))
    f.write_text("ab\n")
    assert fingerprint_path(str(f)) != before
    assert fingerprint_path(str(tmp_path / "missing")) == "missing"


def test_fingerprint_survives_copy_and_touch(tmp_path: Path) -> None:
    import os
    import shutil

    a = tmp_path / "a" / "corpus.jsonl"
    a.parent.mkdir()
    a.write_text('{"text": "good"}\n')
    b = tmp_path / "b" / "corpus.jsonl"
    b.parent.mkdir()
    shutil.copy(a, b)
    os.utime(b, (1, 1))
    assert fingerprint_path(str(a)) == fingerprint_path(str(b))
    assert fingerprint_path(str(a.parent)) == fingerprint_path(str(b.parent))
