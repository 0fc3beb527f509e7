"""The typer app and the helpers every command shares. Commands live in sibling modules."""

from __future__ import annotations

import os

import typer

from sentidistill import console as console_mod
from sentidistill.config import PipelineConfig
from sentidistill.overrides import load_with_flags

app = typer.Typer(
    name="sentidistill",
    help="Distil sentiment analysis from a teacher LLM into a compact student, on Ray.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = console_mod.console  # one rich console: while a log session is open it writes to the real terminal
# Commands that start Ray: their library and worker output goes to <run_dir>/logs/ (sentidistill.console).
LOGGED_COMMANDS = {"run", "generate", "icl", "build-icl", "train", "eval", "ablate", "serve"}

CONFIG_ARG = typer.Argument(..., help="Pipeline YAML config (see jobs/configs/).", show_default=False)
OVERRIDES_ARG = typer.Argument(None, help="Dotted overrides, e.g. train.knowdist.lr=1e-4 eval.limit=8.",
                               show_default=False)


_invoked: dict[str, str | None] = {"command": None}


@app.callback()
def options(ctx: typer.Context, verbose: bool = typer.Option(
        False, "-v", "--verbose", help="Show everything Ray, DeepSpeed, vLLM and transformers print "
        "(default: kept in <run_dir>/logs/).")) -> None:
    """Distil sentiment analysis from a teacher LLM into a compact student, on Ray."""
    _invoked["command"] = ctx.invoked_subcommand
    if verbose and "SENTIDISTILL_VERBOSE" not in os.environ:
        os.environ["SENTIDISTILL_VERBOSE"] = "1"  # what sentidistill.console reads
        ctx.call_on_close(lambda: os.environ.pop("SENTIDISTILL_VERBOSE", None))
    ctx.call_on_close(console_mod.stop)  # after the command, also when it fails: restore the terminal, upload


def setup_logging() -> None:
    console_mod.setup_logging()


def load(config: str, overrides: list[str] | None, *, limit: int | None = None,
         extra: list[str] | None = None) -> PipelineConfig:
    """Load + validate (flags applied by `overrides.load_with_flags`); ConfigError propagates to main(),
    which prints it without a traceback."""
    setup_logging()
    cfg = load_with_flags(config, overrides, limit=limit, extra=extra)
    command = _invoked["command"]
    if command in LOGGED_COMMANDS:
        console_mod.start(cfg.run_dir, command, cfg.cache_dir)
    return cfg
