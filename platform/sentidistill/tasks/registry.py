"""The task registry: the shipped `specs/*.yaml` plus the user's `tasks.extra_files`.

Built from known folders (no import side effects). Each file is merged over `specs/_defaults.yaml`
(files whose name starts with '_' are not tasks). Duplicate names raise, unknown names get
"Did you mean ...? Available: ...", and validation errors name the file and the field.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from sentidistill.errors import ConfigError
from sentidistill.readers import read_mapping, yaml_files
from sentidistill.tasks.spec import SENTIBENCH, TaskSpec

if TYPE_CHECKING:
    from sentidistill.config import PipelineConfig, TasksConfig
    from sentidistill.tasks.example import Example

SPECS_DIR = Path(__file__).resolve().parent / "specs"
DEFAULTS_FILE = SPECS_DIR / "_defaults.yaml"


def _read_mapping(path: Path) -> dict[str, Any]:
    return read_mapping(path, "task file", holds="a mapping (name, kind, data, instruction, ...)", empty_ok=False)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _format(err: ValidationError, path: Path) -> ConfigError:
    lines = []
    for e in err.errors():
        msg = "unknown key (check the spelling)" if e["type"] == "extra_forbidden" else e["msg"]
        msg = msg.removeprefix("Value error, ")
        where = ".".join(str(p) for p in e["loc"])
        lines.append(f"{where}: {msg}" if where else msg)  # cross-field checks name their own fields
    return ConfigError(f"invalid task file {str(path)!r}:\n  " + "\n  ".join(lines))


def load_spec(path: str | Path, defaults: dict[str, Any] | None = None) -> TaskSpec:
    """One task file merged over the shared defaults, validated; errors name the file and field."""
    p = Path(path)
    base = _read_mapping(DEFAULTS_FILE) if defaults is None else defaults
    try:
        spec = TaskSpec.model_validate(_merge(base, _read_mapping(p)))
    except ValidationError as e:
        raise _format(e, p) from None
    spec._source = p.resolve()
    return spec


@lru_cache(maxsize=1)
def _shipped() -> tuple[TaskSpec, ...]:
    defaults = _read_mapping(DEFAULTS_FILE)
    return tuple(load_spec(f, defaults) for f in yaml_files(SPECS_DIR, "tasks", skip_private=True))


class TaskRegistry:
    """Tasks by name, in load order (shipped files by file name, then extra files as listed)."""

    def __init__(self, specs: Sequence[TaskSpec], data_dir: str | None = None, cache_dir: str | None = None):
        self._specs: dict[str, TaskSpec] = {}
        for spec in specs:
            if spec.name in self._specs:
                first = self._specs[spec.name].source
                raise ConfigError(f"task {spec.name!r} is defined twice: in {str(first)!r} and {str(spec.source)!r}; "
                                  "rename one (the 'name' key)")
            self._specs[spec.name] = spec
        self.data_dir = data_dir
        self.cache_dir = cache_dir

    def get(self, name: str, field: str = "task") -> TaskSpec:
        """The task called `name`; `field` names the config key the name came from, for the error."""
        spec = self._specs.get(name)
        if spec is None:
            close = difflib.get_close_matches(name, list(self._specs), n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(f"{field}: Unknown task {name!r}.{hint} Available: {', '.join(self._specs)}")
        return spec

    def select(self, names: Sequence[str] | None, field: str = "tasks") -> list[TaskSpec]:
        """Named tasks in the given order; None = the SentiBench tasks. Unknown names raise."""
        if names is None:
            return self.benchmark(SENTIBENCH)
        return [self.get(n, field) for n in names]

    def benchmark(self, name: str = SENTIBENCH) -> list[TaskSpec]:
        return [s for s in self._specs.values() if s.benchmark == name]

    def names(self) -> list[str]:
        return list(self._specs)

    def fingerprint(self, names: Sequence[str] | None = None) -> str:
        """Combined fingerprint of the selected tasks (for stage config hashes)."""
        return "-".join(s.fingerprint() for s in self.select(names))

    def load_split(self, name: str, split: str, limit: int | None = None) -> list[Example]:
        """The task's split as Examples, with this registry's data_dir and cache_dir."""
        from sentidistill.tasks.splits import load_split

        return load_split(self.get(name), split, self.data_dir, self.cache_dir, limit=limit)

    def __getitem__(self, name: str) -> TaskSpec:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[TaskSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)


def load_registry(cfg: PipelineConfig | TasksConfig | None = None, data_dir: str | None = None,
                  cache_dir: str | None = None) -> TaskRegistry:
    """The shipped tasks plus `tasks.extra_files` (files or folders of YAML).

    With a PipelineConfig, data_dir and cache_dir default to the config's.
    >>> reg = load_registry(load_config("jobs/configs/local.yaml"))
    >>> reg.get("imdb").labels
    ['negative', 'positive']
    """
    tasks_cfg = getattr(cfg, "tasks", cfg)
    if cfg is not None and hasattr(cfg, "data_dir"):
        data_dir = data_dir or cfg.data_dir  # type: ignore[union-attr]
        cache_dir = cache_dir or cfg.cache_dir  # type: ignore[union-attr]
    extra: list[TaskSpec] = []
    if tasks_cfg is not None:
        defaults = _read_mapping(DEFAULTS_FILE)
        for entry in tasks_cfg.extra_files:
            extra.extend(load_spec(f, defaults) for f in yaml_files(entry, "tasks.extra_files", skip_private=True))
    return TaskRegistry([*_shipped(), *extra], data_dir=data_dir, cache_dir=cache_dir)
