"""Download public datasets into the data cache, where `data/locate.py` finds them.

`sentidistill data fetch sentibench` takes the upstream repository's tarball, keeps its
`datasets/` folder and installs it as `<cache>/data/sentibench/` (so `data://sentibench/sc/imdb/
train.json` resolves on any machine). It is idempotent: a complete copy, checked against its
manifest of sizes and sha256 sums, is left alone. Extraction is safe (tarfile's "data" filter
refuses absolute paths, `..`, links out of the tree and device files) and atomic: files land
in a temp folder that is renamed into place only when complete.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote, urlparse

from sentidistill.errors import DataNotFoundError
from sentidistill.models import default_cache_dir

MANIFEST = "fetch-manifest.json"
_SKIP_NAMES = {".DS_Store"}


@dataclass(frozen=True)
class DatasetSource:
    """Where a dataset comes from: an archive URL and the folder inside it (below its top folder)."""

    url: str
    folder: str
    description: str


DATASETS: dict[str, DatasetSource] = {
    "sentibench": DatasetSource(
        url="https://codeload.github.com/HITSZ-HLT/Sentiment-Distillation/tar.gz/refs/heads/main",
        folder="datasets",
        description="The 12 SentiBench datasets (train/val/test JSON) of HITSZ-HLT/Sentiment-Distillation.",
    ),
}


@dataclass(frozen=True)
class FetchResult:
    """Where the dataset is, how many files it has, and whether this call downloaded it."""

    target: Path
    files: int
    bytes: int
    downloaded: bool


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_complete(target: Path) -> bool:
    """True when target holds every file its manifest lists, with the listed sizes."""
    try:
        files = json.loads((target / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError):
        return False
    return bool(files) and all((target / rel).is_file() and (target / rel).stat().st_size == meta["size"]
                               for rel, meta in files.items())


def download(url: str, dest: Path, timeout_s: float = 60.0) -> None:
    """Fetch url (https://, http:// or file://; a plain path is read as a local file) into dest."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        src = Path(unquote(parsed.path) if parsed.scheme else url).expanduser()
        if not src.is_file():
            raise DataNotFoundError(f"--source {url!r}: no such file")
        shutil.copyfile(src, dest)
        return
    import httpx

    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=timeout_s) as r:
            r.raise_for_status()
            with dest.open("wb") as f:
                for chunk in r.iter_bytes(1 << 20):
                    f.write(chunk)
    except httpx.HTTPError as e:
        raise DataNotFoundError(
            f"download of {url} failed: {e}. Without internet, download the archive elsewhere and pass "
            "--source /path/to/archive.tar.gz (or file:// / http:// URL)"
        ) from None


def _members(tar: tarfile.TarFile, folder: str, url: str) -> list[tuple[tarfile.TarInfo, str]]:
    """(member, path below folder) for the regular files under <top>/<folder>/."""
    out = []
    for m in tar.getmembers():
        parts = Path(m.name).parts
        if m.name.startswith("/") or ".." in parts:
            raise DataNotFoundError(f"archive {url}: unsafe member {m.name!r} refused (absolute or '..' path)")
        if len(parts) > 2 and parts[1] == folder and m.isfile() and parts[-1] not in _SKIP_NAMES:
            out.append((m, "/".join(parts[2:])))
    if not out:
        raise DataNotFoundError(f"archive {url} has no files under <top folder>/{folder}/")
    return out


def _extract(archive: Path, folder: str, url: str, into: Path) -> dict[str, dict[str, int | str]]:
    """Extract <top>/<folder>/** into `into` (safely); returns {relative path: {size, sha256}}."""
    try:
        tar = tarfile.open(archive, mode="r:*")
    except tarfile.TarError as e:
        raise DataNotFoundError(f"{url} is not a tar archive: {e}") from None
    listing: dict[str, dict[str, int | str]] = {}
    with tar:
        for member, rel in _members(tar, folder, url):
            try:
                tar.extract(member, into / "raw", filter="data")
            except tarfile.FilterError as e:
                raise DataNotFoundError(f"archive {url}: unsafe member {member.name!r} refused ({e})") from None
            dest = into / "out" / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            (into / "raw" / member.name).rename(dest)
            listing[rel] = {"size": dest.stat().st_size, "sha256": _sha256(dest)}
    return listing


