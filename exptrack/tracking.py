"""Every MLflow call: the study's parent run, one nested child run per trial, statuses and links.

`MlflowClient` with explicit run ids (never the fluent `mlflow.start_run` globals, which break as
soon as two trials run at once). A tracking failure never stops training: each call is guarded,
the failure is counted, and `failures` is reported at the end of the search.
Per-epoch metrics go through one background thread of our own: MLflow's async queue costs ~1 s
per run at `set_terminated` (its worker thread polls with a 1 s timeout before it can join).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import platform
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from exptrack import resolvers
from exptrack.errors import UserError, redact

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
ROLE_TAG, STUDY_TAG, TRIAL_TAG = "exptrack.role", "exptrack.study", "exptrack.trial"
# Optuna state -> MLflow run status, the mapping the design promises.
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
# MLflow 3 opens an experiment on its GenAI overview unless it is marked as model training.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# A dead tracking server must not stall each trial for minutes (MLflow's defaults: 7 retries with
# exponential backoff, ~4 min; 120 s timeout): 2 quick retries (~2 s), then the write counts as failed.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def resolve_tracking_uri(uri: str | None) -> str:
    """Flag, then MLFLOW_TRACKING_URI, then a sqlite file in the working directory."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def trial_run_name(number: int) -> str:
    return f"trial-{number:03d}"


