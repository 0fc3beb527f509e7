"""What a person sees while a command runs, and where everything else goes.

By default the terminal shows the `sentidistill` log lines, one progress line for the running stage,
the stage summaries and the final tables. Everything else the process and its Ray workers print (Ray,
Ray Data, Ray Train, DeepSpeed, vLLM, transformers, warnings, worker stdout/stderr forwarded by
`log_to_driver`) goes to `<run_dir>/logs/<command>-<time>-<pid>.log`, with secrets masked. With `-v` (or
SENTIDISTILL_VERBOSE=1) nothing is redirected and the output is as verbose as it gets.

How: file descriptors 1 and 2 point at a pipe while a command runs; a thread masks secrets, strips
terminal colour codes and appends to the log file; the rich console writes to a copy of the real
terminal. Catching the descriptors (not just `sys.stdout`) also catches the loggers that libraries
bound to stderr at import and anything written below Python. A remote run_dir (s3://, gs://) cannot
be appended to: the log is written under `<cache_dir>/logs/` and uploaded to `<run_dir>/logs/` when
the command ends.

On a terminal the stage line redraws in place (rich); elsewhere (CI, `ray job submit`, a pipe) it
is a plain line when the stage starts and then every SENTIDISTILL_PROGRESS_EVERY seconds (30).
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from click.exceptions import Exit as ClickExit
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from typer import Exit as TyperExit

from sentidistill.layout import LOGS
from sentidistill.models import default_cache_dir
from sentidistill.rundir import RunDir, is_remote



def _width() -> int | None:
    """A terminal's own width; elsewhere (CI, pipes, `ray job submit`) $COLUMNS or 160, not rich's 80,
    so the comparison table's intervals stay on one line in logs."""
    if sys.stderr.isatty():
        return None
    cols = os.environ.get("COLUMNS", "")
    return int(cols) if cols.isdigit() and int(cols) > 0 else 160


console = Console(stderr=True, width=_width())

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|APIKEY|ACCESS_KEY|CREDENTIAL|PRIVATE_KEY", re.I)
# Ray Data's own progress output: our stage line replaces it (set before ray.data is imported; workers
# started by this driver inherit it). -v leaves it on.
QUIET_ENV = {"RAY_DATA_DISABLE_PROGRESS_BARS": "1"}


def verbose() -> bool:
    """-v on the command line (the CLI sets SENTIDISTILL_VERBOSE) or in the environment."""
    return os.environ.get("SENTIDISTILL_VERBOSE", "") not in ("", "0", "false")


def progress_every() -> float:
    """Seconds between plain progress lines on a non-interactive terminal."""
    return float(os.environ.get("SENTIDISTILL_PROGRESS_EVERY", "30"))


def secret_values(env: dict[str, str] | None = None) -> list[bytes]:
    """Values of environment variables whose names say they are secrets (HF_TOKEN, *_API_KEY, AWS_SECRET_...)."""
    env = os.environ if env is None else env
    return sorted({v.encode() for k, v in env.items() if SECRET_NAME.search(k) and len(v) >= 6}, key=len,
                  reverse=True)


def clean(line: bytes, secrets: list[bytes]) -> bytes:
    """One chunk of captured output as it goes into the log: colour codes stripped, secrets masked."""
    line = ANSI.sub(b"", line)
    for s in secrets:
        line = line.replace(s, b"***")
    return line


