"""`sentidistill eval CONFIG [OVERRIDES...] --model M [--model M2 ...]`: SentiBench scores, side by side."""

from __future__ import annotations

import json

import typer
from rich.markup import escape

from sentidistill.cli.app import CONFIG_ARG, OVERRIDES_ARG, app, console, load
from sentidistill.errors import ConfigError

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
    "sets eval.engine.kind=openai and base_url, sends the key from serve.api_key_env (or "
    "eval.engine.api_key_env) and caps eval.engine.batch_size at serve.max_texts (the /v1/score limit).",
)
FORCE_OPT = typer.Option(False, "--force", help="Rescore every (task, seed) part; existing results are overwritten.")
REFERENCE_OPT = typer.Option(
    None, "--reference", show_default=False,
    help="Label of the model the others are paired against (eval.reference; default student-before, else the "
    "first model).",
)


def _csv(value: str, flag: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise ConfigError(f"{flag}: give a comma-separated list, e.g. {flag} imdb,sst2")
    return items


@app.command("eval")
def eval_(config: str = CONFIG_ARG, overrides: list[str] = OVERRIDES_ARG, model: list[str] = MODEL_OPT,
          tasks: str = TASKS_OPT, limit: int = LIMIT_OPT, seeds: str = SEEDS_OPT, endpoint: str = ENDPOINT_OPT,
          force: bool = FORCE_OPT, reference: str = REFERENCE_OPT) -> None:
    """Score models on SentiBench (k=4, seeds 42/52/62, raw prompts) and compare them side by side."""
    extra = []  # JSON values are valid YAML: task names like 'no' stay strings
    if tasks:
        extra.append(f"eval.tasks={json.dumps(_csv(tasks, '--tasks'))}")
    if limit:
        extra.append(f"eval.limit={limit}")
    if seeds:
        extra.append(f"eval.seeds=[{','.join(_csv(seeds, '--seeds'))}]")
    if reference:
        extra.append(f"eval.reference={json.dumps(reference)}")
    if endpoint:
        if not model:
            raise ConfigError("--endpoint needs --model <served model name>")
        extra += ["eval.engine.kind=openai", f"eval.engine.base_url={json.dumps(endpoint)}"]
    cfg = load(config, [*(overrides or []), *extra])

    from sentidistill.cli.tables import print_comparison, rerun_hint
    from sentidistill.evaluation import compare
    from sentidistill.report.eval_report import write_eval_report
    from sentidistill.rundir import RunDir
    from sentidistill.runtime import check_shared_storage, init_ray
    from sentidistill.stages import evaluate

    if endpoint:  # our served app: its request cap (serve.max_texts) and its key (serve.api_key_env)
        cfg.eval.engine = evaluate.served_engine(cfg)
    init_ray(cfg.ray)
    check_shared_storage(cfg.run_dir)
    manifests = evaluate.run(cfg, list(model) if model else None, force=force)
    rd = RunDir(cfg.run_dir)
    slugs = [m.stage.split("/", 1)[1] for m in manifests]
    words = ["sentidistill", "eval", config, *(w for m in model or [] for w in ("--model", m))]
    words += [w for flag, v in (("--tasks", tasks), ("--endpoint", endpoint), ("--reference", reference)) if v
              for w in (flag, v)]
    comp = compare.build(rd, slugs, cfg.eval.reference, rerun_hint(words, overrides))
    print_comparison(console, comp)
    for rel in write_eval_report(rd, comp):
        console.print(f"wrote {rd.uri(rel)}")
    for m in manifests:
        missing = m.counts.get("missing_parts", 0)
        state = f"[yellow]{missing} parts missing[/yellow]" if missing else f"[green]{m.status}[/green]"
        console.print(f"{state} {rd.uri(m.stage)}")
        if missing and m.extra.get("error_samples"):
            console.print(f"  e.g. {escape(m.extra['error_samples'][0])}", highlight=False)
