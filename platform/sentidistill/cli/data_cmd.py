"""`sentidistill data fetch sentibench`: put public datasets where `data://` paths find them."""

from __future__ import annotations

import typer

from sentidistill.cli.app import app, console, setup_logging

data_app = typer.Typer(help="Download and locate datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("fetch")
def fetch_cmd(
    name: str = typer.Argument(..., help="Dataset to fetch: sentibench."),
    source: str | None = typer.Option(
        None, "--source", help="Archive URL or path instead of the upstream tarball (mirror, offline copy)."
    ),
    cache_dir: str | None = typer.Option(
        None, "--cache-dir", help="Cache root (default $SENTIDISTILL_CACHE or ~/.cache/sentidistill)."
    ),
    sha256: str | None = typer.Option(None, "--sha256", help="Refuse the archive unless it has this sha256."),
    force: bool = typer.Option(False, "--force", help="Download again even when a complete copy is present."),
    to: str | None = typer.Option(
        None, "--to", help="Shared storage for a cluster (s3://bucket/data, gs://...): the dataset is copied to "
        "<to>/<name>/; then set data_dir to this URI.",
    ),
    from_dir: str | None = typer.Option(
        None, "--from", help="With --to: a local copy of the dataset folder to upload (e.g. ../shared/data/sentibench) "
        "instead of the cache.",
    ),
) -> None:
    """Download a dataset into <cache>/data/<name>/ (skipped when already there) and print its path."""
    from sentidistill.data.fetch import fetch, upload

    setup_logging()
    if from_dir and not to:
        raise typer.BadParameter("--from needs --to (the shared storage to upload to)", param_hint="--from")
    if to:
        up = upload(name, to, source_dir=from_dir, cache_dir=cache_dir, source=source)
        console.print(f"[green]uploaded[/green] {name}: {up.files} files, {up.bytes / 1e6:.1f} MB to {up.target}; "
                      f"set data_dir={up.data_dir}")
        typer.echo(up.data_dir)
        return
    res = fetch(name, cache_dir=cache_dir, source=source, force=force, sha256=sha256)
    verb = "fetched" if res.downloaded else "already present"
    console.print(f"[green]{verb}[/green] {name}: {res.files} files, {res.bytes / 1e6:.1f} MB in {res.target}")
    typer.echo(str(res.target))
