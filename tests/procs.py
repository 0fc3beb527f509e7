"""Finding this test process's Ray worker processes by command line, and which of them still run."""

from __future__ import annotations

import os

import psutil


def descendants(needle: str) -> list[int]:
    """PIDs of this process's descendants whose command line contains `needle` (ray.init started them here)."""
    found = []
    for p in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if needle in " ".join(p.cmdline()):
                found.append(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def still_running(pids: list[int]) -> list[int]:
    """Still running, wherever re-parented (an orphan would no longer be our descendant)."""
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            continue
    return out
