"""`sentidistill generate CONFIG [OVERRIDES...] [--force]`: KnowDist data from the teacher."""

from __future__ import annotations

import typer
from rich.table import Table

from sentidistill.cli.app import CONFIG_ARG, OVERRIDES_ARG, app, console, load
from sentidistill.console import stage as show_stage
from sentidistill.rundir import RunDir
from sentidistill.stage_counts import GenerationExtra, KnowDistCounts

FORCE_OPT = typer.Option(False, "--force", help="Regenerate everything; the old results are moved aside, not deleted.")


def summary_table(counts: KnowDistCounts, teacher: str) -> Table:
    """The end-of-run summary: rows in, rejected, generated, kept/filtered per reason, tokens/s."""
    corpus = counts.corpus
    table = Table(title=f"knowdist: teacher {teacher}", show_header=True, header_style="bold")
    table.add_column("")
    table.add_column("count", justify="right")
    rejected = ", ".join(f"{k} {v}" for k, v in corpus.rejected_by_reason.items())
    rows: list[tuple[str, object]] = [
        ("corpus rows read", corpus.read),
        ("rejected" + (f" ({rejected})" if rejected else ""), corpus.rejected),
        ("duplicates removed", corpus.duplicates),
        ("texts", counts.texts),
        ("(text, perspective) pairs", counts.pairs),
        ("generated this run", counts.generated_this_run),
        ("kept", counts.kept),
    ]
    rows += [(f"filtered: {k}", v) for k, v in counts.filtered_by_reason.items()]
    rows += [("engine errors (retried next run)", counts.errors),
             ("missing pairs", counts.missing or 0),
             ("completion tokens / s", counts.completion_tokens_per_s)]
    for label, value in rows:
        table.add_row(label, str(value))
    return table


@app.command("generate")
def generate(config: str = CONFIG_ARG, overrides: list[str] = OVERRIDES_ARG, force: bool = FORCE_OPT) -> None:
    """KnowDist: the teacher answers every corpus text from several perspectives (resumable)."""
    from sentidistill.stages import generate as stage

    cfg = load(config, overrides)
    with show_stage("generate"):
        manifest = stage.run(cfg, force=force)
    console.print(summary_table(KnowDistCounts.of(manifest), GenerationExtra.of(manifest).teacher))
    console.print(f"[green]{manifest.status}[/green] {RunDir(cfg.run_dir).uri(manifest.stage)}")
