"""Multi-perspective prompting (MPP) templates: YAML data, one perspective per file, no code.

The defaults (overall, emotions, aspects, implicit, stance, rewrite; see method.md) ship beside
this module; users add their own with `generate.perspective_files`. A perspective names an
output check from the closed registry `perspectives.checks.CHECKS` instead of carrying code, and
duplicate or unknown names fail loudly so a typo never silently drops a perspective.

>>> [p.name for p in select_perspectives(["overall", "rewrite"])]
['overall', 'rewrite']
"""

from __future__ import annotations

import difflib
import hashlib
import json
import random
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sentidistill.errors import ConfigError
from sentidistill.perspectives.checks import CHECKS
from sentidistill.readers import read_document, yaml_files

BUILTIN_DIR = Path(__file__).parent
TEXT_SLOT = "{text}"


class Perspective(BaseModel):
    """One analysis instruction; `{text}` in `user` is replaced by the corpus text."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9_-]*$", description="Unique name (lowercase).")
    description: str = Field("", description="What the perspective asks for (docs and reports).")
    system: str | None = Field(None, description="Optional system message.")
    user: str = Field(..., description="User message; must contain {text}.")
    max_new_tokens: int | None = Field(None, ge=1, description="Answer budget; None = generate.max_new_tokens.")
    temperature: float | None = Field(None, ge=0, description="None = generate.temperature.")
    top_p: float | None = Field(None, gt=0, le=1, description="None = generate.top_p.")
    check: str | None = Field(None, description=f"Output check, one of {sorted(CHECKS)}.")

    @model_validator(mode="after")
    def _valid(self) -> Perspective:
        if TEXT_SLOT not in self.user:
            raise ValueError(f"user template must contain {TEXT_SLOT}")
        if self.check is not None and self.check not in CHECKS:
            raise ValueError(did_you_mean("check", self.check, sorted(CHECKS)))
        return self

    @property
    def variant(self) -> str:
        """Short hash of everything that shapes the prompt and its params: recorded on every row."""
        blob = json.dumps(self.model_dump(exclude={"description"}), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:8]

    def messages(self, text: str) -> list[dict[str, str]]:
        """Chat messages for one text. str.replace, not str.format: templates may hold JSON braces."""
        out = [{"role": "system", "content": self.system}] if self.system else []
        return [*out, {"role": "user", "content": self.user.replace(TEXT_SLOT, text)}]


def did_you_mean(what: str, name: str, available: list[str]) -> str:
    close = difflib.get_close_matches(name, available, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown {what} {name!r}.{hint} Available: {', '.join(available)}"


def _read_file(path: Path) -> list[Perspective]:
    data = read_document(path, "generate.perspective_files: perspective file")
    items = data if isinstance(data, list) else [data]
    out = []
    for i, item in enumerate(items):
        where = f"{path}" + (f" (item {i})" if isinstance(data, list) else "")
        if not isinstance(item, dict):
            raise ConfigError(f"perspective file {where}: expected a mapping with name/user, got {type(item).__name__}")
        try:
            out.append(Perspective.model_validate(item))
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, x['loc'])) or 'perspective'}: {x['msg']}" for x in e.errors())
            raise ConfigError(f"perspective file {where}: {problems}") from None
    return out


def load_registry(extra_files: list[str] | None = None) -> dict[str, Perspective]:
    """Built-in perspectives plus user files (files or folders of YAML); a duplicate name is an error."""
    registry: dict[str, Perspective] = {}
    origin: dict[str, Path] = {}
    extra = [p for f in extra_files or [] for p in yaml_files(f, "generate.perspective_files")]
    for path in [*sorted(BUILTIN_DIR.glob("*.yaml")), *extra]:
        for p in _read_file(path):
            if p.name in registry:
                raise ConfigError(
                    f"perspective {p.name!r} is defined twice: in {origin[p.name]} and in {path}; rename one"
                )
            registry[p.name], origin[p.name] = p, path
    return registry


def select_perspectives(names: list[str], extra_files: list[str] | None = None) -> list[Perspective]:
    """The named perspectives in the order given; unknown names get a did-you-mean answer."""
    registry = load_registry(extra_files)
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ConfigError("generate.perspectives: " + "; ".join(did_you_mean("perspective", n, sorted(registry))
                                                                for n in unknown))
    return [registry[n] for n in names]


def sample_for_text(names: list[str], k: int | None, seed: int, source_id: str) -> list[str]:
    """The k perspectives one text gets (all when k is None), in list order.

    Seeded by (seed, source_id) only, so the choice is stable across row order, limits and reruns.
    """
    if k is None or k >= len(names):
        return list(names)
    digest = hashlib.sha256(f"{seed}\x1f{source_id}".encode()).digest()
    chosen = set(random.Random(int.from_bytes(digest[:8], "big")).sample(range(len(names)), k))
    return [n for i, n in enumerate(names) if i in chosen]
