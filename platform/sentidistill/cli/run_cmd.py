"""`sentidistill run CONFIG` (the whole pipeline) and `sentidistill status RUN_DIR`."""

from __future__ import annotations

import typer
from rich.table import Table

from sentidistill.cli.app import CONFIG_ARG, OVERRIDES_ARG, app, console, load, setup_logging

STEP_HELP = "generate, icl, train-knowdist, train-icldist, eval, report"


@app.command("run")
def run(
    config: str = CONFIG_ARG,
    overrides: list[str] = OVERRIDES_ARG,
    start: str = typer.Option(None, "--from", help=f"First step to run ({STEP_HELP})."),
    until: str = typer.Option(None, "--until", help="Last step to run."),
    force: list[str] = typer.Option(None, "--force", help="Redo this step even if complete (repeatable)."),
    serve_after: bool = typer.Option(False, "--serve", help="Serve the final student when the run ends."),
    limit: int = typer.Option(None, "--limit", help="Quick run: at most N texts per corpus source, ICL examples "
                              "per task and eval items per task."),
) -> None:
    """Run generate -> icl -> train -> eval -> report; finished steps are skipped, so rerun to resume."""
    from sentidistill.cli.tables import print_comparison, print_step, rerun_hint
    from sentidistill.layout import RunLayout
    from sentidistill.stages import pipeline

    cfg = load(config, overrides, limit=limit)
    table = Table(title="SentiDistill run", show_lines=False)
    for col in ("step", "status", "seconds", "artifacts"):
        table.add_column(col)

    def on_step(r: pipeline.StepResult) -> None:
        print_step(console, r)
        table.add_row(r.step, r.status, f"{r.seconds:.1f}", "\n".join(r.artifacts) or r.note)

    try:
        result = pipeline.run(cfg, start=start, until=until, force=force or [], on_step=on_step,
                              rerun=rerun_hint(["sentidistill", "run", config], overrides))
    finally:
        if table.row_count:
            console.print(table)
    if result.comparison is not None:
        print_comparison(console, result.comparison)
    layout = RunLayout(cfg.run_dir)
    if layout.rd.exists(RunLayout.REPORT_HTML):
        console.print(f"report: {layout.uri(RunLayout.REPORT_HTML)}")
    if serve_after:
        from sentidistill.cli.serve_cmd import serve_blocking

        serve_blocking(cfg, layout.final_student(cfg))


@app.command("status")
def status(run_dir: str = typer.Argument(..., help="Run directory (local path, s3:// or gs:// URI).")) -> None:
    """Show each stage of a run: complete, failed, or running/interrupted, with counts and timings."""
    from sentidistill.layout import RunLayout

    setup_logging()
    states = RunLayout(run_dir).stage_states()
    if not states:
        console.print(f"no stage has started in {run_dir}")
        raise typer.Exit(1)
    table = Table(title=f"run {run_dir}")
    for col in ("stage", "status", "seconds", "finished", "counts"):
        table.add_column(col)
    for folder, m in states:
        colour = {"complete": "green", "failed": "red"}.get(m.status, "yellow")
        label = "running or interrupted" if m.status == "running" else m.status
        counts = ", ".join(f"{k}={v}" for k, v in m.counts.items() if not isinstance(v, (dict, list)))[:120]
        table.add_row(folder, f"[{colour}]{label}[/{colour}]", "" if m.seconds is None else str(m.seconds),
                      m.finished_at or "", counts)
    console.print(table)
