"""`sentidistill icl CONFIG [OVERRIDES...] [--force]`: ICLDist few-shot data from the teacher (configured by
the `icl` section; `build-icl` is the old, hidden name of the command)."""

from __future__ import annotations

import typer
from rich.table import Table

from sentidistill.cli.app import CONFIG_ARG, OVERRIDES_ARG, app, console, load
from sentidistill.console import stage as show_stage
from sentidistill.rundir import RunDir
from sentidistill.stage_counts import GenerationExtra, ICLDistCounts

FORCE_OPT = typer.Option(False, "--force", help="Rebuild everything; the old results are moved aside, not deleted.")


def summary_table(counts: ICLDistCounts, teacher: str, target: str) -> Table:
    """Per task: pool, prompts, kept/filtered and teacher-gold agreement; totals and QC reasons below."""
    table = Table(title=f"icldist: target {target}, teacher {teacher}", header_style="bold")
    for col in ("task", "pool", "test overlap dropped", "prompts", "kept", "filtered", "agreement"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for name, c in counts.per_task.items():
        agree = counts.agreement[name] if name in counts.agreement else None
        rate = f"{agree.rate:.0%}" + (f" (tuple F1 {agree.tuple_f1:.2f})" if agree.tuple_f1 is not None else "") \
            if agree else "-"
        table.add_row(name, _or_dash(c.pool), _or_dash(c.dropped_test_overlap), str(c.prompts), str(c.kept),
                      str(c.filtered), rate)
    table.add_section()
    table.add_row("total", "", "", str(counts.examples), str(counts.kept), str(counts.filtered), "")
    reasons = ", ".join(f"{k} {v}" for k, v in counts.filtered_by_reason.items())
    if reasons:
        table.caption = f"filtered: {reasons}; missing {counts.missing or 0}"
    return table


def _or_dash(value: int | None) -> str:
    return "-" if value is None else str(value)


@app.command("icl")
@app.command("build-icl", hidden=True)
def build_icl(config: str = CONFIG_ARG, overrides: list[str] = OVERRIDES_ARG, force: bool = FORCE_OPT) -> None:
    """ICLDist: diversified few-shot prompts from the task train splits, answered by the teacher (resumable)."""
    from sentidistill.stages import icl as stage

    cfg = load(config, overrides)
    with show_stage("icl"):
        manifest = stage.run(cfg, force=force)
    extra = GenerationExtra.of(manifest)
    console.print(summary_table(ICLDistCounts.of(manifest), extra.teacher, cfg.icl.target))
    console.print(f"[green]{manifest.status}[/green] {RunDir(cfg.run_dir).uri(manifest.stage)}")
