"""A run's system metrics (CPU, memory, disk, network, and each GPU through NVML when
nvidia-ml-py is installed), sampled onto the run as `system/<node id>/...` while it trains.

This is the one module that reaches into MLflow's `SystemMetricsMonitor`: the fluent
`start_run(log_system_metrics=True)` would need the process-wide active run, which concurrent
trials cannot share, so the monitor's parts are driven by hand with an explicit run id
(`monitors`, `collect_metrics`, `aggregate_metrics`, `publish_metrics`, `samples_before_logging`,
`sampling_interval`, `mlflow_logger`). Not its own thread: after every sample it asks the server
whether the run is still RUNNING (a `runs/get`, one a trial even when shorter than the interval),
and ours are stopped before their run closes. Its samples join the run's pending batch
(`writer.Batch`) instead of a `log_batch` each. Its last, partial sample would be dropped, so
`stop` takes one more. An MLflow release that renames these parts fails inside the tracker's
guard: a counted tracking failure, never a stopped trial.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from exptrack.tracking.writer import Guard

# MLflow samples every 10 s unless told; 5 s gives a minute-long trial a curve.
# MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL overrides it, MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false turns it off.
SYSTEM_METRICS_INTERVAL_S = 5.0


Queue = Callable[[str, list[Any]], None]  # metrics (MLflow entities) into a run's pending batch


class SystemMetrics:
    """The sampling of the runs this process is training, by run id."""

    def __init__(self, uri: str, guard: Guard, queue: Queue) -> None:
        self.uri, self.guard, self.queue = uri, guard, queue
        self.monitors: dict[str, tuple[Any, threading.Event, threading.Thread]] = {}

    def watch(self, run_id: str, node_id: str) -> None:
        """Sample onto the run until `stop`."""
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        with self.guard("start system metrics"):
            if not enabled():
                return
            monitor = SystemMetricsMonitor(
                run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S, node_id=node_id, tracking_uri=self.uri
            )
            monitor.mlflow_logger = _Queued(run_id, self.queue)
            stopped = threading.Event()
            thread = threading.Thread(
                target=self._sample, args=(monitor, stopped), name="exptrack-system-metrics", daemon=True
            )
            thread.start()
            self.monitors[run_id] = (monitor, stopped, thread)

    def _sample(self, monitor: Any, stopped: threading.Event) -> None:
        """MLflow's monitor loop without its `get_run` after each sample."""
        with self.guard("sample system metrics"):
            while True:
                for _ in range(monitor.samples_before_logging):
                    monitor.collect_metrics()
                    if stopped.wait(monitor.sampling_interval):
                        return
                monitor.publish_metrics(monitor.aggregate_metrics())

    def stop(self, run_id: str) -> None:
        """Stop the run's sampling. The loop drops the last, partial sample; in its place one
        sample taken now is queued (its CPU share covers the time since the previous sample), so a
        trial shorter than the interval still has one."""
        watched = self.monitors.pop(run_id, None)
        if watched is None:
            return
        monitor, stopped, thread = watched
        with self.guard("log system metrics"):
            stopped.set()
            thread.join()  # nothing samples concurrently from here on
            for part in monitor.monitors:
                part.clear_metrics()
            monitor.collect_metrics()
            monitor.publish_metrics(monitor.aggregate_metrics())


class _Queued:
    """In place of the monitor's `BatchMetricsLogger` (a `log_batch` per sample): each sample, as
    `publish_metrics` hands it over, goes to the run's pending batch."""

    def __init__(self, run_id: str, queue: Queue) -> None:
        self.run_id, self.queue = run_id, queue

    def record_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.queue(self.run_id, [Metric(k, float(v), now, step or 0) for k, v in metrics.items()])

    def flush(self) -> None:
        """Nothing is held here."""


def enabled() -> bool:
    """On unless MLflow's own switch says false (its default, off, is for fluent runs)."""
    from mlflow.environment_variables import MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING

    return not MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.defined or bool(
        MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.get()
    )
