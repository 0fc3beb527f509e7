"""`sentidistill serve CONFIG [OVERRIDES...] [--model M] [--detach]`: host a student on Ray Serve."""

from __future__ import annotations

import signal
import time
from typing import Any

import typer

from sentidistill.cli.app import CONFIG_ARG, OVERRIDES_ARG, app, console, load
from sentidistill.config import PipelineConfig
from sentidistill.errors import SentiDistillError

MODEL_OPT = typer.Option(None, "--model", "-m", help="Model to serve (folder, s3:// or gs:// URI, hub id, named "
                         "model); default serve.model, else the run's final student.")
BLOCKING_OPT = typer.Option(True, "--blocking/--detach", help="Serve until Ctrl-C (then shut down), or leave "
                            "the app running in the cluster (needs ray.address or RAY_ADDRESS).")


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def _print_endpoint(endpoint: Any, cfg: PipelineConfig) -> None:
    console.print(f"[green]serving[/green] {endpoint.model_ref} as [bold]{endpoint.served_name}[/bold]")
    console.print(f"  API      {endpoint.url}  (OpenAI base_url {endpoint.base_url})")
    console.print(f"  docs     {endpoint.docs_url}")
    console.print(f"  health   {endpoint.url}/healthz    metrics {endpoint.url}/metrics")
    if cfg.serve.api_key_env:
        console.print(f"  auth     Authorization: Bearer ${cfg.serve.api_key_env}")


def serve_blocking(cfg: PipelineConfig, model: str | None = None) -> None:
    """Serve in the foreground until Ctrl-C or SIGTERM, then delete the app (and Serve, if nothing else runs)."""
    from sentidistill.serving import launch

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        endpoint = launch.start(cfg, model)
        _print_endpoint(endpoint, cfg)
        console.print("Ctrl-C stops serving.")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.print("stopping...")
    finally:  # also after an interrupted start: a joined cluster must not keep a half-deployed app
        launch.stop(cfg.serve.app_name)


@app.command("serve")
def serve(config: str = CONFIG_ARG, overrides: list[str] = OVERRIDES_ARG, model: str = MODEL_OPT,
          blocking: bool = BLOCKING_OPT) -> None:
    """Host a trained student: sentiment/extract routes, OpenAI-compatible completions, /v1/score for eval."""
    cfg = load(config, overrides)
    try:  # the model is checked before Ray starts (launch.start): a bad one fails in seconds
        if blocking:
            serve_blocking(cfg, model)
            return
        from sentidistill.serving import launch

        endpoint = launch.start(cfg, model, detach=True)
    except SentiDistillError as e:  # one unwrapped line, so the cause is the last line of the output
        console.print(f"[bold red]error:[/bold red] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    _print_endpoint(endpoint, cfg)
    console.print(f"left running in the cluster; stop it with `serve shutdown` or `serve delete {endpoint.app_name}`")
