"""The background writer: a trial's writes after its run is created (params, config.yaml, setup tags, per-epoch metrics) go through one background
thread of our own, in order, so training does not wait for the store.

Not MLflow's async logging: its queue costs ~1 s per run at `set_terminated` (its worker thread
polls with a 1 s timeout before it can join).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Callable
from typing import Any

Guard = Callable[[str], contextlib.AbstractContextManager[None]]  # `with guard(what):` one step


class BackgroundWriter:
    """One thread, so a run's writes keep their order; `wait` before the run is closed."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.pending: dict[str, list[concurrent.futures.Future[Any]]] = {}
        self.thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="exptrack-mlflow"
        )

    def later(self, run_id: str, what: str, write: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue one write of `run_id`; a failure is recorded like any guarded call."""

        def guarded() -> None:  # a failure is counted by the tracker's guard, never raised
            with self.guard(what):
                write(*args, **kwargs)

        self.pending.setdefault(run_id, []).append(self.thread.submit(guarded))

    def wait(self, run_id: str) -> None:
        """Every write queued for the run is done (guarded inside: never raises)."""
        for future in self.pending.pop(run_id, []):
            future.result()

    def close(self) -> None:
        """Finish every queued write and end the thread: a search called from Python (a notebook)
        leaves no thread behind per call. A write queued after this starts the thread again."""
        for run_id in list(self.pending):
            self.wait(run_id)
        self.thread.shutdown(wait=True)
        self.thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="exptrack-mlflow"
        )  # made, not started: its thread starts with a first write
