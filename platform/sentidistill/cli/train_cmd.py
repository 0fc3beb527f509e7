"""`sentidistill train CONFIG [OVERRIDES...] --stage knowdist|icldist|all [--force]`."""

from __future__ import annotations

from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sentidistill.cli.app import CONFIG_ARG, OVERRIDES_ARG, app, console, load

STAGE_OPT = typer.Option("all", "--stage", help="knowdist, icldist, or all (both, in order).")
FORCE_OPT = typer.Option(False, "--force", help="Retrain from scratch even if the stage is complete or resumable.")


def summary_table(manifests: list[Any]) -> Table:
    """One column per trained stage: data, packing, steps, final metrics, where the model is."""
    table = Table(title="train", header_style="bold")
    table.add_column("")
    for m in manifests:
        table.add_column(m.stage, justify="right")
    final = [m.extra.get("final_metrics", {}) for m in manifests]
    rows = [
        ("examples (kept / replay)", [f"{m.counts.get('train_examples')} / {m.counts.get('replay_examples')}"
                                      for m in manifests]),
        ("truncated / dropped (too long)", [f"{m.counts.get('truncated_examples')} / "
                                            f"{m.counts.get('dropped_too_long')}" for m in manifests]),
        ("rows, packing efficiency", [f"{m.counts.get('rows')}, {m.counts.get('packing_efficiency')}"
                                      for m in manifests]),
        ("steps", [f"{m.counts.get('steps')} / {m.counts.get('total_steps')}" for m in manifests]),
        ("resumed from step", [str(m.extra.get("resumed_from_step", 0)) for m in manifests]),
        ("final loss", [str(f.get("loss", "")) for f in final]),
        ("tokens / s", [str(f.get("tokens_per_s", "")) for f in final]),
        ("status", [m.status for m in manifests]),
    ]
    for label, values in rows:
        table.add_row(label, *values)
    return table


@app.command("train")
def train(config: str = CONFIG_ARG, overrides: list[str] = OVERRIDES_ARG, stage: str = STAGE_OPT,
          force: bool = FORCE_OPT) -> None:
    """Fine-tune the student on Ray Train + DeepSpeed: KnowDist, then ICLDist (resumable)."""
    from sentidistill.stages import train as train_stage

    cfg = load(config, overrides)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        tasks: dict[str, Any] = {}

        def on_metrics(row: dict[str, Any]) -> None:
            name = row["stage"]
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=row["total_steps"])
            progress.update(tasks[name], completed=row["step"],
                            description=f"{name} loss {row['loss']:.4f} lr {row['lr']:.2e} "
                                        f"{row['tokens_per_s']:.0f} tok/s")

        result = train_stage.run(cfg, stage, force=force, on_metrics=on_metrics)  # type: ignore[arg-type]
    manifests = result if isinstance(result, list) else [result]
    console.print(summary_table(manifests))
    for m in manifests:
        console.print(f"[green]{m.status}[/green] {cfg.run_dir}/{m.stage}/model")
