"""The typer app and the helpers every command shares. Commands live in sibling modules."""

from __future__ import annotations

import logging

import typer
from rich.console import Console
from rich.logging import RichHandler

from sentidistill.config import PipelineConfig, load_config

app = typer.Typer(
    name="sentidistill",
    help="Distil sentiment analysis from a teacher LLM into a compact student, on Ray.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)

CONFIG_ARG = typer.Argument(..., help="Pipeline YAML config (see jobs/configs/).", show_default=False)
OVERRIDES_ARG = typer.Argument(None, help="Dotted overrides, e.g. train.knowdist.lr=1e-4 eval.limit=8.",
                               show_default=False)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", datefmt="[%X]",
        handlers=[RichHandler(console=console, show_path=False)], force=True,
    )


def load(config: str, overrides: list[str] | None) -> PipelineConfig:
    """Load + validate; ConfigError propagates to main(), which prints it without a traceback."""
    setup_logging()
    return load_config(config, overrides or [])
