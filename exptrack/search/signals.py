"""SIGINT / SIGTERM during a search (or `exp train`): the first closes the running trial (or run)
as failed and exits 130 / 143; a second exits at once (the next start repairs what was left RUNNING)."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from types import FrameType

_state: dict[str, int | bool | None] = {"requested": None, "interruptible": False}
_doing = ["closing the running trial as failed"]
PARENT_DEATH = signal.SIGHUP  # what a worker gets when its coordinator dies (see on_parent_death)  # what the first signal does, as its notice says


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: unwinds like Ctrl-C so the running trial is closed as failed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


def install(notify: Callable[[str], None] = print, work: str = "the running trial") -> None:
    """Handle SIGINT and SIGTERM in this (main) thread for the rest of the process; `work` names
    what the first signal closes as failed (`exp train` closes its run)."""

    _doing[0] = f"closing {work} as failed"

    def handle(signum: int, frame: FrameType | None) -> None:
        if _state["requested"] is not None:
            os._exit(128 + signum)
        _state["requested"] = signum
        notify(f"{signal.Signals(signum).name}: {_doing[-1]} (send again to exit at once)")
        # Inside training, unwind now; elsewhere (a store write) finish it and stop at check().
        if _state["interruptible"]:
            raise Interrupted(signum)

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)


def on_parent_death() -> None:
    """In a `--workers` worker, whose coordinator's death arrives as PARENT_DEATH (Linux's
    PR_SET_PDEATHSIG): taken as one SIGTERM. The kernel sends it again as each thread of the dying
    coordinator exits (a SIGTERM 0.18 s after the first was measured), and a repeated SIGTERM would
    exit at once, leaving the trial's MLflow run RUNNING; repeats of this one are ignored."""

    def handle(signum: int, frame: FrameType | None) -> None:
        if _state["requested"] is not None:
            return
        # stderr is a pipe the dead coordinator read (workers.Relay): a write to it would raise
        # BrokenPipeError (rich turns it into SystemExit(1), the trial's reason): nobody reads it now
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        current = signal.getsignal(signal.SIGTERM)
        if callable(current):
            current(signal.SIGTERM, frame)
        else:  # before `install`: nothing written yet, end as SIGTERM's default would
            os._exit(128 + signal.SIGTERM)

    signal.signal(PARENT_DEATH, handle)


@contextlib.contextmanager
def installed_for_the_call(notify: Callable[[str], None] = print) -> Iterator[None]:
    """`install` for one call from Python (a notebook, a script), then the caller's own handlers
    back, and a signal that ended this call forgotten, so it does not end the next one."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    install(notify)
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        _state.update(requested=None, interruptible=False)


@contextlib.contextmanager
def interruptible(doing: str | None = None) -> Iterator[None]:
    """Mark training (or creating the stores, which `doing` then names): a signal arriving here
    raises `Interrupted` at once."""
    check()
    _state["interruptible"] = True
    _doing.append(doing or _doing[0])
    try:
        yield
    finally:
        _state["interruptible"] = False
        _doing.pop()


def check() -> None:
    """Raise `Interrupted` if a signal arrived while a store write was in progress."""
    signum = _state["requested"]
    if isinstance(signum, int) and not isinstance(signum, bool):
        raise Interrupted(signum)


def exit_code() -> int | None:
    """128 + the signal handled in this process (130 SIGINT, 143 SIGTERM); None without one."""
    signum = _state["requested"]
    return 128 + signum if isinstance(signum, int) and not isinstance(signum, bool) else None
