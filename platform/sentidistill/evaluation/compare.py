"""The side-by-side comparison of scored models, built once from `eval/<slug>/` and rendered by the
CLI, `eval/summary.md` and the run report.

Each score shows its bootstrap interval. Each model other than the reference shows its difference
to the reference with a PAIRED bootstrap interval: both models' metrics were recomputed on the
same resampled items (`evaluation.bootstrap.draws`), so the difference of their replicates is the
replicate of the difference. A difference whose interval excludes 0 is marked. Rows are the tasks
some model was scored on (SentiBench's in registry order, then others), their categories, and the
SentiBench mean when a SentiBench task was scored; a caller may add named groups of tasks (a run
with `icl.holdout_tasks` shows the tasks ICLDist trained on and the held-out ones apart). Notes under the table say what the numbers can
and cannot show (too few items, fewer seeds than the protocol).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from sentidistill.evaluation.aggregate import read_replicates
from sentidistill.evaluation.bootstrap import Difference, interval, mean_replicates, paired
from sentidistill.rundir import RunDir
from sentidistill.tasks import load_registry

PROTOCOL_SEEDS = (42, 52, 62)
MIN_ITEMS = 200  # test items per task below which a comparison note says the intervals are too wide
TOTAL = "SentiBench"
RowKind = Literal["task", "category", "group", "total"]


@dataclass(frozen=True)
class Cell:
    """One model's score (x100) with its interval; `note` e.g. '(2/12)' for a partial SentiBench mean."""

    value: float | None
    ci: tuple[float, float] | None = None
    note: str = ""

    @property
    def text(self) -> str:
        if self.value is None:
            return "-"
        span = f" [{self.ci[0]:.1f}, {self.ci[1]:.1f}]" if self.ci else ""
        return f"{self.value:.1f}{span}{' ' + self.note if self.note else ''}"


@dataclass(frozen=True)
class Delta:
    """A model minus the reference (x100), or why there is none."""

    diff: Difference | None
    reason: str = ""

    @property
    def significant(self) -> bool:
        return self.diff is not None and self.diff.significant

    @property
    def text(self) -> str:
        if self.diff is None:
            return self.reason or "-"
        d = self.diff
        return f"{d.delta:+.1f} [{d.low:+.1f}, {d.high:+.1f}]{' *' if d.significant else ''}"


@dataclass
class Row:
    name: str
    kind: RowKind
    cells: dict[str, Cell]
    deltas: dict[str, Delta] = field(default_factory=dict)


@dataclass
class Comparison:
    """Models in column order, the reference they are paired against, rows and the notes under the table."""

    models: list[str]
    reference: str | None
    rows: list[Row]
    notes: list[str]

    def columns(self) -> list[tuple[str, str]]:
        """(kind, slug) per column after the row name: each model, then its difference when it has one."""
        out: list[tuple[str, str]] = []
        for slug in self.models:
            out.append(("value", slug))
            if self.reference is not None and slug != self.reference:
                out.append(("delta", slug))
        return out

    def header(self) -> list[str]:
        return ["task", *(s if k == "value" else f"Δ {s}" for k, s in self.columns())]

    def texts(self, row: Row) -> list[str]:
        return [row.cells[s].text if k == "value" else row.deltas[s].text for k, s in self.columns()]

    def marks(self, row: Row) -> list[bool]:
        """Per column: is it a difference whose interval excludes 0?"""
        return [k == "delta" and row.deltas[s].significant for k, s in self.columns()]

    def markdown(self) -> str:
        cols = self.columns()
        lines = ["| " + " | ".join(self.header()) + " |", "|---|" + "---:|" * len(cols)]
        for r in self.rows:
            name = r.name if r.kind == "task" else f"**{r.name}**"
            lines.append(f"| {name} | " + " | ".join(self.texts(r)) + " |")
        return "\n".join(lines) + "\n\n" + "\n".join(f"{n}  " for n in self.notes) + "\n"

    def as_dict(self) -> dict[str, Any]:
        """Plain values for templates and JSON."""
        return {"models": self.models, "reference": self.reference, "header": self.header(), "notes": self.notes,
                "rows": [{"name": r.name, "kind": r.kind, "values": self.texts(r), "marks": self.marks(r)}
                         for r in self.rows]}


# -- loading ------------------------------------------------------------------------------------
@dataclass
class Scored:
    metrics: dict[str, Any]
    replicates: dict[str, np.ndarray]


