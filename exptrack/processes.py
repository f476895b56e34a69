"""Which process owns a record, and whether it is gone: a trial records its worker, an `exp train`
run its process, as host:pid:start-time, so a later command can close what a killed one left
RUNNING (a recycled pid, with another start time, is not taken for the owner)."""

from __future__ import annotations

import os
from pathlib import Path


def worker_id(pid: int | None = None) -> str:
    """This process (or `pid`) as host:pid:start-time."""
    pid = os.getpid() if pid is None else pid
    return f"{os.uname().nodename}:{pid}:{_start_time(pid)}"


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux); '-' where /proc is missing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "-"
    fields = stat.rsplit(")", 1)[1].split()
    return "-" if fields[0] == "Z" else fields[19]  # field 22 of stat; a zombie counts as gone


def owner_is_dead(worker: str) -> bool:
    """True when `worker` names a process of this host that no longer runs."""
    host, _, rest = worker.partition(":")
    pid_text, _, started = rest.partition(":")
    if host != os.uname().nodename or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, owned by someone else
    # Same pid, other start time: the pid was recycled and the owner is gone.
    # An older host:pid record, or no /proc: the pid is alive, so take it for the owner.
    return started not in ("", "-") and _start_time(pid) != started
