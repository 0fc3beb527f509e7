"""`sentidistill submit CONFIG --stage S --address http://HEAD:8265`: run a stage as a Ray job."""

from __future__ import annotations

import os
import sys

import typer

from sentidistill.cli.app import CONFIG_ARG, app, console, setup_logging

ARGS_ARG = typer.Argument(
    None, show_default=False,
    help="Overrides (train.optimizer.lr=1e-4) and stage options, passed on to the stage command; "
    "put stage options after `--` (e.g. -- --model runs/x/model).",
)


@app.command("submit")
def submit_cmd(
    config: str = CONFIG_ARG,
    args: list[str] = ARGS_ARG,
    stage: str = typer.Option(..., "--stage", "-s", help="validate, generate, icl, train, eval, serve or run."),
    address: str = typer.Option(
        ..., "--address", envvar=["RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"],
        help="Cluster dashboard URL (http://HEAD:8265) or Ray address; default $RAY_API_SERVER_ADDRESS / $RAY_ADDRESS.",
    ),
    follow: bool = typer.Option(False, "--follow", "-f", help="Stream the job's logs until it ends."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Print the job id and return at once."),
    working_dir: str = typer.Option(".", "--working-dir", help="Folder uploaded as the job's cwd (the repo root)."),
    runtime_env: str = typer.Option("jobs/runtime_env.yaml", "--runtime-env", help="Job runtime_env YAML."),
    command: str = typer.Option(
        "sentidistill", "--command", help="How the cluster runs this CLI, e.g. 'python -m sentidistill'."
    ),
    submission_id: str | None = typer.Option(None, "--submission-id", help="Job id to use (default: generated)."),
) -> None:
    """Submit a stage to a Ray cluster; exits 0 when the job succeeds, 1 when it fails or is stopped."""
    from ray.dashboard.utils import get_address_for_submission_client

    from sentidistill.cluster import submit as sub

    setup_logging()
    # Ray's clients prefer $RAY_API_SERVER_ADDRESS over the address they are given: point it at --address
    os.environ["RAY_API_SERVER_ADDRESS"] = address
    url = get_address_for_submission_client(address)
    os.environ["RAY_API_SERVER_ADDRESS"] = url
    spec, cfg = sub.build_job(
        config, stage, args or [], working_dir=working_dir, runtime_env=sub.load_runtime_env(runtime_env),
        command=command, local_cluster=sub.is_loopback(url), submission_id=submission_id,
    )
    sub.client(url)  # fails clearly when the address is wrong, before the state API is asked
    sub.check_cluster_storage(cfg, stage, sub.alive_node_resources(url), spec.runtime_env.get("env_vars", {}))
    job_id = sub.submit(url, spec)
    console.print(f"submitted [bold]{job_id}[/bold]: {spec.entrypoint}\n"
                  f"  dashboard: {url}/#/jobs/{job_id}   logs: ray job logs --address {url} -f {job_id}")
    typer.echo(job_id)
    if no_wait:
        return
    try:
        status = sub.wait(url, job_id, follow=follow, write=lambda s: (sys.stdout.write(s), sys.stdout.flush()))
    except KeyboardInterrupt:
        console.print(f"stopped waiting; the job keeps running (ray job stop --address {url} {job_id})")
        raise typer.Exit(130) from None
    detail = sub.job_message(url, job_id) if status != "SUCCEEDED" else ""
    style = "green" if status == "SUCCEEDED" else "red"
    console.print(f"job {job_id}: [{style}]{status}[/{style}] {detail}".rstrip(), highlight=False)
    raise typer.Exit(sub.exit_code(status))
