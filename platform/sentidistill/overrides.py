"""Command-line flags as config changes: the one place a flag becomes a dotted override or a config edit.

The CLI parses flags and hands them here, so `run`, `ablate` and `eval` load a config the same way
and a flag means the same override wherever it appears.
"""

from __future__ import annotations

import json

from sentidistill.config import PipelineConfig, load_config, with_limit
from sentidistill.errors import ConfigError


def csv(value: str, flag: str) -> list[str]:
    """A comma-separated flag value as a list; an empty one is an error naming the flag."""
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise ConfigError(f"{flag}: give a comma-separated list, e.g. {flag} imdb,sst2")
    return items


def eval_overrides(*, tasks: str | None = None, limit: int | None = None, seeds: str | None = None,
                   reference: str | None = None, endpoint: str | None = None,
                   models: list[str] | None = None) -> list[str]:
    """`eval`'s flags as overrides. JSON values are valid YAML: task names like 'no' stay strings."""
    out = []
    if tasks:
        out.append(f"eval.tasks={json.dumps(csv(tasks, '--tasks'))}")
    if limit:
        out.append(f"eval.limit={limit}")
    if seeds:
        out.append(f"eval.seeds=[{','.join(csv(seeds, '--seeds'))}]")
    if reference:
        out.append(f"eval.reference={json.dumps(reference)}")
    if endpoint:
        if not models:
            raise ConfigError("--endpoint needs --model <served model name>")
        out += ["eval.engine.kind=openai", f"eval.engine.openai.base_url={json.dumps(endpoint)}"]
    return out


def load_with_flags(config: str, overrides: list[str] | None, *, limit: int | None = None,
                    extra: list[str] | None = None) -> PipelineConfig:
    """Load a config with the user's overrides, then the flags' (`extra`), then `--limit` (a quick run)."""
    cfg = load_config(config, [*(overrides or []), *(extra or [])])
    return with_limit(cfg, limit) if limit is not None else cfg


__all__ = ["csv", "eval_overrides", "load_with_flags"]