def fetch(name: str, cache_dir: str | None = None, source: str | None = None, force: bool = False,
          sha256: str | None = None) -> FetchResult:
    """Install dataset `name` under <cache>/data/<name>/ unless it is already there (or force).

    A copy whose manifest no longer matches its files (a file deleted or truncated) is fetched again.

    >>> fetch("sentibench").target   # doctest: +SKIP
    PosixPath('/home/me/.cache/sentidistill/data/sentibench')
    """
    if name not in DATASETS:
        raise DataNotFoundError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    spec = DATASETS[name]
    url = source or spec.url
    root = default_cache_dir(cache_dir) / "data"
    target = root / name
    by_hand = target.is_dir() and not (target / MANIFEST).exists() and any(target.iterdir())
    if not force and (is_complete(target) or by_hand):
        # a complete fetched copy, or data someone put there by hand: both are left alone
        files = [p for p in target.rglob("*") if p.is_file() and p.name != MANIFEST]
        return FetchResult(target, len(files), sum(p.stat().st_size for p in files), downloaded=False)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}.tmp-", dir=root) as tmp_dir:
        tmp = Path(tmp_dir)
        archive = tmp / "archive"
        download(url, archive)
        digest = _sha256(archive)
        if sha256 and digest != sha256.lower():
            raise DataNotFoundError(f"archive {url} has sha256 {digest}, expected {sha256}")
        listing = _extract(archive, spec.folder, url, tmp)
        manifest = {"dataset": name, "source": url, "archive_sha256": digest,
                    "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "files": listing}
        (tmp / "out" / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        old = root / f".{name}.old-{uuid.uuid4().hex[:8]}"
        if target.exists():
            target.rename(old)  # keep the previous copy until the new one is in place
        (tmp / "out").rename(target)
        shutil.rmtree(old, ignore_errors=True)
    return FetchResult(target, len(listing), sum(int(f["size"]) for f in listing.values()), downloaded=True)


@dataclass(frozen=True)
class UploadResult:
    """Where the dataset now is on shared storage (the URI to set as data_dir) and what was copied."""

    data_dir: str
    target: str
    files: int
    bytes: int


def upload(name: str, to: str, source_dir: str | None = None, cache_dir: str | None = None,
           source: str | None = None) -> UploadResult:
    """Copy dataset `name` to `<to>/<name>/` on shared storage (s3://, gs://), so every node reads one copy.

    The local copy is `source_dir` (e.g. ../shared/data/sentibench), else the cache (fetched first if
    missing). A file-by-file listing with sha256 sums travels with it as its fetch manifest.
    """
    import pyarrow.fs as pafs

    from sentidistill.rundir import is_remote, split_uri

    if name not in DATASETS:
        raise DataNotFoundError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    if not is_remote(to):
        raise DataNotFoundError(f"--to {to!r}: give shared storage (s3://bucket/path or gs://bucket/path); "
                                "for a local copy use the cache (no --to) or --cache-dir")
    src = Path(source_dir).expanduser() if source_dir else fetch(name, cache_dir=cache_dir, source=source).target
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.name not in _SKIP_NAMES and p.name != MANIFEST)
    if not files:
        raise DataNotFoundError(f"--from {str(src)!r}: no dataset files there")
    root = to.rstrip("/")
    fs, base = split_uri(f"{root}/{name}")
    listing: dict[str, dict[str, int | str]] = {}
    for f in files:
        rel = f.relative_to(src).as_posix()
        dest = f"{base}/{rel}"
        fs.create_dir(dest.rsplit("/", 1)[0], recursive=True)
        pafs.copy_files(str(f), dest, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
        listing[rel] = {"size": f.stat().st_size, "sha256": _sha256(f)}
    manifest = {"dataset": name, "source": str(src.resolve()),
                "uploaded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "files": listing}
    with fs.open_output_stream(f"{base}/{MANIFEST}") as out:
        out.write((json.dumps(manifest, indent=2) + "\n").encode())
    return UploadResult(root, f"{root}/{name}", len(listing), sum(int(m["size"]) for m in listing.values()))
