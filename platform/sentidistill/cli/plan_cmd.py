"""`sentidistill plan CONFIG`: tokens, GPU-hours and storage before anything runs."""

from __future__ import annotations

import typer
from rich.table import Table

from sentidistill.cli.app import CONFIG_ARG, OVERRIDES_ARG, app, console, load


def _n(x: float | None, unit: str = "") -> str:
    if x is None:
        return "n/a"
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.2f} {suffix}{unit}".rstrip()
    return f"{x:.3g} {unit}".rstrip()


def _h(hours: float | None) -> str:
    return "n/a" if hours is None else f"{hours:,.2f}"


@app.command("plan")
def plan(
    config: str = CONFIG_ARG,
    overrides: list[str] = OVERRIDES_ARG,
    gen_tps: float = typer.Option(500.0, "--gen-tokens-per-s-per-gpu", help="Teacher output tokens/s per GPU."),
    prefill_tps: float = typer.Option(
        5000.0, "--prefill-tokens-per-s-per-gpu", help="Teacher prompt tokens/s per GPU."),
    train_tps: float = typer.Option(20000.0, "--train-tokens-per-s-per-gpu", help="Training tokens/s per GPU."),
    corpus_texts: int | None = typer.Option(None, "--corpus-texts", help="Skip reading the corpus: its text count."),
    avg_chars: float | None = typer.Option(None, "--avg-chars", help="With --corpus-texts: average text length."),
    student_params: float | None = typer.Option(None, "--student-params", help="Student parameter count, e.g. 1.2e9."),
    cluster: str | None = typer.Option(
        None, "--cluster", help="Also check the config's resource requests against this cluster file's node types "
        "(launcher YAML or KubeRay manifest)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the estimate as JSON instead of tables."),
) -> None:
    """Estimate tokens to generate, GPU-hours (generation, training) and storage for CONFIG."""
    from sentidistill.cluster.plan import Throughputs, estimate
    from sentidistill.errors import ConfigError

    cfg = load(config, overrides)
    if (corpus_texts is None) != (avg_chars is None):
        raise ConfigError("--corpus-texts and --avg-chars go together (or leave both out to read the corpus)")
    rates = Throughputs(gen_tokens_per_s_per_gpu=gen_tps, prefill_tokens_per_s_per_gpu=prefill_tps,
                        train_tokens_per_s_per_gpu=train_tps)
    est = estimate(cfg, rates, corpus_texts=corpus_texts, avg_text_chars=avg_chars, student_param_count=student_params)
    if cluster:
        from sentidistill.cluster.resources import hosted_stages, node_types_from_file, placement_problems, requirements

        from pathlib import Path

        import yaml

        from sentidistill.cluster.images import image_problems

        nodes = node_types_from_file(cluster)
        reqs = [r for stage in hosted_stages(cluster) for r in requirements(cfg, stage)]
        problems = placement_problems(reqs, nodes) + image_problems(yaml.safe_load(Path(cluster).read_text()))
        if problems:
            raise ConfigError(f"{config} does not fit {cluster}:\n  " + "\n  ".join(problems))
        console.print(f"[green]fits[/green] {cluster}: " + "; ".join(r.describe() for r in reqs))
    if as_json:
        typer.echo(est.model_dump_json(indent=2))
        return
    gen = Table(title=f"generation: teacher {cfg.teacher.display_name} ({est.corpus_texts} texts, "
                      f"avg {est.avg_text_chars:.0f} chars; {len(est.icl_tasks)} ICL tasks)", header_style="bold")
    for col in ("stage", "requests", "prompt tokens", "completion tokens"):
        gen.add_column(col, justify="left" if col == "stage" else "right")
    for name, st in (("knowdist", est.knowdist), ("icldist", est.icldist)):
        gen.add_row(name, f"{st.requests:,}", _n(st.prompt_tokens), _n(st.completion_tokens))
    cost = Table(title="GPU time", header_style="bold")
    for col in ("work", "tokens", "GPU-hours", "wall hours (config's GPUs)"):
        cost.add_column(col, justify="left" if col == "work" else "right")
    gen_tokens = sum(s.prompt_tokens + s.completion_tokens for s in (est.knowdist, est.icldist))
    cost.add_row("teacher generation", _n(gen_tokens), _h(est.gen_gpu_hours), _h(est.gen_wall_hours))
    cost.add_row("student training", _n(sum(est.train_tokens.values())), _h(est.train_gpu_hours),
                 _h(est.train_wall_hours))
    store = Table(title="storage (run_dir, uncompressed upper bounds)", header_style="bold")
    store.add_column("item")
    store.add_column("size", justify="right")
    for item, size in est.storage_bytes.items():
        store.add_row(item, _n(size, "B"))
    if est.teacher_disk_bytes_per_node:
        store.add_row("teacher weights (local disk, per teacher node)", _n(est.teacher_disk_bytes_per_node, "B"))
    for t in (gen, cost, store):
        console.print(t)
    r = est.throughputs
    console.print(f"rates: {r.gen_tokens_per_s_per_gpu:g} output / {r.prefill_tokens_per_s_per_gpu:g} prompt tokens/s "
                  f"per teacher GPU, {r.train_tokens_per_s_per_gpu:g} training tokens/s per GPU, "
                  f"{r.chars_per_token:g} chars/token; student {_n(est.student_params)} params"
                  + ("" if est.student_params else " (unknown: pass --student-params for model storage)"))
