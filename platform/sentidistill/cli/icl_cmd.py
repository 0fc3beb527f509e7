"""`sentidistill build-icl CONFIG [OVERRIDES...] [--force]`: ICLDist few-shot data from the teacher."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from sentidistill.cli.app import CONFIG_ARG, OVERRIDES_ARG, app, console, load

FORCE_OPT = typer.Option(False, "--force", help="Rebuild everything; the old results are moved aside, not deleted.")


def summary_table(counts: dict[str, Any], teacher: str, target: str) -> Table:
    """Per task: pool, prompts, kept/filtered and teacher-gold agreement; totals and QC reasons below."""
    table = Table(title=f"icldist: target {target}, teacher {teacher}", header_style="bold")
    for col in ("task", "pool", "test overlap dropped", "prompts", "kept", "filtered", "agreement"):
        table.add_column(col, justify="left" if col == "task" else "right")
    agreement = counts.get("agreement", {})
    for name, c in counts.get("per_task", {}).items():
        agree = agreement.get(name)
        rate = f"{agree['rate']:.0%}" + (f" (tuple F1 {agree['tuple_f1']:.2f})" if "tuple_f1" in agree else "") \
            if agree else "-"
        table.add_row(name, str(c.get("pool", "-")), str(c.get("dropped_test_overlap", "-")), str(c["prompts"]),
                      str(c["kept"]), str(c["filtered"]), rate)
    table.add_section()
    table.add_row("total", "", "", str(counts.get("examples", 0)), str(counts.get("kept", 0)),
                  str(counts.get("filtered", 0)), "")
    reasons = ", ".join(f"{k} {v}" for k, v in counts.get("qc", {}).items() if k != "kept")
    if reasons:
        table.caption = f"filtered: {reasons}; missing {counts.get('missing', 0)}"
    return table


@app.command("build-icl")
def build_icl(config: str = CONFIG_ARG, overrides: list[str] = OVERRIDES_ARG, force: bool = FORCE_OPT) -> None:
    """ICLDist: diversified few-shot prompts from the task train splits, answered by the teacher (resumable)."""
    from sentidistill.runtime import check_shared_storage, init_ray
    from sentidistill.stages import icl as stage

    cfg = load(config, overrides)
    if cfg.icldist.target != "gold":  # gold targets need no engine, hence no Ray
        init_ray(cfg.ray)
        check_shared_storage(cfg.run_dir)
    manifest = stage.run(cfg, force=force)
    console.print(summary_table(manifest.counts, manifest.extra.get("teacher", ""), cfg.icldist.target))
    console.print(f"[green]{manifest.status}[/green] {cfg.run_dir}/icldist")
