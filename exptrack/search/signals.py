"""SIGINT / SIGTERM during a search (or `exp train`): the first closes the running trial (or run)
as failed and exits 130 / 143; a second exits at once (the next start repairs what was left RUNNING).

What has been received is held by an `Interrupts` object its caller owns (`run_search` makes one
per search, `exp train` one per run), handed to the loop and to each trial, not by module state:
a second search from the same Python process starts with nothing received.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from types import FrameType

from exptrack import processes

PARENT_DEATH = signal.SIGHUP  # what a worker gets when its coordinator dies (see on_parent_death)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: unwinds like Ctrl-C so the running trial is closed as failed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class Interrupts:
    """The signals of one search (or `exp train` run): `work` names what the first one closes as
    failed. Inside `interruptible()` (training, creating the stores) it unwinds at once; elsewhere
    (a store write) the work finishes and `check()` stops it."""

    def __init__(self, notify: Callable[[str], None] = print, work: str = "the running trial") -> None:
        self.notify = notify
        self.requested: int | None = None
        self.unwinds = False  # inside `interruptible()`
        self.doing = [f"closing {work} as failed"]  # what the first signal does, as its notice says

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None:
            os._exit(128 + signum)
        self.requested = signum
        self.notify(f"{signal.Signals(signum).name}: {self.doing[-1]} (send again to exit at once)")
        if self.unwinds:
            raise Interrupted(signum)

    def install(self) -> None:
        """Handle SIGINT and SIGTERM in this (main) thread for the rest of the process (the CLI's)."""
        for signum in processes.STOP_SIGNALS:
            signal.signal(signum, self.handle)

    def for_the_call(self) -> contextlib.AbstractContextManager[None]:
        """Handled for one call from Python (a notebook, a script); the caller's handlers come back."""
        return processes.stop_signals_handled(self.handle)

    @contextlib.contextmanager
    def interruptible(self, doing: str | None = None) -> Iterator[None]:
        """Mark training (or creating the stores, which `doing` then names): a signal arriving here
        raises `Interrupted` at once."""
        self.check()
        self.unwinds = True
        self.doing.append(doing or self.doing[0])
        try:
            yield
        finally:
            self.unwinds = False
            self.doing.pop()

    @contextlib.contextmanager
    def shielded(self) -> Iterator[None]:
        """Inside training, a write that must finish (a checkpoint: a SIGTERM cutting its rename
        short would keep the older one): a signal arriving here unwinds once it is done."""
        unwinds, self.unwinds = self.unwinds, False
        try:
            yield
        finally:
            self.unwinds = unwinds
        if unwinds:
            self.check()

    def check(self) -> None:
        """Raise `Interrupted` if a signal arrived while a store write was in progress."""
        if self.requested is not None:
            raise Interrupted(self.requested)

    def on_parent_death(self) -> None:
        """In a `--workers` worker, whose coordinator's death arrives as PARENT_DEATH (Linux's
        PR_SET_PDEATHSIG): taken as one SIGTERM. The kernel sends it again as each thread of the
        dying coordinator exits (a SIGTERM 0.18 s after the first was measured), and a repeated
        SIGTERM would exit at once, leaving the trial's MLflow run RUNNING; repeats are ignored."""
        signal.signal(PARENT_DEATH, self._parent_died)

    def _parent_died(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None:
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
