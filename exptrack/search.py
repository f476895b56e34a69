"""The Optuna side of a search: the study in its storage, the trial budget and the loop around the
per-trial objective (`objective.py`), with repairs at start and the study's dashboard as it goes.

Ask/tell drives each trial: `study.ask()` -> sample a `TrialConfig` -> open its MLflow run ->
`train.fit` -> `study.tell(...)` -> close the run with the status matching the trial's state.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState

from exptrack import dashboards, locks, objective, preflight, recovery, resume, signals
from exptrack.errors import UserError, redact
from exptrack.objective import Progress, TrialReporter
from exptrack.samplers import PRUNERS, SAMPLERS, make_pruner, make_sampler
from exptrack.stores import (
    DEFAULT_STORAGE,
    FAIL_REASON_ATTR,
    RUN_ID_ATTR,
    load_existing_study,
    resolve_storage,
)
from exptrack.study import Study
from exptrack.tracking import Tracker

__all__ = [
    "DEFAULT_STORAGE",
    "PRUNERS",
    "RUN_ID_ATTR",
    "SAMPLERS",
    "Progress",
    "Search",
    "SearchOptions",
    "TrialReporter",
    "load_existing_study",
    "make_pruner",
    "make_sampler",
    "resolve_storage",
]

MAX_CONSECUTIVE_FAILURES = 5
DASHBOARD_EVERY_S = 30.0  # a page inlines 4.8 MB of plotly.js: re-render at most this often, and at the end
BUDGET_POLL_S = 0.5  # a worker whose budget is all running elsewhere looks again this often
optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


@dataclasses.dataclass(frozen=True)
class SearchOptions:
    trials: int
    timeout: float | None = None  # seconds for this invocation
    storage: str | None = None
    study_name: str | None = None
    sampler: str | None = None  # None: the study file's choice
    pruner: str | None = None
    seed: int | None = None
    max_failures: int = MAX_CONSECUTIVE_FAILURES  # consecutive failed trials that stop the search
    new_study: bool = False  # a changed study gets a fresh name instead of being refused
    worker: bool = False  # one of several processes: the coordinator closes the study's run


@dataclasses.dataclass
class SearchSummary:
    study_name: str
    experiment_id: str | None
    parent_run_id: str | None
    finished: int
    ran: int  # trials this invocation ran
    best: list[optuna.trial.FrozenTrial]
    tracking_failures: list[str]
    unrecorded: list[int] = dataclasses.field(default_factory=list)  # trials without an MLflow run


class TooManyFailures(UserError):
    """`--max-failures` trials failed in a row: something is wrong with every trial, not one."""


def counted_trials(study: optuna.Study) -> int:
    """Trials that count toward --trials: those that ran to an end (complete or pruned)."""
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


class Search:
    """One study's search in this process."""

    def __init__(
        self,
        study: Study,
        options: SearchOptions,
        tracker: Tracker | None,
        progress: Progress | None = None,
        warn: Callable[[str], None] = print,
        prepared: preflight.Prepared | None = None,  # the CLI's own preflight, not repeated
    ) -> None:
        self.spec, self.options, self.tracker, self.progress, self.warn = (
            study,
            options,
            tracker,
            progress,
            warn,
        )
        self.name = options.study_name or study.name
        self.storage_url = resolve_storage(options.storage)
        preflight.check_storage_url(self.storage_url)
        prepared = prepared or preflight.prepare(study, options.sampler, options.pruner, options.seed)
        self.space, self.sampler, self.pruner = prepared.space, prepared.sampler, prepared.pruner
        self.dashboard = prepared.dashboard
        self.lock = locks.storage_lock(self.storage_url)
        self.study = self._open_study()
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.unrecorded: list[int] = []
        self._dashboard_at = -math.inf

    def _open_study(self) -> optuna.Study:
        """Create or load the study, once per machine at a time (several workers may start at once)."""
        with self.lock:
            storage = self._storage()
            current = {
                "direction": self.spec.direction,
                "metric": self.spec.metric,
                "search_space": self.space.describe(),
            }
            name = resume.check(storage, self.name, current, self.options.new_study)
            if name != self.name:
                self.warn(f"--new-study: study {self.name!r} exists; this search is a new study {name!r}")
                self.name = name
            study = optuna.create_study(
                study_name=self.name,
                storage=storage,
                sampler=self.sampler,
                pruner=self.pruner,
                direction=self.spec.direction,  # type: ignore[arg-type]  # Study checks maximize|minimize
                load_if_exists=True,
            )
            attrs = {
                "metric": self.spec.metric,
                "search_space": current["search_space"],
                "fixed": dict(self.spec.fixed),
            }
            for key, value in attrs.items():
                if key not in study.user_attrs:
                    study.set_user_attr(key, value)
        return study

    def _storage(self) -> optuna.storages.RDBStorage:
        try:
            return optuna.storages.RDBStorage(
                self.storage_url, engine_kwargs=_engine_kwargs(self.storage_url)
            )
        except Exception as exc:
            raise UserError(
                f"Optuna storage {redact(self.storage_url)} cannot be opened ({type(exc).__name__}); fix --storage"
            ) from exc

    def run(self) -> SearchSummary:
        if self.progress:
            self.progress.start(counted_trials(self.study), self.options.trials)
        with self.lock:  # the first of several workers creates the experiment and the study's run
            self.open_tracking()
        recovery.repair(self.study, self.tracker, self.experiment_id, self.warn)
        started, ran, failures_in_row = time.monotonic(), 0, 0
        status = "FAILED"
        try:
            while counted_trials(self.study) < self.options.trials:
                if self.options.timeout is not None and time.monotonic() - started > self.options.timeout:
                    break
                signals.check()
                state = self.run_trial()
                if state is None:  # the rest of the budget is running in other workers
                    recovery.repair_trials(self.study, self.tracker)
                    time.sleep(BUDGET_POLL_S)
                    continue
                self.refresh_dashboard()
                ran += 1
                failures_in_row = failures_in_row + 1 if state == "FAIL" else 0
                if failures_in_row >= self.options.max_failures:
                    raise TooManyFailures(
                        f"{failures_in_row} trials failed in a row (last: {self._last_fail_reason()}); "
                        "the search stopped. Fix the cause (traceback.txt on the failed runs) or raise --max-failures"
                    )
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            self._close_tracking(status)
        return self.summary(ran)

    def run_trial(self) -> str | None:
        """Ask, train, tell; the trial's final state name, or None when the budget is all taken."""
        trial = self._ask()
        if trial is None:
            return None
        return objective.run_trial(self._context(), trial)

    def _ask(self) -> optuna.Trial | None:
        """A new trial, unless finished + running trials already fill --trials. Under the storage
        lock, so K workers never start more trials than the budget between them."""
        with self.lock:
            taken = self.study.get_trials(
                deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
            )
            if len(taken) >= self.options.trials:
                return None
            trial = self.study.ask()
            trial.set_user_attr(recovery.WORKER_ATTR, recovery.worker_id())
        return trial

    def _context(self) -> objective.TrialContext:
        return objective.TrialContext(
            self.study,
            self.spec,
            self.space,
            self.name,
            self.storage_url,
            self.tracker,
            self.experiment_id,
            self.parent_run_id,
            self.progress,
            self.warn,
            self.unrecorded,
        )

    def _last_fail_reason(self) -> str:
        failed = self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        return str(failed[-1].user_attrs.get(FAIL_REASON_ATTR, "?"))[:200] if failed else "?"

    def summary(self, ran: int) -> SearchSummary:
        complete = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        reverse = self.spec.direction == "maximize"
        best = sorted(complete, key=lambda t: t.value if t.value is not None else -math.inf, reverse=reverse)
        return SearchSummary(
            self.name,
            self.experiment_id,
            self.parent_run_id,
            counted_trials(self.study),
            ran,
            best[:5],
            list(self.tracker.failures) if self.tracker else [],
            list(self.unrecorded),
        )

    def open_tracking(self) -> None:
        if self.tracker is None:
            return
        tags = {
            "storage": redact(self.storage_url),
            "sampler": type(self.sampler).__name__,
            "pruner": type(self.pruner).__name__,
            "metric": self.spec.metric,
            "direction": self.spec.direction,
            "optuna_study": self.name,
        }
        files = [p for p in (self.spec.source_path, self.spec.search_space_path()) if p is not None]
        self.experiment_id, self.parent_run_id = self.tracker.open_study_run(self.name, tags, files)
        self.tracker.log(self.parent_run_id, params={"search_space": str(self.space.describe())})

    def refresh_dashboard(self, force: bool = False) -> None:
        """Re-render the study's dashboard onto its parent run as `dashboard.html`."""
        if self.tracker is None or self.parent_run_id is None or self.dashboard is None:
            return
        if not force and time.monotonic() - self._dashboard_at < DASHBOARD_EVERY_S:
            return
        self._dashboard_at = time.monotonic()
        self.tracker.log_file(
            self.parent_run_id, "dashboard.html", dashboards.render(self.study, self.dashboard)
        )

    def _close_tracking(self, status: str) -> None:
        if self.tracker is None or self.parent_run_id is None:
            return
        self.refresh_dashboard(force=True)
        if self.experiment_id is not None:  # runs whose close failed while tracking was down
            recovery.repair_runs(self.study, self.tracker, self.experiment_id)
        if self.options.worker:  # the coordinator closes the study's run once every worker is done
            return
        self.close_study_run(status)

    def close_study_run(self, status: str) -> None:
        if self.tracker is None or self.parent_run_id is None:
            return
        metrics: dict[str, float] = {"finished_trials": float(counted_trials(self.study))}
        best = self.summary(0).best
        if best and best[0].value is not None:
            metrics[f"best_{self.spec.metric}"] = best[0].value
        self.tracker.close_study_run(self.parent_run_id, status, metrics)


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):  # several processes on one file: wait for the lock, don't fail
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True}
