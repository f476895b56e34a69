"""`--workers K`: K `python -m exptrack.search.worker` processes on one study. This process creates
both stores and the study's run first (under the store lock), waits for the workers, then closes
the run. A worker is told when this process dies, even by SIGKILL (Linux's parent-death signal,
taken as one SIGTERM: `signals.Interrupts.on_parent_death`), so none keeps training for a
coordinator that is gone: it closes its trial FAIL and the trial's run FAILED; the next start
repairs the study's run."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import IO

from optuna.trial import TrialState

from exptrack import processes, study_store
from exptrack.errors import UserError
from exptrack.search import loop, signals, sync
from exptrack.search.loop import Search, SearchSummary
from exptrack.search.options import Order, SearchOptions
from exptrack.search.slots import Slot
from exptrack.search.study_run import StudyRun

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
            if match:  # onto the one bar; a search from Python draws none
                number, state, value = match.groups()
                if progress is not None:
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


def profile_shares(traced: int, count: int) -> list[int]:
    """--profile-trials K over `count` workers: K traces in all, not K each (5 over 2: [3, 2])."""
    return [traced // count + (1 if i < traced % count else 0) for i in range(count)]


def worker_options(options: SearchOptions, study_name: str, traced: int) -> SearchOptions:
    """The coordinator's options for one worker: one process on the study's resolved name (a
    `--new-study` NAME-2 is joined, not made again), tracing its share of the profiled trials."""
    return dataclasses.replace(
        options, worker=True, workers=1, gpus=None, per_gpu=1, new_study=False,
        study_name=study_name, profile_trials=traced,
    )  # fmt: skip


def run_workers(search: Search, slots: list[Slot], order: Order) -> SearchSummary:
    """One worker per slot to the study's budget, each given `order` with its own options; a
    signal here is passed on to each of them."""
    tracking = loop.open_tracking(search)
    if search.progress is not None:  # the one bar: the workers draw none
        search.progress.start(
            study_store.counted_trials(search.study), search.options.trials, search.spec.metric
        )
    relay = Relay(search)
    count = len(slots)
    shares = profile_shares(search.options.profile_trials, count)
    with tempfile.TemporaryDirectory(prefix="exptrack-workers-") as folder:  # mode 0700: only ours
        children = [
            _start(slot, dataclasses.replace(order, options=worker_options(search.options, search.name, traced)),
                   Path(folder) / f"worker-{index}.json")
            for index, (slot, traced) in enumerate(zip(slots, shares, strict=True))
        ]  # fmt: skip
        for index, child in enumerate(children):
            relay.follow(index, child.stderr)  # type: ignore[arg-type]
        codes, received = _wait(children, relay)
    _end(search, tracking, codes, received)
    return loop.summary(search, tracking)


def _start(slot: Slot, order: Order, path: Path) -> subprocess.Popen[str]:
    """One worker process on `slot`, reading its order from `path`. Its own session: a Ctrl-C in
    the terminal reaches it once, through `_wait`'s forwarding, not twice (a second signal would
    make it exit at once instead of closing its trial)."""
    path.write_text(order.to_json(), encoding="utf-8")
    return subprocess.Popen(
        [sys.executable, "-m", "exptrack.search.worker", str(path)],
        start_new_session=True,
        env={**os.environ, **slot.env(), COORDINATOR_ENV: str(os.getpid())},
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait(children: list[subprocess.Popen[str]], relay: Relay) -> tuple[list[int], list[int]]:
    """Every worker's exit code, and the signals this process received (passed on) meanwhile."""
    received: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    with processes.stop_signals_handled(forward):
        codes = [child.wait() for child in children]
        relay.join()  # every line the workers wrote is shown before the summary
    return codes, received


def _end(search: Search, tracking: StudyRun, codes: list[int], received: list[int]) -> None:
    """Close the study's run as the workers ended; a signal ends this process as it would have
    ended one worker (exit 128 + its number), a failed worker in one line."""
    failed = [code for code in codes if code not in (0, sync.PENDING_EXIT)]  # pending: the summary says
    loop.finish(search, tracking, "KILLED" if received else "FAILED" if failed else "FINISHED")
    if received:
        raise signals.Interrupted(received[0])
    if failed:
        raise UserError(
            f"{len(failed)} of {len(codes)} workers ended with an error (exit codes {sorted(set(failed))}); "
            "read their messages above, fix the cause and re-run the same command"
        )


def follow_coordinator(interrupts: signals.Interrupts) -> None:
    """In a worker: be signalled when the coordinator dies (it closes the running trial as failed),
    and stop at once if it died before this line ran."""
    parent = os.environ.get(COORDINATOR_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    interrupts.on_parent_death()  # before the kernel may send it
    processes.signal_on_parent_death(signals.PARENT_DEATH)
    if os.getppid() != int(parent):
        raise UserError("the --workers coordinator that started this worker is gone; re-run the search")
