"""`sentidistill generate CONFIG [OVERRIDES...] [--force]`: KnowDist data from the teacher."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from sentidistill.cli.app import CONFIG_ARG, OVERRIDES_ARG, app, console, load

FORCE_OPT = typer.Option(False, "--force", help="Regenerate everything; the old results are moved aside, not deleted.")


def summary_table(counts: dict[str, Any], teacher: str) -> Table:
    """The end-of-run summary: rows in, rejected, generated, kept/filtered per reason, tokens/s."""
    corpus = counts.get("corpus", {})
    table = Table(title=f"knowdist: teacher {teacher}", show_header=True, header_style="bold")
    table.add_column("")
    table.add_column("count", justify="right")
    rejected = ", ".join(f"{k} {v}" for k, v in corpus.get("rejected_by_reason", {}).items())
    rows = [
        ("corpus rows read", corpus.get("read", 0)),
        ("rejected" + (f" ({rejected})" if rejected else ""), corpus.get("rejected", 0)),
        ("duplicates removed", corpus.get("duplicates", 0)),
        ("texts", counts.get("texts", 0)),
        ("(text, perspective) pairs", counts.get("pairs", 0)),
        ("generated this run", counts.get("generated_this_run", 0)),
        ("kept", counts.get("kept", 0)),
    ]
    rows += [(f"filtered: {k}", v) for k, v in counts.get("qc", {}).items() if k != "kept"]
    rows += [("engine errors (retried next run)", counts.get("errors", 0)),
             ("missing pairs", counts.get("missing", 0)),
             ("completion tokens / s", counts.get("completion_tokens_per_s", 0.0))]
    for label, value in rows:
        table.add_row(label, str(value))
    return table


@app.command("generate")
def generate(config: str = CONFIG_ARG, overrides: list[str] = OVERRIDES_ARG, force: bool = FORCE_OPT) -> None:
    """KnowDist: the teacher answers every corpus text from several perspectives (resumable)."""
    from sentidistill.runtime import check_shared_storage, init_ray
    from sentidistill.stages import generate as stage

    cfg = load(config, overrides)
    init_ray(cfg.ray)
    check_shared_storage(cfg.run_dir)
    manifest = stage.run(cfg, force=force)
    console.print(summary_table(manifest.counts, manifest.extra.get("teacher", cfg.teacher.display_name)))
    console.print(f"[green]{manifest.status}[/green] {cfg.run_dir}/knowdist")