class _Capture:
    """fd 1 and 2 into a pipe; a thread writes what comes out of it, cleaned, to the log file."""

    def __init__(self, log_file: IO[bytes], secrets: list[bytes]):
        self.file, self.secrets = log_file, secrets
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        self.saved = {fd: os.dup(fd) for fd in (1, 2)}
        self.read_fd, write_fd = os.pipe()
        for fd in (1, 2):
            os.dup2(write_fd, fd)
        os.close(write_fd)
        self.terminal = open(os.dup(self.saved[2]), "w", buffering=1, encoding="utf-8", errors="replace")
        self.thread = threading.Thread(target=self._pump, name="sentidistill-log", daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        pending = b""
        while True:
            chunk = os.read(self.read_fd, 65536)
            if not chunk:
                break
            pending += chunk
            head, sep, pending = pending.rpartition(b"\n")
            if sep:  # whole lines only, so a secret is never split across two writes
                self.file.write(clean(head + sep, self.secrets))
                self.file.flush()
        if pending:
            self.file.write(clean(pending + b"\n", self.secrets))
            self.file.flush()

    def close(self) -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except ValueError:
                pass
        for fd, saved in self.saved.items():
            os.dup2(saved, fd)  # drops the pipe's last write end we hold: the thread sees EOF
            os.close(saved)
        # a child that inherited the pipe (none of Ray's services do) would keep it open: do not wait forever
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            os.close(self.read_fd)
        self.terminal.close()


@dataclass
class LogSession:
    """One command's log file: where it is written, and where it ends up when run_dir is remote."""

    path: Path
    upload_to: str | None = None  # run_dir of a remote run: the file is copied to <run_dir>/logs/ at the end
    capture: _Capture | None = field(default=None, repr=False)
    file: IO[bytes] | None = field(default=None, repr=False)

    @property
    def shown(self) -> str:
        """Where a person finds the log, said once at start."""
        if self.upload_to:
            return f"{self.path} (uploaded to {RunDir(self.upload_to).uri(LOGS, self.path.name)} when the command ends)"
        return str(self.path)


_session: LogSession | None = None


def start(run_dir: str, command: str, cache_dir: str | None = None) -> LogSession | None:
    """Send everything but our own output to `<run_dir>/logs/`; None (nothing redirected) with -v,
    when already started, or when stdout/stderr are not real file descriptors (e.g. typer's CliRunner)."""
    global _session
    if _session is not None or verbose() or not _real_fds():
        setup_logging()
        return None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    name = f"{command}-{stamp}-{os.getpid()}.log"
    remote = is_remote(run_dir)
    folder = default_cache_dir(cache_dir) / LOGS if remote else Path(run_dir).expanduser() / LOGS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder.resolve() / name
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    _quiet_ray_data()
    secrets = secret_values()
    f = open(path, "ab")
    f.write(clean(f"# sentidistill {' '.join(sys.argv[1:])}\n".encode(), secrets))
    f.flush()
    _session = LogSession(path, run_dir if remote else None, _Capture(f, secrets), f)
    console.file = _session.capture.terminal
    setup_logging()
    console.print(f"logs: {_session.shown}", highlight=False, soft_wrap=True)
    return _session


def stop() -> None:
    """Restore the terminal, close the log (with the traceback of a failure), upload it for a remote run."""
    global _session
    session, _session = _session, None
    if session is None or session.capture is None or session.file is None:
        return
    exc = sys.exc_info()
    # the log's path is repeated before cli.main prints the error (so the cause stays the last line); a command
    # that printed its own error and exits (click/typer Exit) has said what there is to say
    failed = exc[0] is not None and not issubclass(exc[0], (SystemExit, ClickExit, TyperExit))
    if exc[0] is not None and not issubclass(exc[0], SystemExit):
        traceback.print_exception(*exc, file=sys.stderr)  # still the pipe: into the log
    if "ray" in sys.modules:  # the command is over: disconnect now, so workers' last lines land in the log too
        import ray

        if ray.is_initialized():
            ray.shutdown()
    logging.getLogger().handlers.clear()
    session.capture.close()
    console.file = None  # rich falls back to sys.stderr
    session.file.close()
    setup_logging()
    if failed:
        console.print(f"full log: {session.path}", highlight=False, soft_wrap=True)
    if session.upload_to:
        try:
            RunDir(session.upload_to).write_bytes(f"{LOGS}/{session.path.name}", session.path.read_bytes())
        except Exception as e:  # the run's result stands; the log stays local
            console.print(f"could not upload the log to {session.upload_to}/{LOGS}/ ({e}); it is at {session.path}",
                          highlight=False, soft_wrap=True)


def setup_logging() -> None:
    """Our log lines (INFO) on the console; with a log session, every logger's records also go to the log file."""
    handlers: list[logging.Handler] = []
    term = RichHandler(console=console, show_path=False)
    if _session is not None:
        term.addFilter(lambda r: r.name == "sentidistill" or r.name.startswith("sentidistill."))
        to_log = logging.StreamHandler(sys.stderr)  # fd 2: the pipe into the log file
        to_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers.append(to_log)
    handlers.insert(0, term)
    logging.basicConfig(level=logging.INFO, format="%(message)s", datefmt="[%X]",
                        handlers=handlers, force=True)
    logging.captureWarnings(True)


def _real_fds() -> bool:
    try:
        return sys.stdout.fileno() == 1 and sys.stderr.fileno() == 2
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return False


def _quiet_ray_data() -> None:
    if "ray.data" in sys.modules:  # imported before the session: its defaults are already read
        import ray.data

        ray.data.DataContext.get_current().enable_progress_bars = False


# -- the stage line --------------------------------------------------------------------------------


@dataclass
class _Stage:
    name: str
    started: float
    completed: float | None = None
    total: float | None = None
    note: str = ""

    def plain(self) -> str:
        secs = int(time.monotonic() - self.started)
        done = "" if self.completed is None else f" {self.completed:g}" + (f"/{self.total:g}" if self.total else "")
        return f"{self.name}: running {secs // 60}:{secs % 60:02d}{done}{' ' + self.note if self.note else ''}"


_stage: _Stage | None = None
_progress: Progress | None = None
_task: int | None = None


@contextmanager
def stage(name: str) -> Iterator[None]:
    """One progress line while `name` runs: redrawn in place on a terminal, else a plain line every
    progress_every() seconds. Nested calls (a stage inside the pipeline's step) keep the outer line."""
    global _stage, _progress, _task
    if _stage is not None:
        yield
        return
    _stage = _Stage(name, time.monotonic())
    live = console.is_terminal and not verbose()
    stop_event = threading.Event()
    ticker = None
    if live:
        _progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                             MofNCompleteColumn(), TextColumn("{task.fields[note]}"), TimeElapsedColumn(),
                             console=console, transient=True,
                             redirect_stdout=False, redirect_stderr=False)  # sys.stdout/err belong to the log
        _task = _progress.add_task(name, total=None, note="")
        _progress.start()
    else:
        console.print(f"{name}: started", highlight=False)
        ticker = threading.Thread(target=_tick, args=(stop_event,), name="sentidistill-progress", daemon=True)
        ticker.start()
    try:
        yield
    finally:
        stop_event.set()
        if ticker is not None:
            ticker.join(timeout=1)
        if _progress is not None:
            _progress.stop()
        _stage, _progress, _task = None, None, None


def update(completed: float | None = None, total: float | None = None, note: str | None = None) -> None:
    """Progress of the running stage (e.g. training steps); a no-op outside `stage()`."""
    st = _stage
    if st is None:
        return
    if completed is not None:
        st.completed = completed
    if total is not None:
        st.total = total
    if note is not None:
        st.note = note
    if _progress is not None and _task is not None:
        _progress.update(_task, completed=st.completed or 0, total=st.total, note=st.note)


def train_step(row: dict[str, Any]) -> None:
    """A metrics row of the training loop (training.loop) as the stage line's step count, loss and speed."""
    update(row["step"], row["total_steps"], f"{row.get('stage', '')} loss {row['loss']:.4f} "
                                            f"{row.get('tokens_per_s', 0):.0f} tok/s".strip())


def _tick(stop_event: threading.Event) -> None:
    while not stop_event.wait(progress_every()):
        st = _stage
        if st is not None:
            console.print(st.plain(), highlight=False, soft_wrap=True)


__all__ = ["LogSession", "clean", "console", "progress_every", "secret_values", "setup_logging",
           "stage", "start", "stop", "train_step", "update", "verbose"]
