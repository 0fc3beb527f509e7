"""`sentidistill models prepare|resolve`."""

from __future__ import annotations

import typer

from sentidistill.cli.app import app, console, setup_logging
from sentidistill.models import default_cache_dir, resolve_model

models_app = typer.Typer(help="Materialise and locate models.", no_args_is_help=True)
app.add_typer(models_app, name="models")

CACHE_OPT = typer.Option(None, "--cache-dir", help="Cache root (default $SENTIDISTILL_CACHE or ~/.cache/sentidistill).")


@models_app.command("prepare")
def prepare(ref: str = typer.Argument(..., help="Named model, .gguf file, hub id, or s3:// / gs:// folder."),
            cache_dir: str = CACHE_OPT) -> None:
    """Materialise a model as a plain safetensors HF folder (idempotent) and print its path."""
    setup_logging()
    path = resolve_model(ref, default_cache_dir(cache_dir))
    console.print(f"[green]ready[/green] {ref} -> {path}")
    typer.echo(str(path))
