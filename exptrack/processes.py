"""Which process owns a record, and whether it is gone: a trial records its worker, an `exp train`
run its process, as host:pid:start-time, so a later command can close what a killed one left
RUNNING (a recycled pid, with another start time, is not taken for the owner). And what a
process sets up for itself: the quieting every entry point (`exp`, a `--workers` worker, the Python
API) makes first (`quiet_libraries`; no module does it on import), SIGINT/SIGTERM handlers for a
block (`stop_signals_handled`: exp search, its workers' coordinator, exp train, exp ui), and a
child that dies with its parent (`signal_on_parent_death`: `--workers` workers, exp ui's server)."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

# torch's C++ logs that are the profiler's internals, not the user's concern (issue 19, item 14):
# - libkineto (torch.profiler's engine) prints `USDT: ... profiler_start/stop`, `STAGE:` lines and,
#   on a machine without a GPU, `ERROR: ... gpuGetDeviceCount failed with code 35`. Its levels run
#   0 (verbose) to 5 (USDT); 6 is the first that prints none of them (measured, torch 2.x CPU).
# - c10 logs `[W ... CPUAllocator.cpp] Memory block of unknown size was allocated before the
#   profiling started` under `profile_memory=True`; ERROR keeps c10's errors. c10 reads its level
#   once, when torch loads, so this must run before torch is imported.
QUIET_TORCH = {"KINETO_LOG_LEVEL": "6", "TORCH_CPP_LOG_LEVEL": "ERROR"}
# MLflow sets its own logger's level when it is imported, from MLFLOW_LOGGING_LEVEL (INFO unset):
# the variable covers an import still to come, the level one already made.
QUIET_MLFLOW = {"MLFLOW_LOGGING_LEVEL": "WARNING"}
QUIET_LOGGERS = {
    "mlflow": logging.WARNING,  # its table-creation INFO lines are noise here
    # MLflow's SQL store logs each failed statement with its traceback (13 of them on a full disk)
    # before it raises; the error itself reaches the tracker, which reports it in one line
    "mlflow.store.db.utils": logging.CRITICAL,
}
# OpenMP's idle threads sleep (PASSIVE) instead of spinning. torch's CPU kernels run under libgomp,
# whose default spins (GOMP_SPINCOUNT 300,000, ~3 ms) at every barrier; on cores that other
# processes share, a spinning thread burns the time slice its partner needs, and each operator
# waits for a descheduled thread. On 2 cores at load 6-13 (benchmarks/README.md, "levers") an
# 8-trial finetune study's trials took 31.8 s passive against 255.0 s spinning (8x), same results:
# the thread count, so the work each thread does, is unchanged (bit-identical,
# tests/training/test_threads.py). libgomp reads it once, when torch loads. Set only where the
# user chose no wait behaviour (OMP_WAIT_POLICY, or GOMP_SPINCOUNT, which sets one too).
OMP_WAIT = {"OMP_WAIT_POLICY": "PASSIVE"}


def quiet_libraries() -> None:
    """Keep torch's profiler internals and MLflow's INFO lines off the terminal, and OpenMP's idle
    threads asleep (`OMP_WAIT`), before either loads. A user's own setting of any of these
    variables wins; workers inherit them."""
    for key, value in {**QUIET_TORCH, **QUIET_MLFLOW}.items():
        os.environ.setdefault(key, value)
    if not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & os.environ.keys():
        os.environ.update(OMP_WAIT)
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


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


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C, and `kill` / a scheduler's stop
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
Handler = Callable[[int, FrameType | None], Any]


@contextlib.contextmanager
def stop_signals_handled(handler: Handler) -> Iterator[None]:
    """`handler` for SIGINT and SIGTERM while the block runs, then the handlers found before it
    back (a notebook's own Ctrl-C handling, or the command's)."""
    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before)


def signal_on_parent_death(signum: int) -> bool:
    """Have Linux send this process `signum` when its parent dies, even by SIGKILL (prctl's
    PR_SET_PDEATHSIG); False where that cannot be had (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    with contextlib.suppress(AttributeError, OSError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
        return True
    return False
