"""The `sentidistill` command line: one typer app, one module per command group."""

from __future__ import annotations

import sys

from sentidistill.cli import ablate_cmd, config_cmd, data_cmd, eval_cmd, generate_cmd, icl_cmd, models_cmd, plan_cmd, run_cmd, score_cmd, serve_cmd, submit_cmd, tasks_cmd, train_cmd  # noqa: F401  (register commands)
from sentidistill.cli.app import app, console
from sentidistill.errors import SentiDistillError


def main() -> None:
    """Entry point: user errors print as one clear, unwrapped message (exit 2; the cause is the last line),
    never as a traceback."""
    try:
        app(args=verbose_first(sys.argv[1:]))
    except SentiDistillError as e:
        console.print(f"[bold red]error:[/bold red] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)


def verbose_first(args: list[str]) -> list[str]:
    """`sentidistill run CONFIG -v` works like `sentidistill -v run CONFIG` (-v is an app-wide option);
    arguments after `--` (passed on by `submit`) are left alone."""
    cut = args.index("--") if "--" in args else len(args)
    flags = [a for a in args[:cut] if a in ("-v", "--verbose")]
    return flags + [a for a in args[:cut] if a not in flags] + args[cut:]


__all__ = ["app", "main", "verbose_first"]
