"""The `Tracker`: MLflow writes by explicit run id (metrics, params, tags, a run's close), the
tracking URI it resolves, and the guard that keeps a tracking failure from stopping training: each
call is guarded, the failure counted, and `failures` reported at the end.

`MlflowClient` with explicit run ids (never the fluent `mlflow.start_run` globals, which break as
soon as two trials run at once). Which runs exist and how they are tagged is `runs`' (the domain
API); reads are `queries`'; a run's writes queue on the `writer`'s thread; `system_metrics` samples
the machine; a run's files go through `artifacts` (`tracker.artifacts`), its dataset input through
`dataset_inputs`. `close_run` waits for the queued writes before it closes the run.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

from exptrack import records
from exptrack.errors import UserError, first_line, redact
from exptrack.stores.url import parse, resolve_tracking
from exptrack.tracking import store_setup
from exptrack.tracking.artifacts import Artifacts
from exptrack.tracking.dataset_inputs import log_dataset_input
from exptrack.tracking.system_metrics import SystemMetrics
from exptrack.tracking.writer import BackgroundWriter, Batch

# A dead tracking server must not stall each trial for minutes (MLflow's defaults: 7 retries with
# exponential backoff, ~4 min; 120 s timeout): 2 quick retries (~2 s), then the write counts as failed.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    # MLflow prints "View run trial-007 at: URL" for every run it closes on a server: with K workers
    # that is K interleaved lines a trial through the progress display. The summary prints the
    # study's links and each trial keeps its own (`mlflow_run_url`).
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}

# What MLflow answers when it refuses an entry of a batch (not when it cannot be reached).
REFUSED = ("INVALID_PARAMETER_VALUE", "BAD_REQUEST")


class Tracker:
    """MLflow writes of one process, by explicit run id. Construct with the tracking URI; `check()`
    before trial 1. Which runs there are and what they are tagged with is `runs`'; reads `queries`'."""

    def __init__(self, uri: str | None = None, warn: Any = print, create: bool = True) -> None:
        """`create=False` for commands that only read or add to an existing store (results
        commands): the store is then never created, migrated or rebuilt."""
        from mlflow import MlflowClient

        self.uri = resolve_tracking(uri)
        if parse(self.uri).backend == "server":
            for key, value in HTTP_DEFAULTS.items():
                os.environ.setdefault(key, value)  # a user's own setting wins
        if create:
            store_setup.ensure_store(self.uri, warn)  # before MlflowClient, which would create it unguarded
        self.client = MlflowClient(tracking_uri=self.uri)
        self.warn = warn
        self.failures: list[str] = []
        self.writer = BackgroundWriter(self.guard, self._send)
        self.system = SystemMetrics(self.uri, self.guard, lambda run_id, m: self.writer.batch(run_id, m))
        self.artifacts = Artifacts(self.client, self.guard, self.writer)

    @contextlib.contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Run one tracking step; on failure record it and carry on (training matters more)."""
        try:
            yield
        except Exception as exc:
            message = f"{what}: {type(exc).__name__}: {first_line(exc, 1000) if str(exc).strip() else ''}"
            if not self.failures:
                self.warn(
                    f"MLflow tracking failed ({message}); the search goes on and reports what was not recorded"
                )
            self.failures.append(message)

    def close(self) -> None:
        """End this process's tracking threads once the search or run is over: the queued writes
        are finished, a run still sampled stops sampling. The tracker stays usable."""
        for run_id in list(self.system.monitors):
            self.system.stop(run_id)
        self.writer.close()

    def check(self) -> None:
        """Fail fast with a one-line message when the tracking store cannot be reached."""
        try:
            self.client.search_experiments(max_results=1)
        except Exception as exc:
            raise UserError(
                f"MLflow tracking store {redact(self.uri)} is unreachable ({type(exc).__name__}); "
                "start it or pass --tracking-uri"
            ) from exc

    def create_run(self, experiment_id: str, name: str, tags: Mapping[str, str], what: str) -> str | None:
        """A run with its tags in the same write; None (a counted failure, `what`) if MLflow refuses it."""
        with self.guard(what):
            run = self.client.create_run(experiment_id, run_name=name, tags=_tags(tags))
            self.artifacts.known(run.info.run_id, run.info.artifact_uri)
            return str(run.info.run_id)
        return None

    def log(
        self,
        run_id: str | None,
        *,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> None:
        """One batch, now: metrics at step 0, params and tags (passwords removed, cut to MLflow's limits)."""
        if run_id is None:
            return
        batch = Batch()
        batch.add(_metrics(metrics or {}, step=0), _params(params or {}), _tag_list(tags or {}))
        with self.guard("log to run"):
            self._send(run_id, batch)

    def _send(self, run_id: str, batch: Batch) -> None:
        """One `log_batch` (MLflow's client splits it where it passes the server's limits). An
        entry the store refuses (a param key too long, a param changed) would take the rest with
        it: then each write is sent again as it was queued, on its own, and only that one fails."""
        if not batch:
            return
        try:
            self._log_batch(run_id, *batch.merged())
        except Exception as exc:
            if len(batch.parts) < 2 or getattr(exc, "error_code", None) not in REFUSED:
                raise
            for metrics, params, tags in batch.parts:
                with self.guard("log to run"):
                    self._log_batch(run_id, metrics, params, tags)

    def _log_batch(self, run_id: str, metrics: list[Any], params: list[Any], tags: list[Any]) -> None:
        self.client.log_batch(run_id, metrics=metrics, params=params, tags=tags, synchronous=True)

    def log_later(
        self,
        run_id: str | None,
        *,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> None:
        """`log`, into the run's pending batch (`writer`): sent within LINGER_S, or with the close."""
        if run_id is not None:
            self.writer.batch(run_id, params=_params(params or {}), tags=_tag_list(tags or {}))

    def log_epoch(self, run_id: str | None, epoch: int, metrics: Mapping[str, float]) -> None:
        """One epoch's metrics (timed now), into the run's pending batch: training does not wait."""
        if run_id is not None:
            self.writer.batch(run_id, metrics=_metrics(metrics, step=epoch))

    def log_setup(self, run_id: str | None, facts: Mapping[str, Any]) -> None:
        """Training's setup facts as tags (`exptrack.device`, ...), and its dataset as the run's
        input (`log_inputs`: the UI's Datasets column shows its name and digest), both on the
        background writer: training starts without waiting for them."""
        if run_id is None:
            return
        self.log_later(run_id, tags=records.setup_tags(dict(facts)))
        if records.DATASET_FACT in facts:
            self.writer.later(run_id, "log the dataset input", log_dataset_input, self.client, run_id, facts)

    def watch_system(self, run_id: str | None, node_id: str) -> None:
        """Sample the machine onto the run as `system/<node id>/...` until it closes."""
        if run_id is not None:
            self.system.watch(run_id, node_id)

    def close_run(
        self,
        run_id: str | None,
        state: str,
        metrics: Mapping[str, float],
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Stop its system metrics, wait for the run's queued writes, log its last figures with
        what its pending batch holds (one `log_batch`) and close it with the status matching
        `state` (the state itself in a tag, too)."""
        if run_id is None:
            return
        self.system.stop(run_id)  # its last sample joins the pending batch
        batch = self.writer.take(run_id)
        self.writer.wait(run_id)
        self.artifacts.forget(run_id)
        batch.add(_metrics(metrics, step=0), (), _tag_list({records.STATE_TAG: state, **(tags or {})}))
        with self.guard("log to run"):
            self._send(run_id, batch)
        with self.guard(f"close run {run_id}"):
            self.client.set_terminated(run_id, status=records.RUN_STATUS[state])


def _tags(tags: Mapping[str, Any]) -> dict[str, str]:
    """Tag values as MLflow stores them: text, passwords removed, at most 5000 characters."""
    return {k: redact(str(v))[:5000] for k, v in tags.items()}


def _tag_list(tags: Mapping[str, Any]) -> list[Any]:
    from mlflow.entities import RunTag

    return [RunTag(k, v) for k, v in _tags(tags).items()]


def _params(params: Mapping[str, Any]) -> list[Any]:
    """Params as MLflow stores them: text, passwords removed, at most 6000 characters."""
    from mlflow.entities import Param

    return [Param(k, redact(str(v))[:6000]) for k, v in params.items()]


def _metrics(values: Mapping[str, float], step: int) -> list[Any]:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(key, float(value), now, step) for key, value in values.items()]
