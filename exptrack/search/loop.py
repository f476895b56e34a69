"""The search loop: the study in its Optuna storage, the trial budget, and the loop that asks for
trials within it, with repairs at the start and the study's dashboard refreshed as trials end.

Ask/tell drives each trial (`trial.run_trial`): `study.ask()` -> sample a `TrialConfig` -> open
its MLflow run -> `fit` -> `study.tell(...)` -> close the run with the status matching the state.
"""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from exptrack import coordination, records
from exptrack.errors import UserError, redact
from exptrack.search import changed_study, ownership, preflight, repair, signals, trial, warmstart
from exptrack.search.trial import Progress
from exptrack.study import Study
from exptrack.study_store import (
    absolute_url,
    counted_trials,
    open_storage,
    ranked,
    resolve_storage,
)
from exptrack.tracking.tracker import Tracker

MAX_CONSECUTIVE_FAILURES = 5
DASHBOARD_EVERY_S = 30.0  # a page inlines 4.8 MB of plotly.js: re-render at most this often, and at the end
BUDGET_POLL_S = 0.5  # a worker whose budget is all running elsewhere looks again this often
# A worker killed on another machine: its trial is failed and retried this long after its last
# heartbeat. Minutes: a trial's heartbeat must not miss it while its database restarts.
GRACE_PERIOD_S = 180
optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
# ask/tell with Optuna's heartbeat is what we mean: our loop records it (search.ownership)
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")

DashboardRenderer = Callable[[optuna.Study], str]  # the study -> a standalone HTML page


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
    new_study: bool = False  # a changed study runs as NAME-2 instead of being refused
    worker: bool = False  # one of several processes: the coordinator closes the study's run
    tracking_uri: str | None = None
    tracking: bool = True  # False: Optuna records only (--no-tracking)
    workers: int = 1  # processes working on the study at once
    grace_period: int = GRACE_PERIOD_S  # seconds without a heartbeat before a trial counts as abandoned
    gpus: str | None = None  # `all` or `0,1`: one worker per GPU slot on this machine
    per_gpu: int = 1  # workers per GPU
    profile_trials: int = 0  # trace the first K trials this invocation runs (torch.profiler)
    enqueue: tuple[Path, ...] = ()  # config files or directories queued as the next trials
    from_study: str | None = None  # an earlier study whose best trials are queued first
    from_top: int = 3  # how many of them


@dataclasses.dataclass
class SearchSummary:
    study_name: str
    metric: str
    experiment_id: str | None
    parent_run_id: str | None
    finished: int
    ran: int  # trials this invocation ran
    best: list[optuna.trial.FrozenTrial]  # best first; several objectives: the Pareto front
    tracking_uri: str | None  # None without tracking
    tracking_failures: list[str]
    unrecorded: list[int] = dataclasses.field(default_factory=list)  # trials without an MLflow run
    notes: list[str] = dataclasses.field(default_factory=list)  # what the summary must also say
    objectives: list[str] = dataclasses.field(default_factory=list)  # every objective, in value order

    @property
    def pareto(self) -> bool:
        return len(self.objectives) > 1


class TooManyFailures(UserError):
    """`--max-failures` trials failed in a row: something is wrong with every trial, not one."""


