"""`--workers K`: K `exp search --worker` processes on one study. This process creates both stores
and the study's run first (under the store lock), waits for the workers, then closes the run.
A worker is told when this process dies, even by SIGKILL (Linux's parent-death signal, taken as one
SIGTERM: `signals.on_parent_death`), so none keeps training for a coordinator that is gone: it
closes its trial FAIL and the trial's run FAILED; the next start repairs the study's run."""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
from types import FrameType
from typing import IO

from optuna.trial import TrialState

from exptrack import study_store
from exptrack.errors import UserError
from exptrack.search import loop, signals
from exptrack.search.loop import Search, SearchSummary
from exptrack.search.slots import Slot

PR_SET_PDEATHSIG = 1  # linux/prctl.h
COORDINATOR_ENV = "EXPTRACK_COORDINATOR_PID"  # tells a worker whose death it follows


# A worker's line for a finished trial (`SearchProgress.trial_finished`): "trial 7: COMPLETE 0.9312"
TRIAL_LINE = re.compile(r"^trial (\d+): ([A-Z]+)(?: (\S+))?$")


class Relay:
    """One display for K workers (issue 19, item 12): the workers draw no bar and print no
    summary; their stderr comes here, a finished trial advances this process's bar, and any other
    line (a warning, an error) is shown once, however many workers print it."""

    def __init__(self, search: Search) -> None:
        self.search, self.lock = search, threading.Lock()
        self.said: dict[str, int] = {}  # line -> the worker that said it first
        self.readers: list[threading.Thread] = []

    def follow(self, index: int, stream: IO[str]) -> None:
        """Read worker `index`'s stderr until it closes, on a thread of its own."""
        reader = threading.Thread(target=self._read, args=(index, stream), daemon=True)
        reader.start()
        self.readers.append(reader)

    def join(self) -> None:
        for reader in self.readers:
            reader.join()

    def _read(self, index: int, stream: IO[str]) -> None:
        for line in stream:
            self.line(index, line.rstrip("\n"))

    def line(self, index: int, text: str) -> None:
        """A worker's line: a trial onto the bar, anything else once (a worker may repeat its own)."""
        with self.lock:
            progress, match = self.search.progress, TRIAL_LINE.match(text)
            if match and progress is not None:
                number, state, value = match.groups()
                progress.trial_finished(int(number), state, float(value) if value else None, self._best())
            elif text.strip() and self.said.setdefault(text, index) == index:
                self.search.warn(text)

    def _best(self) -> float | None:
        """The study's best feasible value so far, as a worker's own bar would show it."""
        if self.search.spec.multi_objective:
            return None
        done = self.search.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        ranked = study_store.best_first(done, self.search.spec.direction == "maximize")
        return ranked[0].value if ranked else None


SPREADING = ("--workers", "--gpus", "--per-gpu")  # the coordinator's own flags, with a value


def worker_args(argv: list[str], study_name: str) -> list[str]:
    """This command's arguments for one worker: one process, the study's resolved name."""
    args, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in SPREADING:
            skip = True
        elif not arg.startswith(tuple(f"{flag}=" for flag in SPREADING)) and arg != "--new-study":
            args.append(arg)
    # click keeps the last value of a repeated option, so these win over the user's.
    return [*args, "--workers", "1", "--worker", "--study-name", study_name]


def profile_shares(traced: int, count: int) -> list[int]:
    """--profile-trials K over `count` workers: K traces in all, not K each (5 over 2: [3, 2])."""
    return [traced // count + (1 if i < traced % count else 0) for i in range(count)]


def run_workers(search: Search, slots: list[Slot], argv: list[str]) -> SearchSummary:
    """One worker per slot to the study's budget; a signal here is passed on to each of them."""
    tracking = loop.open_tracking(search)
    if search.progress is not None:  # the one bar: the workers draw none
        search.progress.start(study_store.counted_trials(search.study), search.options.trials, search.spec.metric)
    relay = Relay(search)
    count = len(slots)
    command = [sys.executable, "-m", "exptrack", *worker_args(argv, search.name)]
    # Own sessions: a Ctrl-C in the terminal reaches them once, through `forward`, not twice
    # (a second signal would make them exit at once instead of closing their trials).
    shares = profile_shares(search.options.profile_trials, count)  # the last --profile-trials wins
    children = [
        subprocess.Popen(
            [*command, "--profile-trials", str(traced)],
            start_new_session=True,
            env={**os.environ, **slot.env(), COORDINATOR_ENV: str(os.getpid())},
            stderr=subprocess.PIPE,
            text=True,
        )
        for slot, traced in zip(slots, shares, strict=True)
    ]
    for index, child in enumerate(children):
        relay.follow(index, child.stderr)  # type: ignore[arg-type]
    received: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = [child.wait() for child in children]
        relay.join()  # every line the workers wrote is shown before the summary
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    failed = [code for code in codes if code != 0]
    loop.finish(search, tracking, "KILLED" if received else "FAILED" if failed else "FINISHED")
    if received:
        sys.exit(128 + received[0])
    if failed:
        raise UserError(
            f"{len(failed)} of {count} workers ended with an error (exit codes {sorted(set(failed))}); "
            "read their messages above, fix the cause and re-run the same command"
        )
    return loop.summary(search, tracking)


def follow_coordinator() -> None:
    """In a worker: be signalled when the coordinator dies (it closes the running trial as failed),
    and stop at once if it died before this line ran."""
    parent = os.environ.get(COORDINATOR_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    signals.on_parent_death()  # before the kernel may send it
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signals.PARENT_DEATH, 0, 0, 0)
    if os.getppid() != int(parent):
        raise UserError("the --workers coordinator that started this worker is gone; re-run the search")
