"""`sentidistill train CONFIG [OVERRIDES...] --stage knowdist|icldist|all [--force]`."""

from __future__ import annotations

import typer
from rich.table import Table

from sentidistill.cli.app import CONFIG_ARG, OVERRIDES_ARG, app, console, load
from sentidistill.console import stage as show_stage
from sentidistill.config import PipelineConfig
from sentidistill.layout import RunLayout
from sentidistill.rundir import Manifest
from sentidistill.stage_counts import TrainCounts, TrainExtra

STAGE_OPT = typer.Option("all", "--stage", help="knowdist, icldist, or all (both, in order).")
FORCE_OPT = typer.Option(False, "--force", help="Retrain from scratch even if the stage is complete or resumable.")


def summary_table(manifests: list[Manifest]) -> Table:
    """One column per trained stage: data, packing, steps, final metrics, where the model is."""
    table = Table(title="train", header_style="bold")
    table.add_column("")
    for m in manifests:
        table.add_column(m.stage, justify="right")
    counts = [TrainCounts.of(m) for m in manifests]
    extras = [TrainExtra.of(m) for m in manifests]
    final = [e.final_metrics for e in extras]
    rows = [
        ("examples (kept / replay)", [f"{c.train_examples} / {c.replay_examples}" for c in counts]),
        ("truncated / dropped (too long)", [f"{c.truncated_examples} / {c.dropped_too_long}" for c in counts]),
        ("rows, packing efficiency", [f"{c.rows}, {c.packing_efficiency}" for c in counts]),
        ("steps", [f"{c.steps} / {c.total_steps}" for c in counts]),
        ("resumed from step", [str(e.resumed_from_step) for e in extras]),
        ("final loss", ["" if f.loss is None else str(f.loss) for f in final]),
        ("tokens / s", ["" if f.tokens_per_s is None else str(f.tokens_per_s) for f in final]),
        ("status", [m.status for m in manifests]),
    ]
    for label, values in rows:
        table.add_row(label, *values)
    return table


def result_model(cfg: PipelineConfig, m: Manifest) -> str:
    """Where a trained stage's model is (the user's next command needs it)."""
    return RunLayout(cfg.run_dir).uri(RunLayout.model(m.stage.removeprefix("train/")))


@app.command("train")
def train(config: str = CONFIG_ARG, overrides: list[str] = OVERRIDES_ARG, stage: str = STAGE_OPT,
          force: bool = FORCE_OPT) -> None:
    """Fine-tune the student on Ray Train + DeepSpeed: KnowDist, then ICLDist (resumable)."""
    from sentidistill.stages import train as train_stage

    cfg = load(config, overrides)
    with show_stage("train"):  # steps, loss and tokens/s on the stage line (console.train_step)
        result = train_stage.run(cfg, stage, force=force)  # type: ignore[arg-type]
    manifests = result.parts or [result]
    console.print(summary_table(manifests))
    for m in manifests:
        console.print(f"[green]{m.status}[/green] {result_model(cfg, m)}")
