"""`sentidistill tasks list|show|render`: inspect the task registry (SentiBench + user tasks)."""

from __future__ import annotations

import typer
from rich.table import Table

from sentidistill.cli.app import app, console, setup_logging

tasks_app = typer.Typer(help="Inspect evaluation/ICL tasks.", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")
CONFIG_OPT = typer.Option(None, "--config", help="Pipeline config (adds its tasks.extra_files and data_dir).")


def _registry(config: str | None):
    from sentidistill.config import load_config
    from sentidistill.tasks import load_registry

    setup_logging()
    return load_registry(load_config(config) if config else None)


@tasks_app.command("list")
def list_tasks(config: str = CONFIG_OPT) -> None:
    """Every registered task with its category, kind, labels and metric."""
    reg = _registry(config)
    table = Table(title="tasks")
    for col in ("name", "category", "kind", "labels / tuple", "metric", "source"):
        table.add_column(col)
    for task in reg:
        labels = ", ".join(task.labels) if task.kind == "classify" else "(" + ", ".join(task.tuple_fields) + ")"
        table.add_row(task.name, task.category, task.kind, labels, task.metric, str(task.source))
    console.print(table)


@tasks_app.command("show")
def show(name: str, config: str = CONFIG_OPT) -> None:
    """The resolved task spec as YAML."""
    import yaml

    typer.echo(yaml.safe_dump(_registry(config).get(name).model_dump(mode="json"), sort_keys=False))


@tasks_app.command("render")
def render(name: str, seed: int = typer.Option(42), index: int = typer.Option(0, help="Test item index."),
           k: int = typer.Option(None, help="Demonstrations (default: the task's k)."),
           config: str = CONFIG_OPT) -> None:
    """Print the exact evaluation prompt of one test item for a seed (what the model sees)."""
    from sentidistill.tasks import build_prompt, sample_demos

    reg = _registry(config)
    task = reg.get(name)
    train, test = reg.load_split(name, "train"), reg.load_split(name, "test")
    if not 0 <= index < len(test):
        raise typer.BadParameter(f"--index must be in [0, {len(test) - 1}]")
    demos = sample_demos(task, train, test[: index + 1], seed, k)
    typer.echo(build_prompt(task, demos[index], test[index]))