def load_scored(rd: RunDir, slugs: list[str]) -> dict[str, Scored | None]:
    """slug -> its metrics.json and bootstrap replicates (None when the model has not been scored yet)."""
    out: dict[str, Scored | None] = {}
    for s in slugs:
        if not rd.exists(f"eval/{s}/metrics.json"):
            out[s] = None
            continue
        reps = read_replicates(rd.read_bytes(f"eval/{s}/bootstrap.npz")) if rd.exists(f"eval/{s}/bootstrap.npz") else {}
        out[s] = Scored(rd.read_json(f"eval/{s}/metrics.json"), reps)
    return out


def _layout(scored: dict[str, Scored | None]) -> tuple[list[str], dict[str, str]]:
    """(task names, task -> category) of every scored task: SentiBench's in registry order, then others."""
    found: dict[str, str] = {}
    for s in scored.values():
        for name, t in (s.metrics["tasks"] if s else {}).items():
            found.setdefault(name, t["category"])
    order = [t.name for t in load_registry().benchmark() if t.name in found]
    return order + [n for n in found if n not in order], found


# -- cells and differences ----------------------------------------------------------------------
def _pair_key(s: Scored, task: str) -> tuple[Any, ...] | None:
    """What must match for two models' replicates of a task to be paired: items and draws."""
    boot = s.metrics.get("bootstrap")
    if boot is None or task not in s.replicates:
        return None
    return s.metrics.get("items_sha256", {}).get(task), boot["resamples"], boot["seed"]


def _delta(model: Scored | None, ref: Scored | None, tasks: list[str], confidence: float) -> Delta:
    """Model minus reference over `tasks` (their unweighted mean x100), paired on the same draws."""
    if model is None or ref is None:
        return Delta(None, "-")
    have = [t for t in tasks if t in model.metrics["tasks"] and t in ref.metrics["tasks"]]
    mine = [t for t in tasks if t in model.metrics["tasks"]]
    theirs = [t for t in tasks if t in ref.metrics["tasks"]]
    if not have:
        return Delta(None, "-")
    if have != mine or have != theirs:
        return Delta(None, "n/a (other tasks)")
    keys = [(_pair_key(model, t), _pair_key(ref, t)) for t in have]
    if any(a is None or b is None for a, b in keys):
        return Delta(None, "n/a (no bootstrap)")
    if any(a != b for a, b in keys):
        return Delta(None, "n/a (other items)")
    point_m = 100 * float(np.mean([model.metrics["tasks"][t]["mean"] for t in have]))
    point_r = 100 * float(np.mean([ref.metrics["tasks"][t]["mean"] for t in have]))
    reps_m = 100 * mean_replicates([model.replicates[t] for t in have])
    reps_r = 100 * mean_replicates([ref.replicates[t] for t in have])
    return Delta(paired(point_m, reps_m, point_r, reps_r, confidence))


def _group_cell(s: Scored, tasks: list[str]) -> Cell:
    """The unweighted mean of `tasks` (all scored, else none) with the interval of its replicates."""
    if not tasks or any(t not in s.metrics["tasks"] for t in tasks):
        return Cell(None)
    value = 100 * float(np.mean([s.metrics["tasks"][t]["mean"] for t in tasks]))
    boot = s.metrics.get("bootstrap")
    if boot is None or any(t not in s.replicates for t in tasks):
        return Cell(value)
    low, high = interval(100 * mean_replicates([s.replicates[t] for t in tasks]), boot["confidence"])
    return Cell(value, (low, high))


def _cell(s: Scored | None, kind: RowKind, name: str, members: list[str]) -> Cell:
    if s is None:
        return Cell(None)
    if kind == "group":
        return _group_cell(s, members)
    m = s.metrics
    if kind == "task":
        t = m["tasks"].get(name)
        ci = t.get("ci") if t else None
        return Cell(None) if t is None else Cell(100 * t["mean"], (100 * ci[0], 100 * ci[1]) if ci else None)
    if kind == "category":
        value, ci = m["categories"].get(name), m.get("categories_ci", {}).get(name)
        return Cell(value, tuple(ci) if ci else None)  # type: ignore[arg-type]
    sb = m.get("sentibench")
    if not sb:
        return Cell(None)
    note = "" if sb["complete"] else f"({sb['tasks_scored']}/{sb['tasks_total']})"
    return Cell(sb["score"], tuple(sb["ci"]) if sb.get("ci") else None, note)  # type: ignore[arg-type]


