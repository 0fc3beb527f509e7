"""Find data files: explicit dir, $SENTIDISTILL_DATA, the download cache, then ../shared/data.

Paths written as `data://sentibench/sc/imdb/train.json` are resolved here, so configs stay
portable between a laptop (shared checkout), a cluster image (env var) and a fetched cache.
"""

from __future__ import annotations

import os
from pathlib import Path

from sentidistill.errors import DataNotFoundError
from sentidistill.models import default_cache_dir

DATA_SCHEME = "data://"
FETCH_HINT = "`sentidistill data fetch sentibench` downloads SentiBench into the cache"


def data_roots(data_dir: str | None = None, cache_dir: str | None = None) -> list[tuple[str, Path]]:
    """Candidate roots in lookup order, each with where it came from."""
    roots: list[tuple[str, Path]] = []
    if data_dir:
        roots.append(("config data_dir", Path(data_dir).expanduser()))
    if os.environ.get("SENTIDISTILL_DATA"):
        roots.append(("$SENTIDISTILL_DATA", Path(os.environ["SENTIDISTILL_DATA"]).expanduser()))
    roots.append(("download cache", default_cache_dir(cache_dir) / "data"))
    roots.append(("../shared/data (from the current directory)", Path.cwd().parent / "shared" / "data"))
    repo_shared = Path(__file__).resolve().parents[4] / "shared" / "data"
    if repo_shared != roots[-1][1]:
        roots.append(("../shared/data (beside the source checkout)", repo_shared))
    return roots


def remote_root(data_dir: str | None = None) -> tuple[str, str] | None:
    """(where it came from, URI) when the data root is on shared storage (s3://, gs://): then it is the only root.

    A cluster's nodes must all read the same copy, so a remote root never falls back to a node's own disk.
    """
    from sentidistill.rundir import is_remote

    for label, value in (("config data_dir", data_dir), ("$SENTIDISTILL_DATA", os.environ.get("SENTIDISTILL_DATA"))):
        if value:
            return (label, value.rstrip("/")) if is_remote(value) else None
    return None


def _resolve_remote(path: str, rel: str, label: str, root: str) -> str:
    import pyarrow.fs as pafs

    from sentidistill.rundir import split_uri

    uri = f"{root}/{rel}"
    try:
        fs, inner = split_uri(uri)
        found = fs.get_file_info(inner).type != pafs.FileType.NotFound
    except OSError as e:
        raise DataNotFoundError(f"data file {path!r}: cannot read {label} {root!r} ({e})") from None
    if not found:
        raise DataNotFoundError(f"data file {path!r} not found at {uri} ({label}). Upload it with "
                                f"`sentidistill data fetch sentibench --to {root}`.")
    return uri


def resolve_data_path(path: str, data_dir: str | None = None, cache_dir: str | None = None) -> str:
    """`data://rel` -> the first existing root/rel; any other path or URI is returned unchanged."""
    if not path.startswith(DATA_SCHEME):
        return path
    rel = path[len(DATA_SCHEME):].lstrip("/")
    remote = remote_root(data_dir)
    if remote is not None:
        return _resolve_remote(path, rel, *remote)
    roots = data_roots(data_dir, cache_dir)
    for _, root in roots:
        candidate = root / rel
        if candidate.exists():
            return str(candidate.resolve())
    looked = "; ".join(f"{label}: {root / rel}" for label, root in roots)
    raise DataNotFoundError(f"data file {path!r} not found. Looked in {looked}. {FETCH_HINT}, "
                            "or set data_dir / $SENTIDISTILL_DATA to a folder that holds it.")
