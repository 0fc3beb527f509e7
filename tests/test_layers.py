"""The package's layer order, enforced by reading every module's imports (function-local and
TYPE_CHECKING ones included): a module imports only from its own layer or the layers below, and
packages of one layer never import each other in a circle.

A new top-level module or package must be placed in LAYERS below, or this test fails.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sentidistill

PACKAGE = "sentidistill"
ROOT = Path(sentidistill.__file__).parent

# Lowest first. A module's layer is the one of its top-level package or module under sentidistill/.
LAYERS: list[tuple[str, ...]] = [
    ("errors",),
    # config, run-dir layout, model references, Ray start-up and the console; `readers` is the one
    # file-reading module
    ("config", "overrides", "readers", "rundir", "layout", "stage_counts", "models", "runtime", "console"),
    # engines, task specs and splits, corpus data, the perspective templates generation reads
    ("engines", "tasks", "data", "perspectives"),
    # shared generation code (KnowDist and ICLDist), training, evaluation, building the report
    ("generation", "icl", "training", "evaluation", "report"),
    # planning and submitting cluster jobs (driven by the CLI)
    ("cluster",),
    # stages, serving, and the package's public facade (`sentidistill.run_pipeline`)
    ("stages", "serving", "__init__"),
    ("cli",),
    ("__main__",),
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _is_unit(name: str) -> bool:
    """A top-level module or package of sentidistill (not a name its `__init__` exports)."""
    return name not in ("__init__", "__main__") and ((ROOT / f"{name}.py").is_file() or (ROOT / name).is_dir())


def imported_units(source: str, module: str) -> set[str]:
    """Top-level units of `sentidistill` that `source` (the text of module `module`) imports.

    `from sentidistill import x` counts as unit `x` when x is a module or package, else as the
    package facade (`__init__`). Relative imports are resolved against `module`.
    """
    units: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: -node.level]
                base = ".".join([*parent, base] if base else parent)
            if base == PACKAGE:
                units.update(a.name if _is_unit(a.name) else "__init__" for a in node.names)
                continue
            targets = [base]
        else:
            continue
        for t in targets:
            parts = t.split(".")
            if parts[0] == PACKAGE:
                units.add(parts[1] if len(parts) > 1 else "__init__")
    return units


def unit_of(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def upward_imports(source: str, module: str) -> list[str]:
    """The imports in `source` that point to a layer above the one of `module` (or to an unplaced unit)."""
    me = unit_of(module)
    out = []
    for unit in sorted(imported_units(source, module) - {me}):
        if unit not in RANK:
            out.append(f"{module} imports sentidistill.{unit}, which has no layer in LAYERS")
        elif me in RANK and RANK[unit] > RANK[me]:
            out.append(f"{module} (layer {RANK[me]}: {me}) imports sentidistill.{unit} (layer {RANK[unit]})")
    return out


def _modules() -> list[tuple[str, Path]]:
    out = []
    for f in sorted(ROOT.rglob("*.py")):
        # a package's own module keeps its `__init__`, so that `from . import x` resolves inside it
        out.append((".".join([PACKAGE, *f.relative_to(ROOT).with_suffix("").parts]), f))
    return out


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle start found by depth-first search (enough to name one per circle)."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                found.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def test_every_unit_has_a_layer() -> None:
    units = {unit_of(m) for m, _ in _modules()}
    assert sorted(units - set(RANK)) == [], "place these modules/packages in tests/test_layers.py LAYERS"


def test_no_module_imports_from_a_layer_above() -> None:
    problems = [p for m, f in _modules() for p in upward_imports(f.read_text(encoding="utf-8"), m)]
    assert problems == [], "\n".join(problems)


def test_no_circle_between_packages_of_one_layer() -> None:
    edges: dict[str, set[str]] = {}
    for m, f in _modules():
        me = unit_of(m)
        for unit in imported_units(f.read_text(encoding="utf-8"), m) - {me}:
            if RANK.get(unit) == RANK.get(me):
                edges.setdefault(me, set()).add(unit)
    assert _cycles(edges) == []


@pytest.mark.parametrize(("module", "source", "bad"), [
    ("sentidistill.icl.builder", "from sentidistill.stages.outputs import pair_id", ["stages"]),
    ("sentidistill.data.corpus", "def f():\n    import sentidistill.cli.app\n", ["cli"]),  # function-local
    ("sentidistill.perspectives", "from sentidistill import report", ["report"]),
    ("sentidistill.tasks.spec", "from .. import run_pipeline", ["__init__"]),  # relative, the facade
    ("sentidistill.engines.replay", "from ..generation.outputs import pair_id", ["generation"]),
    ("sentidistill.config", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                            "    from sentidistill.layout import RunLayout\n    from sentidistill.data import corpus\n",
     ["data"]),
])
def test_checker_finds_planted_upward_imports(module: str, source: str, bad: list[str]) -> None:
    problems = upward_imports(source, module)
    assert [p.split("imports sentidistill.")[1].split(" ")[0] for p in problems] == bad, problems


def test_checker_accepts_downward_and_own_layer_imports() -> None:
    source = ("from sentidistill.generation.quality import KEPT\nfrom sentidistill.tasks import TaskSpec\n"
              "from . import leakage\nimport sentidistill.errors\nimport json\n")
    assert upward_imports(source, "sentidistill.icl.builder") == []
    assert upward_imports("from sentidistill.brand_new import x", "sentidistill.icl.builder") == [
        "sentidistill.icl.builder imports sentidistill.brand_new, which has no layer in LAYERS"]


def test_circle_detection() -> None:
    assert _cycles({"data": {"tasks"}, "tasks": {"data"}}) == [["data", "tasks", "data"]]
    assert _cycles({"tasks": {"data"}, "engines": {"data", "tasks"}}) == []
