"""Reading input files, in one place: config-like mappings, JSON/JSONL rows, file lists from globs
and folders, local or s3:// / gs:// through pyarrow filesystems.

Every reader names the file (and line) in its errors. The corpus reader, the replay engine, the task
split loader, task and perspective files, cluster files, DeepSpeed JSON and the pipeline config read
through here, so a BOM, a glob in a bucket URI or a bad JSON line is handled the same way everywhere.
Bottom layer: imports only `errors` and `rundir`, so `config` can use it too.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import yaml

from sentidistill.errors import ConfigError
from sentidistill.rundir import split_uri

YAML_SUFFIXES = (".yaml", ".yml")


# -- mappings (YAML, or JSON for .json files) ------------------------------------------------------------
def read_document(path: str | Path, what: str) -> Any:
    """The parsed YAML (JSON for `.json`) document of a local file; errors say `what` the file is.

    A missing file, unreadable bytes and invalid syntax each raise a ConfigError naming the file.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{what} {str(p)!r} does not exist")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{what} {str(p)!r} cannot be read: {e}") from None
    if p.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{what} {str(p)!r} is not valid JSON ({e})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {str(p)!r} is not valid YAML: {e}") from None


def read_mapping(path: str | Path, what: str, holds: str = "a mapping at the top level",
                 empty_ok: bool = True) -> dict[str, Any]:
    """A file holding one mapping (`read_document` errors, plus "must hold <holds>" for anything else).

    An empty file is `{}` when `empty_ok`, else it fails like any non-mapping.
    """
    data = read_document(path, what)
    if data is None and empty_ok:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {str(Path(path).expanduser())!r} must hold {holds}")
    return data


# -- file lists ------------------------------------------------------------------------------------
def yaml_files(entry: str | Path, what: str, skip_private: bool = False) -> list[Path]:
    """A YAML file, or every YAML file in a folder (recursive, sorted); `skip_private` drops `_*` files."""
    p = Path(entry).expanduser()
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.suffix in YAML_SUFFIXES
                      and not (skip_private and f.name.startswith("_")))
    if p.is_file():
        return [p]
    raise ConfigError(f"{what}: {str(p)!r} does not exist: it is neither a file nor a folder (looked at {p.resolve()})")


def _glob_at(path: str) -> int:
    return min((path.find(c) for c in "*?[" if c in path), default=-1)


def split_glob_uri(path: str) -> tuple[pafs.FileSystem, str]:
    """`rundir.split_uri` that also takes globs in URIs (pyarrow cannot parse `[` in a URI)."""
    glob_at = _glob_at(path)
    if "://" not in path or glob_at < 0:
        return split_uri(path)
    head = path[:glob_at].rsplit("/", 1)[0]
    fs, base = split_uri(head)
    return fs, base.rstrip("/") + path[len(head):]


def list_files(fs: pafs.FileSystem, path: str, keep: Callable[[str], bool]) -> list[str]:
    """Files a glob (`*`, `?`, `[`) matches, or files under a folder (recursive) that `keep` accepts, sorted.

    Hidden (`.`) and private (`_`) files in a folder are skipped (Spark/Ray write `_SUCCESS`, `.crc`).
    """
    glob_at = _glob_at(path)
    base = path if glob_at < 0 else path[:glob_at].rsplit("/", 1)[0]
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    files = [i.path for i in infos if i.type == pafs.FileType.File]
    if glob_at >= 0:
        return sorted(p for p in files if fnmatch.fnmatch(p, path))
    return sorted(p for p in files if keep(p) and not p.rsplit("/", 1)[-1].startswith((".", "_")))


# -- JSON rows ----------------------------------------------------------------------------------------
def read_text(path: str) -> str:
    """A local file or s3:// / gs:// object as text (UTF-8, a leading byte-order mark dropped)."""
    if "://" in path:
        fs, inner = split_uri(path)
        with fs.open_input_stream(inner) as f:
            return f.read().decode("utf-8-sig")
    return Path(path).read_text(encoding="utf-8-sig")


@dataclass(frozen=True)
class BadRecord:
    """A JSON item that is not a row: where it is, the offending text or value, a short reason."""

    where: str  # "file", "line 3" or "item 3"
    raw: Any
    reason: str  # invalid_json_file | invalid_json | not_an_object (the corpus reader adds its own)
    detail: str = ""  # the parser's message


def iter_json_records(text: str, fmt: str) -> Iterator[dict[str, Any] | BadRecord]:
    """Rows of a JSON array (`fmt` "json" and the text starts with `[`) or of one object per line.

    Bad items come back as `BadRecord` (never raised), so a caller decides: the corpus reader keeps
    going and reports them, the task split loader fails naming the line.
    """
    text = text.lstrip("\ufeff")
    if fmt == "json" and text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            yield BadRecord("file", str(e), "invalid_json_file", str(e))
            return
        for n, item in enumerate(items):
            yield item if isinstance(item, dict) else BadRecord(f"item {n}", item, "not_an_object")
        return
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            yield BadRecord(f"line {n}", line, "invalid_json", e.msg)
            continue
        yield item if isinstance(item, dict) else BadRecord(f"line {n}", item, "not_an_object")
