"""The console a person reads: Ray, Ray Data, Train, DeepSpeed and worker output go to <run_dir>/logs/,
the terminal keeps our lines; -v shows everything; secrets never reach the log."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sentidistill.cli import verbose_first
from sentidistill.console import clean, secret_values

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "sentidistill"]
# What Ray Data prints while a dataset runs on a non-interactive terminal, and what Ray prints at start-up.
RAY_DATA_DUMP = ("logging_progress.py", "Running Dataset", "Total Progress")
RAY_START = "Started a local Ray instance"


def test_clean_masks_secrets_and_colour_codes() -> None:
    secrets = secret_values({"HF_TOKEN": "hf_abcdefgh123", "MY_API_KEY": "sk-0123456789", "PATH": "/usr/bin",
                             "SHORT_TOKEN": "abc"})
    assert secrets == [b"hf_abcdefgh123", b"sk-0123456789"]  # PATH is no secret; 3 characters mask nothing useful
    line = b"\x1b[36m(RayTrainWorker pid=7)\x1b[0m auth hf_abcdefgh123 key=sk-0123456789\n"
    assert clean(line, secrets) == b"(RayTrainWorker pid=7) auth *** key=***\n"


def test_verbose_flag_anywhere_before_double_dash() -> None:
    assert verbose_first(["run", "c.yaml", "-v", "eval.limit=2"]) == ["-v", "run", "c.yaml", "eval.limit=2"]
    assert verbose_first(["submit", "c.yaml", "--", "-v"]) == ["submit", "c.yaml", "--", "-v"]


def test_capture_sends_fd_output_to_the_log_masked(tmp_path: Path) -> None:
    """Below Python (os.write on fd 1/2), a logger bound to stderr at import, and print(): all in the log file,
    none on the terminal, the secret masked; our console line stays on the terminal."""
    script = textwrap.dedent(f"""
        import logging, os, sys
        bound = logging.getLogger("lib"); bound.addHandler(logging.StreamHandler(sys.stderr)); bound.propagate = False
        from sentidistill import console
        s = console.start({str(tmp_path / "run")!r}, "demo")
        os.write(1, b"raw fd1 " + os.environ["DEMO_TOKEN"].encode() + b"\\n")
        os.write(2, b"raw fd2\\n")
        print("printed")
        bound.warning("library warning")
        logging.getLogger("sentidistill").info("our line")
        console.console.print("table row")
        console.stop()
        print("after stop")
    """)
    env = {**os.environ, "DEMO_TOKEN": "tok-secret-987654"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    logs = list((tmp_path / "run" / "logs").glob("demo-*.log"))
    assert len(logs) == 1, logs
    text = logs[0].read_text()
    for want in ("raw fd1 ***", "raw fd2", "printed", "library warning", "sentidistill: our line"):
        assert want in text, (want, text)
    assert "tok-secret-987654" not in text
    terminal = out.stdout + out.stderr
    assert f"logs: {logs[0]}" in terminal
    assert "our line" in terminal and "table row" in terminal and "after stop" in terminal
    for hidden in ("raw fd", "printed", "library warning", "tok-secret"):
        assert hidden not in terminal, (hidden, terminal)


def _eval_cli(tiny_config, tiny_model: Path, shared_data: Path, *flags: str) -> tuple[subprocess.CompletedProcess,
                                                                                        Path]:
    cfg = tiny_config.write(ray={"num_cpus": 2, "include_dashboard": False})
    env = {**os.environ, "SENTIDISTILL_DATA": str(shared_data), "SENTIDISTILL_PROGRESS_EVERY": "2"}
    env.pop("RAY_ADDRESS", None)
    cmd = [*CLI, "eval", str(cfg), "--model", f"tiny={tiny_model}", "--tasks", "sst2", "--limit", "1",
           "--seeds", "42", *flags]
    # stdout/stderr are pipes: the non-interactive case (CI, `ray job submit`, `| tee`)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=400)
    return out, tiny_config.root / "run"


@pytest.mark.ray
def test_eval_console_is_short_and_ray_output_is_in_the_log(tiny_config, tiny_model: Path,
                                                            shared_data: Path) -> None:
    out, run_dir = _eval_cli(tiny_config, tiny_model, shared_data)
    terminal = out.stdout + out.stderr
    assert out.returncode == 0, terminal
    logs = list((run_dir / "logs").glob("eval-*.log"))
    assert len(logs) == 1, (logs, terminal)
    assert f"logs: {logs[0]}" in terminal
    for noise in (*RAY_DATA_DUMP, RAY_START, "MapWorker(", "pid="):
        assert noise not in terminal, (noise, terminal)
    assert "SentiBench" in terminal and "eval/tiny" in terminal  # the final table and where the scores are
    text = logs[0].read_text()
    assert RAY_START in text
    assert "MapWorker(MapBatches(EvalUDF)) pid=" in text  # a Ray worker's own output, forwarded to the driver
    assert "sentidistill: Ray: connected" in text
    assert len(terminal.splitlines()) < 60, terminal


@pytest.mark.ray
@pytest.mark.slow
def test_verbose_shows_everything(tiny_config, tiny_model: Path, shared_data: Path) -> None:
    out, run_dir = _eval_cli(tiny_config, tiny_model, shared_data, "-v")
    terminal = out.stdout + out.stderr
    assert out.returncode == 0, terminal
    assert RAY_START in terminal and "MapWorker(MapBatches(EvalUDF)) pid=" in terminal
    assert "logs:" not in terminal and not (run_dir / "logs").exists()


def test_stage_line_on_a_non_interactive_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a terminal: a plain line at start and then every SENTIDISTILL_PROGRESS_EVERY seconds, never a redraw."""
    import io
    import time

    from sentidistill import console

    out = io.StringIO()
    monkeypatch.setenv("SENTIDISTILL_PROGRESS_EVERY", "0.2")
    console.console.file = out
    try:
        with console.stage("train-knowdist"):
            console.train_step({"stage": "knowdist", "step": 3, "total_steps": 10, "loss": 1.23456,
                                "tokens_per_s": 99.4})
            time.sleep(0.5)
    finally:
        console.console.file = None  # back to whatever sys.stderr is
    lines = out.getvalue().splitlines()
    assert lines[0] == "train-knowdist: started"
    assert "train-knowdist: running 0:00 3/10 knowdist loss 1.2346 99 tok/s" in lines[1:], lines
    assert "\r" not in out.getvalue() and "\x1b[" not in out.getvalue()
    console.update(5, 10)  # outside a stage: nothing to update, no error


def test_a_failing_command_says_where_the_traceback_is(tiny_config, tmp_path: Path) -> None:
    """The user-facing error stays on the terminal; the traceback goes to the log, whose path is repeated."""
    cfg = tiny_config.write()
    out = subprocess.run([*CLI, "eval", str(cfg), "--model", f"bad={tmp_path / 'no-such-model'}", "--tasks", "sst2",
                          "--limit", "1"], capture_output=True, text=True, cwd=REPO, timeout=120)
    terminal = out.stdout + out.stderr
    assert out.returncode == 2, terminal
    assert "error: model" in terminal and "not found" in terminal and "Traceback" not in terminal
    logs = list((tiny_config.root / "run" / "logs").glob("eval-*.log"))
    assert len(logs) == 1 and f"full log: {logs[0]}" in terminal
    assert "Traceback" in logs[0].read_text() and "ModelNotFoundError" in logs[0].read_text()
