"""The `Tracker`: a study's MLflow records (its experiment, the parent run, one nested child run
per trial, metrics, artifacts, statuses and links both ways).

`MlflowClient` with explicit run ids (never the fluent `mlflow.start_run` globals, which break as
soon as two trials run at once). A tracking failure never stops training: each call is guarded,
the failure is counted, and `failures` is reported at the end of the search.
A trial's writes after its run is created (params, config.yaml, setup tags, per-epoch metrics) go
through one background thread of our own, in order, so training does not wait for the store;
`finish_trial` waits for them before closing the run. Not MLflow's async logging: its queue costs
~1 s per run at `set_terminated` (its worker thread polls with a 1 s timeout before it can join).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import os
import platform
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from exptrack import coordination, processes, records, store_schema
from exptrack.errors import UserError, first_line, redact
from exptrack.records import ROLE_TAG, RUN_STATUS, STUDY_TAG, TRIAL_TAG
from exptrack.tracking import store_setup

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# A dead tracking server must not stall each trial for minutes (MLflow's defaults: 7 retries with
# exponential backoff, ~4 min; 120 s timeout): 2 quick retries (~2 s), then the write counts as failed.
# System metrics: MLflow samples every 10 s unless told; 5 s gives a minute-long trial a curve.
# MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL overrides it, MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false turns it off.
SYSTEM_METRICS_INTERVAL_S = 5.0
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


def resolve_tracking_uri(uri: str | None) -> str:
    """Flag, then MLFLOW_TRACKING_URI, then a sqlite file in the working directory. A tracking
    server's `user:password@` moves into MLflow's own credential variables (see below); a PostgreSQL
    URI gets the psycopg 3 driver of the `postgres` extra."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    return coordination.with_postgres_driver(credentials_to_environment(uri))