class Tracker:
    """MLflow records of one study. Construct with the tracking URI; `check()` before trial 1."""

    def __init__(self, uri: str | None = None, warn: Any = print) -> None:
        from mlflow import MlflowClient

        # importing mlflow configured its loggers at INFO; its table-creation lines are noise here
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        self.uri = resolve_tracking_uri(uri)
        use_store_for_weights(self.uri)
        if self.uri.startswith(("http://", "https://")):
            for key, value in HTTP_DEFAULTS.items():
                os.environ.setdefault(key, value)  # a user's own setting wins
        self.client = MlflowClient(tracking_uri=self.uri)
        self.warn = warn
        self.failures: list[str] = []
        self._pending: dict[str, list[concurrent.futures.Future[Any]]] = {}
        self._background = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="exptrack-mlflow"
        )

    # --- guarded calls ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Run one tracking step; on failure record it and carry on (training matters more)."""
        try:
            yield
        except Exception as exc:
            message = f"{what}: {type(exc).__name__}: {redact(str(exc).splitlines()[0] if str(exc) else '')}"
            if not self.failures:
                self.warn(
                    f"MLflow tracking failed ({message}); the search goes on and reports what was not recorded"
                )
            self.failures.append(message)

    def check(self) -> None:
        """Fail fast with a one-line message when the tracking store cannot be reached."""
        try:
            self.client.search_experiments(max_results=1)
        except Exception as exc:
            raise UserError(
                f"MLflow tracking store {redact(self.uri)} is unreachable ({type(exc).__name__}); "
                "start it or pass --tracking-uri"
            ) from exc

    # --- the study's parent run ----------------------------------------------------------------

    def experiment_id(self, study_name: str) -> str:
        experiment = self.client.get_experiment_by_name(study_name)
        if experiment is None:
            return self.client.create_experiment(study_name, tags={STUDY_TAG: study_name, **EXPERIMENT_KIND})
        if experiment.lifecycle_stage == "deleted":
            self.client.restore_experiment(experiment.experiment_id)
        return str(experiment.experiment_id)

    def find_study_run(self, experiment_id: str, study_name: str) -> str | None:
        runs = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{ROLE_TAG}` = 'study' and tags.`{STUDY_TAG}` = '{study_name}'",
            order_by=["attributes.start_time ASC"],
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def study_run_id(self, study_name: str) -> str | None:
        """The study's parent run, or None when MLflow has no record of the study."""
        with self._guard("find the study run"):
            experiment = self.client.get_experiment_by_name(study_name)
            return self.find_study_run(experiment.experiment_id, study_name) if experiment else None
        return None

    def trial_runs(self, study_name: str) -> list[Any]:
        """Every trial run of a study, in one paged `search_runs` query (not one per trial)."""
        experiment = self.client.get_experiment_by_name(study_name)
        if experiment is None:
            return []
        runs: list[Any] = []
        token = None
        while True:  # 1000 runs a page
            page = self.client.search_runs(
                [experiment.experiment_id],
                filter_string=f"tags.`{ROLE_TAG}` = 'trial'",
                page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def open_study_run(self, study_name: str, tags: Mapping[str, str], files: list[Path]) -> tuple[str, str]:
        """(experiment id, parent run id): the study's existing parent run, or a new one."""
        experiment_id = self.experiment_id(study_name)
        run_id = self.find_study_run(experiment_id, study_name)
        all_tags = {ROLE_TAG: "study", STUDY_TAG: study_name, "host": platform.node(), **tags}
        if run_id is None:
            run = self.client.create_run(experiment_id, run_name=study_name, tags=all_tags)
            run_id = run.info.run_id
            for path in files:
                with self._guard(f"log {path.name} on the study run"):
                    self.client.log_artifact(run_id, str(path), artifact_path="study")
        else:
            self.client.update_run(run_id, status="RUNNING")
            self._log(run_id, tags=all_tags)
        return experiment_id, run_id

    def close_study_run(self, run_id: str, status: str, metrics: Mapping[str, float]) -> None:
        self._log(run_id, metrics=metrics)
        with self._guard("close the study run"):
            self.client.set_terminated(run_id, status=status)

    # --- one trial's child run ---------------------------------------------------------------

    def start_trial(
        self,
        experiment_id: str,
        parent_run_id: str,
        study_name: str,
        number: int,
        params: Mapping[str, str],
        config_yaml: str,
    ) -> str | None:
        """Open the trial's nested run with its params and config; None if MLflow is down."""
        tags = {
            "mlflow.parentRunId": parent_run_id,
            ROLE_TAG: "trial",
            STUDY_TAG: study_name,
            TRIAL_TAG: str(number),
        }
        with self._guard(f"open the run of trial {number}"):
            run = self.client.create_run(experiment_id, run_name=trial_run_name(number), tags=tags)
            run_id = run.info.run_id
            self._log(run_id, params=params)
            with self._guard(f"log the config of trial {number}"):
                self.client.log_text(run_id, config_yaml, "config.yaml")
            return run_id
        return None

    def log_epoch(self, run_id: str | None, epoch: int, metrics: Mapping[str, float]) -> None:
        """One epoch's metrics, asynchronously: training does not wait for the store."""
        if run_id is None:
            return
        batch = _metrics(metrics, step=epoch)
        future = self._background.submit(self.client.log_batch, run_id, metrics=batch)
        self._pending.setdefault(run_id, []).append(future)

    def log(
        self,
        run_id: str | None,
        *,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        if run_id is not None:
            self._log(run_id, metrics=metrics, params=params, tags=tags)

    def log_text(self, run_id: str | None, text: str, artifact_file: str) -> None:
        if run_id is None:
            return
        with self._guard(f"log {artifact_file}"):
            self.client.log_text(run_id, text, artifact_file)

    def finish_trial(self, run_id: str | None, state: str, metrics: Mapping[str, float]) -> None:
        """Wait for the trial's pending epoch logs, log its final figures, and close it with the
        status matching its Optuna state."""
        if run_id is None:
            return
        for future in self._pending.pop(run_id, []):
            with self._guard("log epoch metrics"):
                future.result()
        self._log(run_id, metrics=metrics)
        with self._guard(f"close run {run_id}"):
            self.client.set_terminated(run_id, status=RUN_STATUS[state])

    def _log(
        self,
        run_id: str,
        *,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        from mlflow.entities import Param, RunTag

        with self._guard("log to run"):
            self.client.log_batch(
                run_id,
                metrics=_metrics(metrics or {}, step=0),
                params=[Param(k, redact(str(v))[:6000]) for k, v in (params or {}).items()],
                tags=[RunTag(k, redact(str(v))[:5000]) for k, v in (tags or {}).items()],
                synchronous=True,
            )

    def running_trial_runs(self, experiment_id: str) -> list[tuple[str, int]]:
        """(run id, trial number) of the experiment's trial runs still marked RUNNING."""
        with self._guard("find runs left RUNNING"):
            runs = self.client.search_runs(
                [experiment_id],
                filter_string=f"tags.`{ROLE_TAG}` = 'trial' and attributes.status = 'RUNNING'",
                max_results=10000,
            )
            return [(r.info.run_id, int(r.data.tags[TRIAL_TAG])) for r in runs if TRIAL_TAG in r.data.tags]
        return []

    def close_stale_run(self, run_id: str, status: str, reason: str) -> None:
        """Close a run a dead process left RUNNING, saying why."""
        self._log(run_id, tags={"exptrack.fail_reason": reason})
        with self._guard(f"close run {run_id}"):
            self.client.set_terminated(run_id, status=status)

    def log_file(self, run_id: str | None, name: str, content: str) -> None:
        """A text file as an artifact (e.g. a traceback); written via a temporary directory."""
        if run_id is None:
            return
        with self._guard(f"log {name}"), tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(content)
            self.client.log_artifact(run_id, str(path))


def _metrics(values: Mapping[str, float], step: int) -> list[Any]:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(key, float(value), now, step) for key, value in values.items()]


# --- weights from MLflow: `--set weights=runs:/RUN_ID/model` or `models:/NAME/VERSION` ------------


# The store `runs:/` and `models:/` resolve against: the last Tracker's, else the default one.
_weights_store: list[str] = []


def use_store_for_weights(uri: str) -> None:
    """Resolve `runs:/` and `models:/` weights against this store (the search's --tracking-uri),
    also when weights are checked before any Tracker exists."""
    _weights_store[:] = [uri]


def _mlflow_state_dict(uri: str) -> dict[str, Any]:
    """The state dict of a model logged with `mlflow.pytorch.log_model` (as `exp train` does)."""
    import mlflow.pytorch

    store = (_weights_store or [resolve_tracking_uri(None)])[0]
    try:
        with _fluent_stores(store):  # load_model resolves runs:/ and models:/ through the fluent URIs
            model = mlflow.pytorch.load_model(uri, map_location="cpu")
    except Exception as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:150]
        raise UserError(
            f"weights={uri}: MLflow could not load this model ({first}); "
            f"check the URI and the store ({redact(store)}, set by --tracking-uri / MLFLOW_TRACKING_URI)"
        ) from exc
    return model.state_dict()


@contextlib.contextmanager
def _fluent_stores(store: str) -> Iterator[None]:
    """Point MLflow's fluent tracking and registry URIs at `store` for one call, then put back
    exactly what was there: `mlflow.set_*_uri` also writes MLFLOW_*_URI into the environment,
    which would otherwise pin every later call (and child process) to this store."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry
    from mlflow.tracking._tracking_service import utils as tracking

    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved_env = {key: os.environ.get(key) for key in keys}
    saved = tracking._tracking_uri, registry._registry_uri
    try:
        mlflow.set_tracking_uri(store)
        mlflow.set_registry_uri(store)
        yield
    finally:
        mlflow.set_tracking_uri(saved[0])  # type: ignore[arg-type]  # None = back to the default
        registry._registry_uri = saved[1]
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


for _scheme in ("runs", "models"):
    resolvers.register_resolver(_scheme)(_mlflow_state_dict)
