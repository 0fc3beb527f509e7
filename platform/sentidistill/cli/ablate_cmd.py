"""`sentidistill ablate CONFIG`: KnowDist only, ICLDist only, both, and gold-label fine-tuning, side by side."""

from __future__ import annotations

import typer

from sentidistill.cli.app import CONFIG_ARG, OVERRIDES_ARG, app, console, load


@app.command("ablate")
def ablate(
    config: str = CONFIG_ARG,
    overrides: list[str] = OVERRIDES_ARG,
    force: list[str] = typer.Option(None, "--force", help="Redo this step even if complete (repeatable): a pipeline "
                                    "step, icldist, gold or eval."),
    limit: int = typer.Option(None, "--limit", help="Quick run: at most N texts per corpus source, ICL examples "
                              "per task and eval items per task."),
) -> None:
    """Train and score the paper's variants from one config (shared data made once); rerun to resume."""
    from sentidistill.cli.tables import print_comparison, rerun_hint
    from sentidistill.config import with_limit
    from sentidistill.evaluation import compare
    from sentidistill.rundir import RunDir
    from sentidistill.stages import ablate as stage
    from sentidistill.stages.pipeline import StepResult

    cfg = load(config, overrides)
    if limit is not None:
        cfg = with_limit(cfg, limit)

    def on_step(r: StepResult) -> None:
        colour = {"ran": "green", "skipped": "cyan", "failed": "red"}.get(r.status, "yellow")
        console.print(f"[{colour}]{r.status:>8}[/{colour}] {r.step} ({r.seconds:.1f}s)")

    result = stage.run(cfg, force=force or [], on_step=on_step)
    rd = RunDir(cfg.run_dir)
    comp = compare.build(rd, list(result.models), stage.REFERENCE, rerun_hint(["sentidistill", "ablate", config],
                                                                                  overrides))
    print_comparison(console, comp, title="Ablation: SentiBench x100")
    console.print(f"summary: {rd.uri(stage.SUMMARY_MD)}")