def credentials_to_environment(uri: str) -> str:
    """`http://user:pw@host` -> `http://host`, with user and password in MLFLOW_TRACKING_USERNAME
    and MLFLOW_TRACKING_PASSWORD (MLflow sends them as basic auth on every request). MLflow prints
    its client's URI ("View run ... at: URL", once per run) and puts it in its error messages, so
    that URI must not hold the password. Other URIs come back unchanged."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return uri
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    os.environ["MLFLOW_TRACKING_USERNAME"] = urllib.parse.unquote(user)
    os.environ["MLFLOW_TRACKING_PASSWORD"] = urllib.parse.unquote(password)
    return urllib.parse.urlunsplit(parts._replace(netloc=host))


class Tracker:
    """MLflow records of one study. Construct with the tracking URI; `check()` before trial 1."""

    def __init__(self, uri: str | None = None, warn: Any = print, create: bool = True) -> None:
        """`create=False` for commands that only read or add to an existing store (results
        commands): the store is then never created, migrated or rebuilt."""
        from mlflow import MlflowClient

        # importing mlflow configured its loggers at INFO; its table-creation lines are noise here
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        self.uri = resolve_tracking_uri(uri)
        if self.uri.startswith(("http://", "https://")):
            for key, value in HTTP_DEFAULTS.items():
                os.environ.setdefault(key, value)  # a user's own setting wins
        if create:
            store_setup.ensure_store(self.uri, warn)  # before MlflowClient, which would create it unguarded
        self.client = MlflowClient(tracking_uri=self.uri)
        self.warn = warn
        self.failures: list[str] = []
        self._pending: dict[str, list[concurrent.futures.Future[Any]]] = {}
        self._monitors: dict[str, Any] = {}  # run id -> its SystemMetricsMonitor
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
            message = f"{what}: {type(exc).__name__}: {first_line(exc, 1000) if str(exc).strip() else ''}"
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
            from mlflow.exceptions import MlflowException

            try:
                return self.client.create_experiment(
                    study_name, tags={STUDY_TAG: study_name, **records.EXPERIMENT_KIND_TAGS}
                )
            except MlflowException as exc:  # another search (other Optuna store) created it just now
                experiment = self.client.get_experiment_by_name(study_name)
                if experiment is None:
                    raise exc from None
        if experiment.lifecycle_stage == "deleted":
            self.client.restore_experiment(experiment.experiment_id)
        return str(experiment.experiment_id)

    def study_runs(self, experiment_id: str, study_name: str) -> list[Any]:
        """Every parent run for a study of this name, oldest first (one per Optuna study). The name
        is compared here, never put in the filter string: MLflow's filter grammar has no escape, so
        a quote in a name (`a'b`) broke the query (issue 25)."""
        runs = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{ROLE_TAG}` = '{records.ROLE_STUDY}'",
            order_by=["attributes.start_time ASC"],
            max_results=1000,
        )
        return [run for run in runs if run.data.tags.get(STUDY_TAG) == study_name]

    def find_study_run(self, experiment_id: str, study_name: str, uid: str | None = None) -> str | None:
        """The parent run of the Optuna study tagged `uid`, else the newest of its name."""
        runs = self.study_runs(experiment_id, study_name)
        mine = [r for r in runs if uid is not None and r.data.tags.get(records.STUDY_UID_TAG) == uid]
        found = mine or runs
        return found[-1].info.run_id if found else None

    def study_run_id(self, study_name: str, uid: str | None = None) -> str | None:
        """The study's parent run, or None when MLflow has no record of the study."""
        with self._guard("find the study run"):
            experiment = self.client.get_experiment_by_name(study_name)
            return self.find_study_run(experiment.experiment_id, study_name, uid) if experiment else None
        return None

    def trial_runs(self, study_name: str, uid: str | None = None) -> list[Any]:
        """Every trial run of a study, in one paged `search_runs` query (not one per trial); with
        `uid`, only those under that Optuna study's parent run (another study may share the name)."""
        experiment = self.client.get_experiment_by_name(study_name)
        if experiment is None:
            return []
        query = f"tags.`{ROLE_TAG}` = '{records.ROLE_TRIAL}'"
        parents = self.study_runs(experiment.experiment_id, study_name) if uid else []
        mine = [p for p in parents if p.data.tags.get(records.STUDY_UID_TAG) == uid]
        if mine:
            query += f" and tags.`{records.PARENT_RUN_TAG}` = '{mine[0].info.run_id}'"
        runs: list[Any] = []
        token = None
        while True:  # 1000 runs a page
            page = self.client.search_runs([experiment.experiment_id], filter_string=query, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def study_experiments(self) -> dict[str, str]:
        """Study name -> experiment id, for the experiments a search created."""
        experiments = self.client.search_experiments(filter_string=f"tags.`{STUDY_TAG}` != ''")
        return {e.name: str(e.experiment_id) for e in experiments}

    def open_study_run(
        self, study_name: str, uid: str, tags: Mapping[str, str], files: list[Path], adopt_untagged: bool
    ) -> tuple[str, str, str | None]:
        """(experiment id, parent run id, another study's parent run or None). The parent run
        belongs to one Optuna study, the one whose `uid` it is tagged with: a new study of the same
        name (its Optuna store reset) gets a new parent run, and the older one is returned third.
        `adopt_untagged`: a study older than the tag takes the untagged parent run of its name."""
        experiment_id = self.experiment_id(study_name)
        runs = self.study_runs(experiment_id, study_name)
        mine = [r for r in runs if r.data.tags.get(records.STUDY_UID_TAG) == uid]
        if not mine and adopt_untagged:
            mine = [r for r in runs if records.STUDY_UID_TAG not in r.data.tags][:1]
        all_tags = {
            ROLE_TAG: records.ROLE_STUDY,
            STUDY_TAG: study_name,
            records.STUDY_UID_TAG: uid,
            records.HOST_TAG: platform.node(),
            **tags,
        }
        if mine:
            run_id = mine[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            self._log(run_id, tags=all_tags)
            return experiment_id, run_id, None
        run_id = self.client.create_run(experiment_id, run_name=study_name, tags=all_tags).info.run_id
        for path in files:
            with self._guard(f"log {path.name} on the study run"):
                self.client.log_artifact(run_id, str(path), artifact_path=records.STUDY_FILES_DIR)
        return experiment_id, run_id, (runs[-1].info.run_id if runs else None)

    def save_runs_view(
        self,
        experiment_id: str,
        study_name: str,
        metric: str,
        maximize: bool,
        params: list[str],
        also: list[str] | None = None,
    ) -> None:
        """The study's saved view of its runs table (`ui_links.runs_view_tag`), which `exp ui` opens."""
        from exptrack.tracking import ui_links

        key, value = ui_links.runs_view_tag(study_name, metric, maximize, params, also or [])
        with self._guard("save the runs table view"):
            self.client.set_experiment_tag(experiment_id, key, value)

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
        tags: Mapping[str, str] | None = None,
    ) -> str | None:
        """Open the trial's nested run (its tags in the same write); None if MLflow is down. Its
        params and config.yaml follow in the background: the run id, which the trial must store
        before training, is the only write training waits for (~5 ms on sqlite)."""
        all_tags = {
            records.PARENT_RUN_TAG: parent_run_id,
            ROLE_TAG: records.ROLE_TRIAL,
            STUDY_TAG: study_name,
            TRIAL_TAG: str(number),
            **{k: redact(str(v))[:5000] for k, v in (tags or {}).items()},
        }
        with self._guard(f"open the run of trial {number}"):
            run = self.client.create_run(
                experiment_id, run_name=records.trial_run_name(number), tags=all_tags
            )
            run_id: str = run.info.run_id
            self.log_later(run_id, params=params)
            self._later(
                run_id,
                f"log the config of trial {number}",
                self.client.log_text,
                run_id,
                config_yaml,
                records.CONFIG_ARTIFACT,
            )
            return run_id
        return None

    def start_run(
        self, experiment_id: str, name: str, tags: Mapping[str, str], params: Mapping[str, str]
    ) -> str:
        """A standalone run (not a trial), e.g. `exp train`'s; raises when MLflow refuses it."""
        run_id = self.client.create_run(experiment_id, run_name=name, tags=dict(tags)).info.run_id
        self.log(run_id, params=params)
        return run_id

    def watch_system(self, run_id: str | None, node_id: str) -> None:
        """Sample CPU, memory, disk and network (and each GPU through NVML, when nvidia-ml-py is
        installed) onto the run as `system/<node id>/...` until `finish_trial`. MLflow's own
        SystemMetricsMonitor, given the run id: the fluent `start_run(log_system_metrics=True)`
        would need the process-wide active run, which concurrent trials cannot share."""
        if run_id is None:
            return
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        with self._guard("start system metrics"):
            if not _system_metrics_enabled():
                return
            monitor = SystemMetricsMonitor(
                run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S, node_id=node_id, tracking_uri=self.uri
            )
            monitor.start()
            self._monitors[run_id] = monitor

    def _stop_watching(self, run_id: str) -> None:
        """Stop the run's system metrics. The monitor logs a sample per full interval and drops
        the last, partial one; in its place one sample taken now is logged (its CPU share covers
        the time since the previous sample), so a trial shorter than the interval still has one."""
        monitor = self._monitors.pop(run_id, None)
        if monitor is None:
            return
        with self._guard("log system metrics"):
            monitor.finish()  # joins its thread: nothing samples concurrently from here on
            for part in monitor.monitors:
                part.clear_metrics()
            monitor.collect_metrics()
            monitor.publish_metrics(monitor.aggregate_metrics())
            monitor.mlflow_logger.flush()

    def log_epoch(self, run_id: str | None, epoch: int, metrics: Mapping[str, float]) -> None:
        """One epoch's metrics, asynchronously: training does not wait for the store."""
        if run_id is None:
            return
        self._later(
            run_id, "log epoch metrics", self.client.log_batch, run_id, metrics=_metrics(metrics, step=epoch)
        )

    def log_later(
        self,
        run_id: str | None,
        *,
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """`log`, on the background thread: the run's `finish_trial` waits for it."""
        if run_id is not None:
            self._later(run_id, "log to run", self._log, run_id, params=params, tags=tags)

    def _later(self, run_id: str, what: str, write: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue one write of `run_id` on the background thread (one thread: writes keep their
        order); a failure is recorded like any guarded call, when `finish_trial` collects it."""

        def guarded() -> None:
            with self._guard(what):
                write(*args, **kwargs)

        self._pending.setdefault(run_id, []).append(self._background.submit(guarded))

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

    def log_setup(self, run_id: str | None, facts: Mapping[str, Any]) -> None:
        """Training's setup facts as tags (`exptrack.device`, ...), and its dataset as the run's
        input (`log_inputs`: the UI's Datasets column shows its name and digest), both on the
        background writer: training starts without waiting for them."""
        if run_id is None:
            return
        self.log_later(run_id, tags=records.setup_tags(dict(facts)))
        if records.DATASET_FACT in facts:
            self._later(run_id, "log the dataset input", self.log_dataset, run_id, facts)

    def log_dataset(self, run_id: str, facts: Mapping[str, Any]) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        spec = str(facts[records.DATASET_FACT])  # digits, imagefolder:/data/pets, ...
        sizes = {key: facts[key] for key in records.DATASET_SIZE_FACTS if key in facts}
        dataset = Dataset(
            name=spec.partition(":")[0],
            digest=str(facts.get(records.DATASET_DIGEST_FACT, "")),
            source_type="exptrack",
            source=json.dumps({"dataset": spec}),
            profile=json.dumps(sizes),
        )
        with self._guard("log the dataset input"):
            tags = [InputTag(records.DATASET_CONTEXT_TAG, "training")]
            self.client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags=tags)])

    def log_text(self, run_id: str | None, text: str, artifact_file: str) -> None:
        """A text file as an artifact (config.yaml, a traceback, the dashboard page)."""
        if run_id is None:
            return
        with self._guard(f"log {artifact_file}"):
            self.client.log_text(run_id, text, artifact_file)

    def finish_trial(
        self,
        run_id: str | None,
        state: str,
        metrics: Mapping[str, float],
        profile: Mapping[str, float | str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Wait for the trial's pending epoch logs, log its final figures (`profile`'s cost figures
        under `profile/`), and close it with the status matching its Optuna state; the state
        itself goes in a tag too, since MLflow shows a pruned run (KILLED) like a failed one."""
        if run_id is None:
            return
        for future in self._pending.pop(run_id, []):
            future.result()  # guarded inside: never raises
        self._stop_watching(run_id)
        costs = {records.profile_metric(k): v for k, v in (profile or {}).items() if not isinstance(v, str)}
        texts = {records.profile_metric(k): v for k, v in (profile or {}).items() if isinstance(v, str)}
        tags = {records.STATE_TAG: state, **texts, **(tags or {})}
        self._log(run_id, metrics={**metrics, **costs}, tags=tags)
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

    def running_trial_runs(self, experiment_id: str, parent_run_id: str | None) -> list[tuple[str, int]]:
        """(run id, trial number) of the trial runs under `parent_run_id` still marked RUNNING."""
        nested = f" and tags.`{records.PARENT_RUN_TAG}` = '{parent_run_id}'" if parent_run_id else ""
        with self._guard("find runs left RUNNING"):
            runs = self.client.search_runs(
                [experiment_id],
                filter_string=f"tags.`{ROLE_TAG}` = '{records.ROLE_TRIAL}' and attributes.status = 'RUNNING'"
                + nested,
                max_results=10000,
            )
            return [(r.info.run_id, int(r.data.tags[TRIAL_TAG])) for r in runs if TRIAL_TAG in r.data.tags]
        return []

    def close_stale_run(self, run_id: str, status: str, reason: str) -> None:
        """Close a run a dead process left RUNNING, saying why."""
        state = {v: k for k, v in RUN_STATUS.items()}.get(status, "FAIL")
        self._log(run_id, tags={records.FAIL_REASON_TAG: reason, records.STATE_TAG: state})
        with self._guard(f"close run {run_id}"):
            self.client.set_terminated(run_id, status=status)

    def log_folder(self, run_id: str | None, folder: Path, artifact_path: str) -> None:
        """Every file in `folder` as an artifact under `artifact_path` (a trace, its table)."""
        if run_id is None or not any(folder.iterdir()):
            return
        with self._guard(f"log {artifact_path}/"):
            self.client.log_artifacts(run_id, str(folder), artifact_path=artifact_path)

    def close_dead_train_runs(self, experiment_ids: list[str] | None = None) -> list[str]:
        """Close the `exp train` runs left RUNNING by a process that is gone (killed, say), as
        FAILED with the reason; in `experiment_ids`, else in every active experiment. Their ids."""
        try:
            ids = experiment_ids or [e.experiment_id for e in self.client.search_experiments()]
            running = f"tags.`{ROLE_TAG}` = '{records.ROLE_TRAIN}' and attributes.status = 'RUNNING'"
            runs = self.client.search_runs(ids, filter_string=running, max_results=1000) if ids else []
        except Exception as exc:  # a repair must not stop the command that tries it
            self.warn(f"exp train runs left RUNNING not looked for ({type(exc).__name__}: {first_line(exc)})")
            return []
        closed = []
        for run in runs:
            owner = run.data.tags.get(records.OWNER_TAG)
            if owner and processes.owner_is_dead(owner):
                reason = f"process {owner} died while the run trained (killed or crashed)"
                self.close_stale_run(run.info.run_id, "FAILED", reason)
                closed.append(run.info.run_id)
        return closed


def _system_metrics_enabled() -> bool:
    """On unless MLflow's own switch says false (its default, off, is for fluent runs)."""
    from mlflow.environment_variables import MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING

    return not MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.defined or bool(
        MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.get()
    )


def _metrics(values: Mapping[str, float], step: int) -> list[Any]:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(key, float(value), now, step) for key, value in values.items()]


def read_trial_runs(study_name: str, uri: str | None, warn: Any = print, uid: str | None = None) -> list[Any]:
    """A stored study's trial runs for a results command (one paged query), or [] when the
    tracking store cannot be read: the Optuna side alone still answers."""
    runs = _read_store(uri, warn, lambda tracker: tracker.trial_runs(study_name, uid))
    return [r for r in runs or [] if TRIAL_TAG in r.data.tags]


def read_experiment_ids(uri: str | None, warn: Any = print) -> dict[str, str]:
    """Study name -> MLflow experiment id for every experiment a search created (one query)."""
    found = _read_store(uri, warn, lambda tracker: tracker.study_experiments())
    return found or {}


def existing_store(uri: str | None, warn: Any = print) -> Tracker | None:
    """A `Tracker` on the MLflow store at `uri` as it is, for a command that must not create,
    migrate or rebuild it; None (with a line saying why, unless there is simply no store yet) when
    there is nothing it can read. A database that is not an MLflow store is a UserError."""
    resolved = resolve_tracking_uri(uri)
    if store_schema.is_database(resolved):
        why = store_setup.unreadable_mlflow(resolved)
        if why:
            if why != "new":
                warn(f"MLflow {redact(resolved)} not read ({why}); showing what Optuna has")
            return None
    return Tracker(uri, warn=warn, create=False)


def _read_store(uri: str | None, warn: Any, read: Any) -> Any:
    """`read(tracker)` for a results command; None, with a warning, when the store cannot be read.
    A store is never created, migrated or rebuilt by looking."""
    tracker = existing_store(uri, warn)
    if tracker is None:
        return None
    try:
        return read(tracker)
    except Exception as exc:
        warn(f"MLflow {redact(tracker.uri)} not read ({type(exc).__name__}); showing what Optuna has")
        return None
