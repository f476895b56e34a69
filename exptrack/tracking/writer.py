"""The background writer: a trial's writes after its run is created (params, config.yaml, setup
tags, per-epoch metrics, system metrics) go through one background thread of our own, in order,
so training does not wait for the store.

Params, tags and metrics are not sent one call each: they gather in the run's pending batch,
sent as one `log_batch` LINGER_S after the first of them, or with the run's close, whichever
comes first. A trial shorter than that sends all of them with its close figures in one request
(5 a trial in all, 11 before: benchmarks/README.md). The journal holds every record before it
is queued (`tracking.journal`), so a killed process loses none of what lingers.

Not MLflow's async logging: its queue costs ~1 s per run at `set_terminated` (its worker thread
polls with a 1 s timeout before it can join).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterable
from typing import Any

Guard = Callable[[str], contextlib.AbstractContextManager[None]]  # `with guard(what):` one step

# How long a run's params, tags and metrics wait for more before they are sent: the system
# metrics' sampling interval (system_metrics.SYSTEM_METRICS_INTERVAL_S), so a user watching the
# UI sees a trial's params and each epoch within 5 s, and a trial's sample joins its epoch's batch.
LINGER_S = 5.0


@dataclasses.dataclass
class Batch:
    """A run's params, tags and metrics not sent yet (MLflow entities), each add kept as it came:
    merged for one `log_batch`, or sent add by add when the store refuses one entry."""

    parts: list[tuple[list[Any], list[Any], list[Any]]] = dataclasses.field(default_factory=list)

    def add(self, metrics: Iterable[Any] = (), params: Iterable[Any] = (), tags: Iterable[Any] = ()) -> None:
        self.parts.append((list(metrics), list(params), list(tags)))

    def merged(self) -> tuple[list[Any], list[Any], list[Any]]:
        """Every metric; each param and tag once, a later value winning, as if sent in order."""
        metrics: list[Any] = []
        params: dict[str, Any] = {}
        tags: dict[str, Any] = {}
        for part_metrics, part_params, part_tags in self.parts:
            metrics.extend(part_metrics)
            params.update((p.key, p) for p in part_params)
            tags.update((t.key, t) for t in part_tags)
        return metrics, list(params.values()), list(tags.values())

    def __bool__(self) -> bool:
        return any(any(part) for part in self.parts)


Send = Callable[[str, Batch], None]  # one log_batch of a run's batch


class BackgroundWriter:
    """One thread, so a run's writes keep their order; `take` then `wait` before the run is closed."""

    def __init__(self, guard: Guard, send: Send, linger_s: float = LINGER_S) -> None:
        self.guard, self.send, self.linger_s = guard, send, linger_s
        self.pending: dict[str, list[concurrent.futures.Future[Any]]] = {}
        self.batches: dict[str, Batch] = {}
        self.timers: dict[str, threading.Timer] = {}
        self.lock = threading.Lock()
        self.thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="exptrack-mlflow"
        )

    def later(self, run_id: str, what: str, write: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue one write of `run_id`; a failure is recorded like any guarded call."""

        def guarded() -> None:  # a failure is counted by the tracker's guard, never raised
            with self.guard(what):
                write(*args, **kwargs)

        self.pending.setdefault(run_id, []).append(self.thread.submit(guarded))

    def batch(
        self, run_id: str, metrics: Iterable[Any] = (), params: Iterable[Any] = (), tags: Iterable[Any] = ()
    ) -> None:
        """Add to the run's pending batch; its first entry starts the linger."""
        with self.lock:
            self.batches.setdefault(run_id, Batch()).add(metrics, params, tags)
            if run_id not in self.timers:
                timer = threading.Timer(self.linger_s, self._due, [run_id])
                timer.daemon, timer.name = True, f"exptrack-linger-{run_id}"
                self.timers[run_id] = timer
                timer.start()

    def _due(self, run_id: str) -> None:
        """The linger is over: send what gathered, behind the run's writes queued before it."""
        with self.lock:
            self.timers.pop(run_id, None)
            if run_id in self.batches:
                self.later(run_id, "log to run", self._send, run_id)

    def _send(self, run_id: str) -> None:
        with self.lock:
            batch = self.batches.pop(run_id, None)
        if batch:
            self.send(run_id, batch)

    def take(self, run_id: str) -> Batch:
        """The run's pending batch, no longer to be sent here (its close sends it)."""
        with self.lock:
            timer = self.timers.pop(run_id, None)
            batch = self.batches.pop(run_id, None) or Batch()
        _stop(timer)
        return batch

    def wait(self, run_id: str) -> None:
        """Every write queued for the run is done (guarded inside: never raises)."""
        for future in self.pending.pop(run_id, []):
            future.result()

    def close(self) -> None:
        """Finish every queued write and end the thread: a search called from Python (a notebook)
        leaves no thread behind per call. A write queued after this starts the thread again.
        What a run's batch still holds is sent first (a run left open: its close never came)."""
        with self.lock:
            timers, self.timers = list(self.timers.values()), {}
            for run_id in self.batches:
                self.later(run_id, "log to run", self._send, run_id)
        for timer in timers:
            _stop(timer)
        for run_id in list(self.pending):
            self.wait(run_id)
        self.thread.shutdown(wait=True)
        self.thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="exptrack-mlflow"
        )  # made, not started: its thread starts with a first write


def _stop(timer: threading.Timer | None) -> None:
    """A linger's timer cancelled and its thread ended (outside the lock: its `_due` may wait on it)."""
    if timer is not None:
        timer.cancel()
        timer.join()