# -- notes --------------------------------------------------------------------------------------
def _notes(scored: dict[str, Scored], reference: str | None, asked: str, rerun: str) -> list[str]:
    boots = [s.metrics["bootstrap"] for s in scored.values() if s.metrics.get("bootstrap")]
    level = f"{100 * boots[0]['confidence']:.0f}%" if boots else "95%"
    notes = [f"Scores x100, mean over seeds; [low, high]: {level} bootstrap interval over test items"
             + (f" ({boots[0]['resamples']} resamples)." if boots else ".")]
    if reference is not None and len(scored) > 1:
        notes.append(f"Δ: model minus {reference} on the same items, with a paired bootstrap interval; "
                     "* marks a difference whose interval excludes 0.")
    if reference is not None and reference != asked and len(scored) > 1:
        notes.append(f"The reference model {asked!r} (eval.reference) is not in this comparison; "
                     f"differences are to {reference}.")
    items = [n for s in scored.values() for n in s.metrics.get("items_per_task", {}).values()]
    if items and min(items) < MIN_ITEMS:
        few = min(items)
        where = "per task" if few == max(items) else "in some tasks"
        notes.append(f"Only {few} test item{'s' if few != 1 else ''} {where}: too few to separate models a few "
                     f"points apart; to compare them, score at least {MIN_ITEMS} per task with seeds 42/52/62: "
                     f"{rerun}")
    seeds = sorted({seed for s in scored.values() for seed in s.metrics.get("seeds", [])})
    if any(set(s.metrics.get("seeds", [])) != set(PROTOCOL_SEEDS) for s in scored.values()):
        shown = ", ".join(map(str, seeds))
        notes.append(f"Seeds {shown}: the SentiBench protocol averages seeds 42, 52 and 62 (eval.seeds=[42,52,62]).")
    return notes


DEFAULT_RERUN = "rerun with eval.limit=200 'eval.seeds=[42,52,62]' (or remove eval.limit)."


def build(rd: RunDir, slugs: list[str], reference: str = "student-before", rerun: str = DEFAULT_RERUN,
          groups: dict[str, list[str]] | None = None) -> Comparison:
    """The comparison of these models (in this column order) against `reference`.

    `rerun` is the command (or overrides) the small-sample note points to, e.g.
    "sentidistill run jobs/configs/local.yaml eval.limit=200 'eval.seeds=[42,52,62]'".
    `groups`: extra rows, name -> tasks (their unweighted mean, interval and paired difference).
    """
    return compare(load_scored(rd, slugs), reference, rerun, groups)


def compare(loaded: dict[str, Scored | None], reference: str = "student-before",
            rerun: str = DEFAULT_RERUN, groups: dict[str, list[str]] | None = None) -> Comparison:
    """The comparison of already loaded models (None = not scored yet), in their order; a group row
    appears when some model was scored on at least one of its tasks."""
    slugs = list(loaded)
    scored = {s: v for s, v in loaded.items() if v is not None}
    ref = reference if reference in scored else next(iter(scored), None)
    tasks, category = _layout(loaded)
    cats = list(dict.fromkeys(category[t] for t in tasks))
    layout: list[tuple[RowKind, str, list[str]]] = [("task", t, [t]) for t in tasks]
    layout += [("category", c, [t for t in tasks if category[t] == c]) for c in cats]
    layout += [("group", name, [t for t in members if t in category]) for name, members in (groups or {}).items()
               if any(t in category for t in members)]
    if any(s.metrics.get("sentibench") for s in scored.values()):
        bench = {t.name for t in load_registry().benchmark()}
        layout.append(("total", TOTAL, [t for t in tasks if t in bench]))
    confidence = next((s.metrics["bootstrap"]["confidence"] for s in scored.values() if s.metrics.get("bootstrap")),
                      0.95)
    rows = []
    for kind, name, members in layout:
        row = Row(name, kind, {s: _cell(loaded[s], kind, name, members) for s in slugs})
        if ref is not None:
            row.deltas = {s: _delta(loaded[s], loaded[ref], members, confidence) for s in slugs if s != ref}
        rows.append(row)
    notes = _notes(scored, ref, reference, rerun)
    notes += [f"{s}: not scored yet." for s in slugs if loaded[s] is None]
    return Comparison(list(slugs), ref, rows, notes)


__all__ = ["DEFAULT_RERUN", "MIN_ITEMS", "PROTOCOL_SEEDS", "Cell", "Comparison", "Delta", "Row", "Scored", "build",
           "compare", "load_scored"]
