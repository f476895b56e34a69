"""`--workers K`: K `exp search --worker` processes on one study. This process creates both stores
and the study's run first (under the storage lock), waits for the workers, then closes the run."""

from __future__ import annotations

import signal
import subprocess
import sys
from types import FrameType

from exptrack.errors import UserError
from exptrack.search.loop import Search, SearchSummary


def worker_args(argv: list[str], study_name: str) -> list[str]:
    """This command's arguments for one worker: one process, the study's resolved name."""
    args, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers=") and arg != "--new-study":
            args.append(arg)
    # click keeps the last value of a repeated option, so these win over the user's.
    return [*args, "--workers", "1", "--worker", "--study-name", study_name]


def profile_shares(traced: int, count: int) -> list[int]:
    """--profile-trials K over `count` workers: K traces in all, not K each (5 over 2: [3, 2])."""
    return [traced // count + (1 if i < traced % count else 0) for i in range(count)]


def run_workers(search: Search, count: int, argv: list[str]) -> SearchSummary:
    """Run `count` workers to the study's budget; a signal here is passed on to each of them."""
    search.open()
    command = [sys.executable, "-m", "exptrack", *worker_args(argv, search.name)]
    # Own sessions: a Ctrl-C in the terminal reaches them once, through `forward`, not twice
    # (a second signal would make them exit at once instead of closing their trials).
    shares = profile_shares(search.options.profile_trials, count)  # the last --profile-trials wins
    children = [
        subprocess.Popen([*command, "--profile-trials", str(n)], start_new_session=True) for n in shares
    ]
    received: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = [child.wait() for child in children]
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    failed = [code for code in codes if code != 0]
    search.finish("KILLED" if received else "FAILED" if failed else "FINISHED")
    if received:
        sys.exit(128 + received[0])
    if failed:
        raise UserError(
            f"{len(failed)} of {count} workers ended with an error (exit codes {sorted(set(failed))}); "
            "read their messages above, fix the cause and re-run the same command"
        )
    return search.summary()
