"""`sentidistill eval CONFIG [OVERRIDES...] --model M [--model M2 ...]`: SentiBench scores, side by side."""

from __future__ import annotations

import typer
from rich.markup import escape

from sentidistill.cli.app import CONFIG_ARG, OVERRIDES_ARG, app, console, load
from sentidistill.console import stage as show_stage

MODEL_OPT = typer.Option(
    None, "--model", "-m", show_default=False,
    help="Model to score (repeatable): hub id, folder, .gguf, s3:// or gs:// folder, named model, or "
    "label=reference to name its eval/<label> folder. With --endpoint: the served model name. "
    "Default: eval.models.",
)
TASKS_OPT = typer.Option(None, "--tasks", show_default=False, help="Comma-separated task names (eval.tasks).")
LIMIT_OPT = typer.Option(None, "--limit", min=1, show_default=False, help="First N test items per task (eval.limit).")
SEEDS_OPT = typer.Option(None, "--seeds", show_default=False, help="Comma-separated seeds, e.g. 42,52 (eval.seeds).")
ENDPOINT_OPT = typer.Option(
    None, "--endpoint", show_default=False,
    help="Score a served model: OpenAI-compatible base URL (e.g. http://127.0.0.1:8000/v1); "
    "sets eval.engine.kind=openai and openai.base_url, sends the key from serve.api_key_env (or "
    "eval.engine.openai.api_key_env) and caps eval.engine.resources.batch_size at serve.max_texts (the /v1/score "
    "limit).",
)
FORCE_OPT = typer.Option(False, "--force", help="Rescore every (task, seed) part; existing results are overwritten.")
REFERENCE_OPT = typer.Option(
    None, "--reference", show_default=False,
    help="Label of the model the others are paired against (eval.reference; default student-before, else the "
    "first model).",
)


@app.command("eval")
def eval_(config: str = CONFIG_ARG, overrides: list[str] = OVERRIDES_ARG, model: list[str] = MODEL_OPT,
          tasks: str = TASKS_OPT, limit: int = LIMIT_OPT, seeds: str = SEEDS_OPT, endpoint: str = ENDPOINT_OPT,
          force: bool = FORCE_OPT, reference: str = REFERENCE_OPT) -> None:
    """Score models on SentiBench (k=4, seeds 42/52/62, raw prompts) and compare them side by side."""
    from sentidistill.cli.tables import print_comparison, rerun_hint
    from sentidistill.overrides import eval_overrides
    from sentidistill.rundir import RunDir
    from sentidistill.stage_counts import EvalCounts, EvalExtra
    from sentidistill.stages import evaluate

    cfg = load(config, overrides, extra=eval_overrides(tasks=tasks, limit=limit, seeds=seeds, reference=reference,
                                                       endpoint=endpoint, models=model))
    words = ["sentidistill", "eval", config, *(w for m in model or [] for w in ("--model", m))]
    words += [w for flag, v in (("--tasks", tasks), ("--endpoint", endpoint), ("--reference", reference)) if v
              for w in (flag, v)]
    with show_stage("eval"):
        result = evaluate.score(cfg, list(model) if model else None, force=force, endpoint=bool(endpoint),
                                rerun=rerun_hint(words, overrides))
    if result.comparison is not None:
        print_comparison(console, result.comparison)
    for uri in result.written:
        console.print(f"wrote {uri}")
    for m in result.manifest.parts:
        missing, samples = EvalCounts.of(m).missing_parts, EvalExtra.of(m).error_samples
        state = f"[yellow]{missing} parts missing[/yellow]" if missing else f"[green]{m.status}[/green]"
        console.print(f"{state} {RunDir(cfg.run_dir).uri(m.stage)}")
        if missing and samples:
            console.print(f"  e.g. {escape(samples[0])}", highlight=False)
