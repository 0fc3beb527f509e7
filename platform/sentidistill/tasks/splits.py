"""Task split loading: a task split -> list[Example] (SentiBench JSON arrays or user JSONL).

Files are UTF-8, optionally with a byte-order mark (SentiBench has one). Paths may be `data://rel`
(resolved in the data dirs), relative to the task's YAML file, absolute, or s3:// / gs:// URIs.
Rows keep their text unchanged: prompts and SSA offsets depend on the exact characters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sentidistill.data.locate import DATA_SCHEME, resolve_data_path
from sentidistill.errors import ConfigError, DataNotFoundError, StageInputError
from sentidistill.readers import BadRecord, iter_json_records, read_text
from sentidistill.tasks.example import Example
from sentidistill.tasks.gold import GoldError, build_gold
from sentidistill.tasks.spec import TaskSpec

SPLITS = ("train", "val", "test")


def split_path(task: TaskSpec, split: str, data_dir: str | None = None, cache_dir: str | None = None) -> str:
    """Where a task's split lives, resolved (raises DataNotFoundError naming every place looked)."""
    if split not in SPLITS:
        raise ConfigError(f"task {task.name!r}: unknown split {split!r} (one of {', '.join(SPLITS)})")
    path = getattr(task.data, split)
    if path is None:
        raise ConfigError(f"task {task.name!r} has no {split!r} split (data.{split} is not set)")
    if path.startswith(DATA_SCHEME):
        return resolve_data_path(path, data_dir, cache_dir)
    if "://" in path:
        return path
    p = Path(path).expanduser()
    if not p.is_absolute() and task.source is not None:
        p = task.source.parent / p
    if not p.is_file():
        where = f" (relative to {str(task.source.parent)!r})" if task.source and not Path(path).is_absolute() else ""
        raise DataNotFoundError(f"task {task.name!r}: data.{split} file {path!r} not found{where}")
    return str(p)


def read_rows(path: str, fmt: str) -> list[dict[str, Any]]:
    """Rows of a JSON array or a JSONL file; the first bad line or item fails, naming the file and where."""
    text = read_text(path)
    if fmt == "json" and not text.lstrip().startswith("["):
        raise StageInputError(f"{path}: expected a JSON array of rows; set data.format: jsonl for one object per line")
    rows = []
    for rec in iter_json_records(text, fmt):
        if isinstance(rec, BadRecord):
            why = "is not an object" if rec.reason == "not_an_object" else f"is not valid JSON ({rec.detail})"
            raise StageInputError(f"{path}: {rec.where} {why}")
        rows.append(rec)
    return rows


def to_example(task: TaskSpec, row: dict[str, Any], id: str) -> Example:
    """One row -> Example (gold built by the task's gold builder)."""
    f = task.fields
    if f.text not in row or not isinstance(row[f.text], str):
        raise GoldError(f"missing text field {f.text!r} (fields.text)")
    target = None
    if f.target:
        if f.target not in row:
            raise GoldError(f"missing target field {f.target!r} (fields.target)")
        target = str(row[f.target])
    return Example(id=id, text=row[f.text], gold=build_gold(task, row), target=target, raw=row)


def load_split(task: TaskSpec, split: str, data_dir: str | None = None, cache_dir: str | None = None,
               *, limit: int | None = None) -> list[Example]:
    """A task split as Examples in file order (ids `<task>/<split>/<row index>`); `limit` keeps the first N."""
    path = split_path(task, split, data_dir, cache_dir)
    rows = read_rows(path, task.data.format)
    if limit is not None:
        rows = rows[:limit]
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(to_example(task, row, f"{task.name}/{split}/{i}"))
        except GoldError as e:
            raise StageInputError(f"{path}: row {i} (task {task.name!r}): {e}") from None
    return out
