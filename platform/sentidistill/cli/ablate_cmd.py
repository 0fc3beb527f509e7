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
    variant: list[str] = typer.Option(None, "--variant", help="Compare only this variant (repeatable): knowdist, "
                                      "icldist, knowdist-icldist or gold; student-before is always scored. "
                                      "Default: all four."),
) -> None:
    """Train and score the paper's variants from one config (shared data made once); rerun to resume."""
    from sentidistill.cli.tables import print_comparison, print_step, rerun_hint
    from sentidistill.rundir import RunDir
    from sentidistill.stages import ablate as stage

    cfg = load(config, overrides, limit=limit)
    result = stage.run(cfg, force=force or [], variants=variant or None, on_step=lambda r: print_step(console, r),
                       rerun=rerun_hint(["sentidistill", "ablate", config], overrides))
    if result.comparison is not None:
        print_comparison(console, result.comparison, title="Ablation: SentiBench x100")
    console.print(f"summary: {RunDir(cfg.run_dir).uri(stage.SUMMARY_MD)}")
