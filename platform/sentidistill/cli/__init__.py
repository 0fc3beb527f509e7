"""The `sentidistill` command line: one typer app, one module per command group."""

from __future__ import annotations

import sys

from sentidistill.cli import ablate_cmd, config_cmd, data_cmd, eval_cmd, generate_cmd, icl_cmd, models_cmd, plan_cmd, run_cmd, score_cmd, serve_cmd, submit_cmd, tasks_cmd, train_cmd  # noqa: F401  (register commands)
from sentidistill.cli.app import app, console
from sentidistill.errors import SentiDistillError


def main() -> None:
    """Entry point: user errors print as one clear message (exit 2), never as a traceback."""
    try:
        app()
    except SentiDistillError as e:
        console.print(f"[bold red]error:[/bold red] {e}", highlight=False)
        sys.exit(2)


__all__ = ["app", "main"]
