"""The terminal rendering of a model comparison (built by `evaluation.compare`), shared by
`eval`, `run` and `ablate`; the notes under the table say what the numbers can and cannot show."""

from __future__ import annotations

import shlex
from typing import Any

from sentidistill.evaluation.compare import Comparison
from sentidistill.stages.pipeline import StepResult


def rerun_hint(words: list[str], overrides: list[str] | None = None) -> str:
    """The command the small-sample note points to: the same one (same overrides, so the same run
    directory and artifacts) with protocol-sized evaluation."""
    kept = [o for o in overrides or [] if not o.startswith(("eval.limit=", "eval.seeds="))]
    line = " ".join(shlex.quote(w) for w in [*words, *kept])
    return f"`{line} eval.limit=200 'eval.seeds=[42,52,62]'`"


def print_step(console: Any, step: StepResult) -> None:
    """One line per pipeline / ablation step as it ends: ran, skipped, disabled or failed."""
    colour = {"ran": "green", "skipped": "cyan", "failed": "red"}.get(step.status, "yellow")
    console.print(f"[{colour}]{step.status:>8}[/{colour}] {step.step} ({step.seconds:.1f}s)")


def print_comparison(console: Any, comp: Comparison, title: str = "SentiBench x100") -> None:
    """Rich table: tasks, categories, SentiBench; differences whose interval excludes 0 in bold."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, header_style="bold")
    table.add_column("task")
    for head in comp.header()[1:]:
        table.add_column(head, justify="right")
    for i, row in enumerate(comp.rows):
        last_of_kind = i + 1 == len(comp.rows) or comp.rows[i + 1].kind != row.kind
        cells = [f"[bold]{escape(t)}[/bold]" if mark else escape(t)
                 for t, mark in zip(comp.texts(row), comp.marks(row), strict=True)]
        table.add_row(escape(row.name), *cells, style="bold" if row.kind == "total" else None, end_section=last_of_kind)
    console.print(table)
    for note in comp.notes:
        console.print(note, highlight=False, markup=False, soft_wrap=True)
