"""A run's system metrics (CPU, memory, disk, network, and each GPU through NVML when
nvidia-ml-py is installed), sampled onto the run as `system/<node id>/...` while it trains.

This is the one module that reaches into MLflow's `SystemMetricsMonitor`: the fluent
`start_run(log_system_metrics=True)` would need the process-wide active run, which concurrent
trials cannot share, so the monitor is driven by hand with an explicit run id; and its last,
partial sample is dropped by `finish`, so `stop` takes one more through its parts (`monitors`,
`collect_metrics`, `aggregate_metrics`, `publish_metrics`, `mlflow_logger`). An MLflow release
that renames them fails `stop` inside the tracker's guard: a counted tracking failure, never a
stopped trial.
"""

from __future__ import annotations

from typing import Any

from exptrack.tracking.writer import Guard

# MLflow samples every 10 s unless told; 5 s gives a minute-long trial a curve.
# MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL overrides it, MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false turns it off.
SYSTEM_METRICS_INTERVAL_S = 5.0


class SystemMetrics:
    """The monitors of the runs this process is training, by run id."""

    def __init__(self, uri: str, guard: Guard) -> None:
        self.uri, self.guard = uri, guard
        self.monitors: dict[str, Any] = {}

    def watch(self, run_id: str, node_id: str) -> None:
        """Sample onto the run until `stop`."""
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        with self.guard("start system metrics"):
            if not enabled():
                return
            monitor = SystemMetricsMonitor(
                run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S, node_id=node_id, tracking_uri=self.uri
            )
            monitor.start()
            self.monitors[run_id] = monitor

    def stop(self, run_id: str) -> None:
        """Stop the run's sampling. The monitor logs a sample per full interval and drops the
        last, partial one; in its place one sample taken now is logged (its CPU share covers the
        time since the previous sample), so a trial shorter than the interval still has one."""
        monitor = self.monitors.pop(run_id, None)
        if monitor is None:
            return
        with self.guard("log system metrics"):
            monitor.finish()  # joins its thread: nothing samples concurrently from here on
            for part in monitor.monitors:
                part.clear_metrics()
            monitor.collect_metrics()
            monitor.publish_metrics(monitor.aggregate_metrics())
            monitor.mlflow_logger.flush()


def enabled() -> bool:
    """On unless MLflow's own switch says false (its default, off, is for fluent runs)."""
    from mlflow.environment_variables import MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING

    return not MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.defined or bool(
        MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.get()
    )