class Search:
    """One study's search in this process. `trial.run_trial` reads the stores and the study's
    declaration from here; workers call `open`, `finish` and `summary`."""

    def __init__(
        self,
        study: Study,
        options: SearchOptions,
        tracker: Tracker | None,
        progress: Progress | None = None,
        warn: Callable[[str], None] = print,
        prepared: preflight.Prepared | None = None,  # run_search's own preflight, not repeated
        render_dashboard: DashboardRenderer | None = None,
        starts: Sequence[warmstart.Start] = (),  # queued once the study exists (run_search checked them)
    ) -> None:
        self.spec, self.options, self.tracker = study, options, tracker
        self.starts = starts
        self.progress, self.warn, self.render_dashboard = progress, warn, render_dashboard
        self.name = options.study_name or study.name
        self.storage_url = resolve_storage(options.storage)
        if prepared is None:
            preflight.check_storage_url(self.storage_url)
            prepared = preflight.prepare(study, options.sampler, options.pruner, options.seed)
        self.space, self.sampler, self.pruner = prepared.space, prepared.sampler, prepared.pruner
        self.prepared = prepared
        self.lock = coordination.store_lock(self.storage_url)
        self.uid = ""  # the Optuna study's identity (records.STUDY_UID_ATTR), set by _open_study
        self.adopt_untagged = False  # a study from before the identity: its untagged parent run is its own
        self.constraints, self.learns_infeasible = prepared.constraints, prepared.learns_infeasible
        self.study = self._open_study()
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.unrecorded: list[int] = []  # trials whose MLflow run could not be opened (tracking outage)
        self.notes: list[str] = []
        self.profile_trials_left = options.profile_trials
        self._dashboard_at = -math.inf

    def _open_study(self) -> optuna.Study:
        """Create or load the study under the store lock (workers on any machine may start at once)."""
        storage = open_storage(self.storage_url, self.options.grace_period)
        with self.lock:
            declared = changed_study.declaration(self.spec, self.space.describe())
            name = changed_study.check(storage, self.name, declared, self.options.new_study)
            if name != self.name:
                verb = "continues" if changed_study.stored_declaration(storage, name) else "starts"
                self.warn(
                    f"--new-study: study {self.name!r} differs from the study file; this search {verb} study {name!r}"
                )
                self.name = name
            study = optuna.create_study(
                study_name=self.name,
                storage=storage,
                sampler=self.sampler,
                pruner=self.pruner,
                directions=list(self.spec.directions),  # type: ignore[arg-type]  # Study checks them
                load_if_exists=True,
            )
            attrs = {
                records.STUDY_METRIC_ATTR: self.spec.metric,
                records.STUDY_OBJECTIVES_ATTR: list(self.spec.objectives),
                records.STUDY_CONSTRAINTS_ATTR: [str(c) for c in self.constraints],
                records.STUDY_SPACE_ATTR: declared.search_space,
                records.STUDY_FIXED_ATTR: dict(self.spec.fixed),
            }
            stored = study.user_attrs  # one read: each access is a storage query and a deep copy
            if records.STUDY_UID_ATTR not in stored:
                # created by an exptrack without study identities; one with no trial yet has no
                # parent run to keep
                self.adopt_untagged = bool(study.get_trials(deepcopy=False))
                attrs[records.STUDY_UID_ATTR] = uuid.uuid4().hex
            for key, value in attrs.items():
                if key not in stored:
                    study.set_user_attr(key, value)
            dashboard = self.spec.dashboard_path() if self.render_dashboard else None
            if dashboard:  # `exp report` draws what the search drew, from any directory
                study.set_user_attr(
                    records.STUDY_DASHBOARD_ATTR, {"path": str(dashboard), "text": dashboard.read_text()}
                )
            if study.metric_names is None:  # optuna-dashboard and the plots name the objectives
                study.set_metric_names(list(self.spec.objectives))
            if not self.options.worker:  # the coordinator queues them, once
                warmstart.enqueue(study, self.starts, self.warn)
            self.uid = str(stored.get(records.STUDY_UID_ATTR, attrs.get(records.STUDY_UID_ATTR)))
            self._join(study)
        return study

    def _join(self, study: optuna.Study) -> None:
        """Count this process in (hold the lock). With --seed, the k-th process to join samples
        from its own stream derived from the study seed: k = 0 keeps the seed itself, so a seeded
        study stays repeatable, and workers (or a resumed search) never replay each other's points."""
        joined = int(study._storage.get_study_system_attrs(study._study_id).get(records.STUDY_JOINS_ATTR, 0))
        study._storage.set_study_system_attr(study._study_id, records.STUDY_JOINS_ATTR, joined + 1)
        if self.options.seed is not None and joined:
            study.sampler = self.sampler = self.prepared.sampler_seeded(
                worker_seed(self.options.seed, joined)
            )

    # --- the whole search -------------------------------------------------------------------

    def run(self) -> SearchSummary:
        """Trials until the study has `--trials` finished ones (or the timeout); closes the study run."""
        if self.progress:
            self.progress.start(counted_trials(self.study), self.options.trials, self.spec.metric)
        self.open()
        started, ran, failures_in_row = time.monotonic(), 0, 0
        status = "FAILED"
        try:
            while counted_trials(self.study) < self.options.trials:
                if self.options.timeout is not None and time.monotonic() - started > self.options.timeout:
                    break
                signals.check()
                state = self.run_trial()
                if state is None:  # the rest of the budget is running in other workers
                    time.sleep(BUDGET_POLL_S)  # the next ask fails theirs if they die
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

    def open(self) -> None:
        """The study's MLflow experiment and parent run (the first of several workers, on any
        machine, creates them under the store lock), then the repair of what dead processes left."""
        with self.lock:
            self._open_tracking()
        repair.repair(self.study, self.lock, self.tracker, self.experiment_id, self.parent_run_id, self.warn)

    def finish(self, status: str) -> None:
        """After every worker is done: repair what they left, close the study's run with `status`
        (unless workers elsewhere still run trials: the last one out closes it)."""
        repair.repair(self.study, self.lock, self.tracker, self.experiment_id, self.parent_run_id, self.warn)
        self._close_study_run_if_last(status)

    def run_trial(self) -> str | None:
        """Ask, train, tell; the trial's final state name, or None when the budget is all taken.
        The ask fails abandoned trials first and is exact across workers (`ownership.ask`)."""
        asked, abandoned = ownership.ask(self.study, self.lock, self.options.trials)
        repair.report_abandoned(self.tracker, abandoned, self.warn)
        if asked is None:
            return None
        with ownership.Heartbeat(self.study, asked._trial_id):
            return trial.run_trial(self, asked)

    def _last_fail_reason(self) -> str:
        failed = self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        return str(failed[-1].user_attrs.get(records.FAIL_REASON_ATTR, "?"))[:200] if failed else "?"

    def best(self) -> list[optuna.trial.FrozenTrial]:
        """Feasible complete trials best first; with several objectives, the Pareto front."""
        return ranked(self.study)

    def summary(self, ran: int = 0) -> SearchSummary:
        return SearchSummary(
            self.name,
            self.spec.metric,
            self.experiment_id,
            self.parent_run_id,
            counted_trials(self.study),
            ran,
            self.best()[: 10 if self.spec.multi_objective else 5],
            self.tracker.uri if self.tracker else None,
            list(self.tracker.failures) if self.tracker else [],
            list(self.unrecorded),
            list(self.notes),
            list(self.spec.objectives),
        )

    # --- the study's MLflow run ---------------------------------------------------------------

    def _open_tracking(self) -> None:
        if self.tracker is None:
            return
        tags = {
            records.STORAGE_TAG: redact(absolute_url(self.storage_url)),
            records.SAMPLER_TAG: type(self.sampler).__name__,
            records.PRUNER_TAG: type(self.pruner).__name__,
            records.METRIC_TAG: ",".join(self.spec.objectives),
            records.DIRECTION_TAG: ",".join(self.spec.directions),
            records.OPTUNA_STUDY_TAG: self.name,
        }
        if self.constraints:
            tags[records.CONSTRAINTS_TAG] = ", ".join(map(str, self.constraints))
        files = [p for p in (self.spec.source_path, self.spec.search_space_path()) if p is not None]
        self.experiment_id, self.parent_run_id, other = self.tracker.open_study_run(
            self.name, self.uid, tags, files, self.adopt_untagged
        )
        if other is not None:
            self.notes.append(
                f"MLflow experiment {self.name!r} already held parent run {other} of another Optuna "
                f"study named {self.name!r} (its Optuna store was reset or replaced); this study's "
                f"trials are under a new parent run {self.parent_run_id}"
            )
        self.tracker.log(self.parent_run_id, params={records.SEARCH_SPACE_PARAM: str(self.space.describe())})
        maximize = self.spec.direction == "maximize"
        first, *others = (_mlflow_metric(name) for name in self.spec.objectives)
        self.tracker.save_runs_view(
            self.experiment_id, self.name, first, maximize, self.space.names(), others
        )

    def refresh_dashboard(self, force: bool = False) -> None:
        """Re-render the study's dashboard onto its parent run as `dashboard.html`."""
        if self.tracker is None or self.parent_run_id is None or self.render_dashboard is None:
            return
        if not force and time.monotonic() - self._dashboard_at < DASHBOARD_EVERY_S:
            return
        self._dashboard_at = time.monotonic()
        self.tracker.log_text(
            self.parent_run_id, self.render_dashboard(self.study), records.DASHBOARD_ARTIFACT
        )

    def _close_tracking(self, status: str) -> None:
        if self.tracker is None or self.parent_run_id is None:
            return
        self.refresh_dashboard(force=True)
        if self.experiment_id is not None:  # runs whose close failed while tracking was down
            repair.repair_runs(self.study, self.tracker, self.experiment_id, self.parent_run_id)
        if self.options.worker:  # the coordinator closes the study's run once every worker is done
            return
        self._close_study_run_if_last(status)

    def _close_study_run_if_last(self, status: str) -> None:
        """The last worker out, on any machine, closes the study's run: none of its trials runs."""
        with self.lock:
            running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not running:
            self._close_study_run(status)

    def _close_study_run(self, status: str) -> None:
        if self.tracker is None or self.parent_run_id is None:
            return
        self.tracker.close_study_run(self.parent_run_id, status, self._study_metrics())

    def _study_metrics(self) -> dict[str, float]:
        """finished_trials and best_<objective> for each objective (over the feasible complete
        trials; with several objectives each one's best sits on the Pareto front), pareto_front_size."""
        metrics: dict[str, float] = {records.FINISHED_TRIALS_METRIC: float(counted_trials(self.study))}
        best = self.best()
        if self.spec.multi_objective:
            metrics[records.PARETO_SIZE_METRIC] = float(len(best))
        for index, (metric, direction) in enumerate(self.spec.objectives.items()):
            values = [t.values[index] for t in best if t.values]
            if values:
                metrics[f"{records.BEST_PREFIX}{metric}"] = (max if direction == "maximize" else min)(values)
        return metrics


def _mlflow_metric(figure: str) -> str:
    """An objective's name on a trial's MLflow run: an epoch metric as is, a cost figure under `profile/`."""
    return figure if figure in records.EPOCH_METRICS else records.profile_metric(figure)


def worker_seed(seed: int, index: int) -> int:
    """Worker `index`'s sampler seed: independent streams from one study seed (numpy's SeedSequence)."""
    if index == 0:
        return seed
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
