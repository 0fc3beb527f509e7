"""`sentidistill score --task TASK PREDICTIONS.jsonl [--scoring reference|tolerant] [--seed N]`:
score any system's raw outputs on a SentiBench (or user) task and print the metric JSON."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from sentidistill.cli.app import app, setup_logging


@app.command("score")
def score(
    predictions: Path = typer.Argument(..., help="JSONL: {\"idx\": <test row>, \"output\": \"<raw text>\"} per line "
                                       "(classification: \"label\" or \"output\").", show_default=False),
    task: str = typer.Option(..., "--task", help="Task name (sentidistill tasks list).", show_default=False),
    scoring: str = typer.Option(None, "--scoring", help="reference | tolerant; default: the task's own mode "
                                "(reference for SentiBench). The other mode is printed too ('<mode>/<metric>')."),
    seed: int = typer.Option(None, "--seed", help="Rebuild the prompts with this seed's demonstrations and read "
                             "reference answers from prompt + output, as upstream does."),
    config: str = typer.Option(None, "--config", help="Pipeline config (its data_dir and tasks.extra_files)."),
) -> None:
    """Score predictions made by anything (another toolkit, an API model) exactly as `eval` scores its own."""
    from sentidistill.config import load_config
    from sentidistill.errors import ConfigError
    from sentidistill.evaluation.score_file import score_file
    from sentidistill.tasks import load_registry
    from sentidistill.tasks.reference import SCORINGS, scoring_mode

    setup_logging()
    if scoring is not None and scoring not in SCORINGS:
        raise ConfigError(f"--scoring: {scoring!r} is not one of {list(SCORINGS)}")
    reg = load_registry(load_config(config) if config else None)
    spec = reg.get(task, field="--task")
    try:
        mode = scoring_mode(spec, scoring)
    except ValueError as e:
        raise ConfigError(f"--scoring: {e}") from None
    train = reg.load_split(task, "train") if seed is not None and spec.kind == "extract" else []
    result = score_file(spec, train, reg.load_split(task, "test"), predictions, mode, seed)
    typer.echo(json.dumps(result, indent=2))
