"""`sentidistill data fetch sentibench` from a tarball served over a real local http.server."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sentidistill.cli import app
from sentidistill.data.fetch import MANIFEST, fetch
from sentidistill.data.locate import resolve_data_path
from sentidistill.errors import DataNotFoundError

TOP = "Sentiment-Distillation-main"
FILES = {
    f"{TOP}/README.md": b"# upstream readme\n",
    f"{TOP}/datasets/.DS_Store": b"junk",
    f"{TOP}/datasets/sc/sst2/train.json": '\ufeff[{"sentence": "a gripping film", "label": 1}]'.encode(),
    f"{TOP}/datasets/sc/sst2/test.json": '\ufeff[{"sentence": "dull", "label": 0}]'.encode(),
    f"{TOP}/datasets/absa/opener/train.json": b'[{"text": "nice hotel"}]',
}


def _tarball(path: Path, files: dict[str, bytes], extra: list[tarfile.TarInfo] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on 127.0.0.1 serving a folder; yields (base URL, folder)."""
    root = tmp_path_factory.mktemp("www")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None  # type: ignore[method-assign]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


def test_fetch_over_http_then_resolve_and_skip(server: tuple[str, Path], tmp_path: Path) -> None:
    base, root = server
    archive = _tarball(root / "main.tar.gz", FILES)
    cache = tmp_path / "cache"
    res = fetch("sentibench", cache_dir=str(cache), source=f"{base}/main.tar.gz")
    assert res.downloaded and res.files == 3 and res.target == cache / "data" / "sentibench"
    found = resolve_data_path("data://sentibench/sc/sst2/train.json", data_dir=None, cache_dir=str(cache))
    assert Path(found) == res.target / "sc" / "sst2" / "train.json"
    assert Path(found).read_bytes() == FILES[f"{TOP}/datasets/sc/sst2/train.json"]
    assert not (res.target / ".DS_Store").exists() and not (res.target / "README.md").exists()
    manifest = json.loads((res.target / MANIFEST).read_text())
    assert manifest["archive_sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert manifest["files"]["absa/opener/train.json"]["size"] == len(FILES[f"{TOP}/datasets/absa/opener/train.json"])

    # idempotent: a complete copy is not downloaded again, even from a dead URL
    again = fetch("sentibench", cache_dir=str(cache), source=f"{base}/gone.tar.gz")
    assert not again.downloaded and again.files == 3
    # a damaged copy is repaired; no temp folders are left behind
    (res.target / "sc" / "sst2" / "test.json").unlink()
    repaired = fetch("sentibench", cache_dir=str(cache), source=f"{base}/main.tar.gz")
    assert repaired.downloaded and (res.target / "sc" / "sst2" / "test.json").is_file()
    assert sorted(p.name for p in (cache / "data").iterdir()) == ["sentibench"]


def test_cli_fetch_from_file_url_with_checksum(tmp_path: Path) -> None:
    archive = _tarball(tmp_path / "a.tar.gz", FILES)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    args = ["data", "fetch", "sentibench", "--cache-dir", str(cache), "--source", archive.as_uri()]
    bad = CliRunner().invoke(app, [*args, "--sha256", "0" * 64])
    assert isinstance(bad.exception, DataNotFoundError) and "expected" in str(bad.exception)
    assert not (cache / "data" / "sentibench").exists()
    ok = CliRunner().invoke(app, [*args, "--sha256", digest])
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.strip().endswith(str(cache / "data" / "sentibench"))


def test_unsafe_and_empty_archives_are_refused(tmp_path: Path) -> None:
    escape = tarfile.TarInfo(f"{TOP}/datasets/../../evil.json")
    escape.size = 3
    bad = _tarball(tmp_path / "bad.tar.gz", {}, [escape])
    with pytest.raises(DataNotFoundError, match="unsafe member"):
        fetch("sentibench", cache_dir=str(tmp_path / "c1"), source=str(bad))
    assert not (tmp_path / "evil.json").exists()

    link = tarfile.TarInfo(f"{TOP}/datasets/sc/link.json")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    only_link = _tarball(tmp_path / "link.tar.gz", {}, [link])
    with pytest.raises(DataNotFoundError, match="no files under"):
        fetch("sentibench", cache_dir=str(tmp_path / "c2"), source=str(only_link))

    with pytest.raises(DataNotFoundError, match="unknown dataset"):
        fetch("sentibenc", cache_dir=str(tmp_path / "c3"))
    with pytest.raises(DataNotFoundError, match="no such file"):
        fetch("sentibench", cache_dir=str(tmp_path / "c3"), source=str(tmp_path / "missing.tar.gz"))


def test_hand_placed_data_is_left_alone(tmp_path: Path) -> None:
    mine = tmp_path / "cache" / "data" / "sentibench" / "sc" / "x.json"
    mine.parent.mkdir(parents=True)
    mine.write_text("[]")
    res = fetch("sentibench", cache_dir=str(tmp_path / "cache"), source=str(tmp_path / "never-read.tar.gz"))
    assert not res.downloaded and res.files == 1 and mine.read_text() == "[]"
