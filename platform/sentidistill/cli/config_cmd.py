"""`sentidistill config validate|show|schema`."""

from __future__ import annotations

import json

import typer

from sentidistill.cli.app import CONFIG_ARG, OVERRIDES_ARG, app, console
from sentidistill.config import PipelineConfig, dump_config, load_config

config_app = typer.Typer(help="Validate, show and document the pipeline config.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("validate")
def validate(config: str = CONFIG_ARG, overrides: list[str] = OVERRIDES_ARG) -> None:
    """Check a config file (and overrides); every problem is listed with its dotted path."""
    load_config(config, overrides or [])
    console.print(f"[green]ok[/green] {config} is valid")


@config_app.command("show")
def show(config: str = CONFIG_ARG, overrides: list[str] = OVERRIDES_ARG) -> None:
    """Print the resolved config, defaults included, as YAML."""
    typer.echo(dump_config(load_config(config, overrides or [])), nl=False)


@config_app.command("schema")
def schema() -> None:
    """Print the JSON schema of the config (for editors and docs)."""
    typer.echo(json.dumps(PipelineConfig.model_json_schema(), indent=2))
