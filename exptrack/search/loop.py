"""The search loop: trials asked within the study's budget until it is met (or the timeout, or
too many failures in a row), with repairs at the start and the dashboard refreshed as trials end.

`open_search` creates or joins the study (`study_setup`); `run` is the loop; each trial is
`trial.run_trial` on a frozen `TrialContext`, ask -> sample -> open its MLflow run -> `fit` ->
tell -> close the run with the status matching the state. The parent run's open, refresh and
close are `study_run`'s; repairs after a kill are `repair`'s.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import optuna
from optuna.trial import TrialState

from exptrack.errors import UserError
from exptrack.search import checkpoints, ownership, preflight, repair, signals, study_run, sync, warmstart
from exptrack.search.options import SearchOptions
from exptrack.search.study_run import Dashboard, DashboardRenderer, StudyRun
from exptrack.search.study_setup import StoredStudy, create_study
from exptrack.search.trial import Progress, TrialContext, TrialOutcome, run_trial
from exptrack.stores import backends, optuna_private
from exptrack.stores.locks import StoreLock
from exptrack.study import Study
from exptrack.study_store import counted_trials, ranked, record
from exptrack.tracking import journal, trial_log
from exptrack.tracking.journal import Journal
from exptrack.tracking.tracker import Tracker

BUDGET_POLL_S = 0.5  # a worker whose budget is all running elsewhere looks again this often


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
    pending: int = 0  # trials whose records a journal still holds (exit code sync.PENDING_EXIT)
    pending_line: str = ""  # the one final line saying how many, where, and the command that writes them

    @property
    def pareto(self) -> bool:
        return len(self.objectives) > 1


class TooManyFailures(UserError):
    """`--max-failures` trials failed in a row: something is wrong with every trial, not one."""


@dataclasses.dataclass(frozen=True)
class Search:
    """One study's search in this process, its study created or joined (`open_search`): what the
    loop, each trial's context and the workers' coordinator read. Nothing in it changes."""

    spec: Study
    options: SearchOptions
    stored: StoredStudy
    prepared: preflight.Prepared
    storage_url: str
    lock: StoreLock
    tracker: Tracker | None = None
    progress: Progress | None = None
    warn: Callable[[str], None] = print
    render_dashboard: DashboardRenderer | None = None
    interrupts: signals.Interrupts = dataclasses.field(default_factory=signals.Interrupts)

    @property
    def study(self) -> optuna.Study:
        return self.stored.study

    @property
    def name(self) -> str:
        return self.stored.name


def open_search(
    spec: Study,
    options: SearchOptions,
    tracker: Tracker | None,
    progress: Progress | None = None,
    warn: Callable[[str], None] = print,
    prepared: preflight.Prepared | None = None,  # run_search's own preflight, not repeated
    render_dashboard: DashboardRenderer | None = None,
    starts: Sequence[warmstart.Start] = (),  # queued once the study exists (run_search checked them)
    interrupts: signals.Interrupts | None = None,  # run_search's, whose handlers are installed
) -> Search:
    """Check what run_search did not, then create or join the study (`study_setup`). `options`
    are `SearchOptions.resolved()`: the stores were resolved where the search started."""
    storage_url = str(options.storage)
    if prepared is None:
        preflight.check_storage_url(storage_url)
        prepared = preflight.prepare(spec, options.sampler, options.pruner, options.seed)
    lock = backends.store_lock(storage_url)
    dashboard = render_dashboard is not None
    stored = create_study(spec, options, prepared, storage_url, lock, warn, dashboard, starts)
    return Search(
        spec, options, stored, prepared, storage_url, lock, tracker, progress, warn, render_dashboard,
        interrupts or signals.Interrupts(warn),
    )  # fmt: skip


def run(search: Search) -> SearchSummary:
    """Trials until the study has `--trials` finished ones (or the timeout); closes the study run."""
    study, options = search.study, search.options
    if search.progress:
        search.progress.start(counted_trials(study), options.trials, search.spec.metric)
    where = journal_of(search, _own_journal(search))
    tracking = open_tracking(search, where)
    dashboard = Dashboard(search.tracker, tracking, search.render_dashboard)
    started, status = time.monotonic(), "FAILED"
    outcomes: list[TrialOutcome] = []
    try:
        # the budget is read here once; after a trial the next ask's own read under the lock says
        # whether any is left (the loop's read after each trial was one more of every trial)
        budget_left = counted_trials(study) < options.trials
        while budget_left:
            if options.timeout is not None and time.monotonic() - started > options.timeout:
                break
            search.interrupts.check()
            traced = sum(o.traced for o in outcomes) < options.profile_trials
            outcome = run_one(search, tracking, traced, where.mine)
            if outcome is None:  # the budget is taken: all ended, or the rest running elsewhere
                budget_left = counted_trials(study) < options.trials
                if budget_left:
                    time.sleep(BUDGET_POLL_S)  # the next ask fails theirs if they die
                continue
            outcomes.append(outcome)
            _replay(search, where)  # as soon as the server answers again
            dashboard.refresh(study)
            _stop_after_failures(search, outcomes)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        _close_tracking(search, tracking, dashboard, status, where)
    return summary(search, tracking, outcomes, where)


def _own_journal(search: Search) -> Journal | None:
    """This process's journal; a folder it cannot write is said once, and the search goes on
    without one (an outage then loses what it did before the journal existed)."""
    folder = journal.folder_for(search.storage_url, search.name)
    try:
        return Journal(folder)
    except OSError as exc:
        search.warn(f"no tracking journal ({folder}: {exc.strerror or exc}); an outage may drop records")
        return None


def journal_of(search: Search, mine: Journal | None = None) -> sync.Where:
    """Where the study's journals are (`tracking.journal`), with this process's own if it trains."""
    folder = mine.folder if mine else journal.folder_for(search.storage_url, search.name)
    return sync.Where(search.study, search.storage_url, folder, mine)


def open_tracking(search: Search, where: sync.Where | None = None) -> StudyRun:
    """The study's MLflow experiment and parent run (the first of several workers, on any
    machine, creates them under the store lock), then what an outage or a dead process left:
    results kept in a journal told first (before the repair takes their trials for abandoned),
    the journaled MLflow records written, then the repair."""
    where = where or journal_of(search)
    sync.tell_kept(where, search.warn)
    tracking = StudyRun()
    if search.tracker is not None:
        with search.lock:
            tracking = study_run.open_study_run(
                search.tracker, search.stored, search.spec, search.prepared, search.storage_url
            )
    _restore(search, tracking, where)
    _repair(search, tracking)
    return tracking


def _restore(search: Search, tracking: StudyRun, where: sync.Where) -> None:
    if search.tracker is not None and tracking.experiment_id and tracking.parent_run_id:
        sync.restore_runs(where, search.tracker, tracking.experiment_id, tracking.parent_run_id, search.warn)


def _replay(search: Search, where: sync.Where) -> None:
    """This process's trials whose MLflow records are pending, written if the store answers."""
    if search.tracker is not None and where.mine is not None and where.mine.pending("mlflow"):
        trial_log.replay(where.mine, search.tracker, where.mine.pending("mlflow"), search.warn)


def run_one(
    search: Search, tracking: StudyRun, traced: bool = False, mine: Journal | None = None
) -> TrialOutcome | None:
    """Ask, train, tell; None when the budget is all taken. The ask fails abandoned trials first
    and is exact across workers (`ownership.ask`)."""
    asked, abandoned = ownership.ask(search.study, search.lock, search.options.trials)
    repair.report_abandoned(search.tracker, abandoned, search.warn)
    if asked is None:
        return None
    with ownership.Heartbeat(search.study, optuna_private.trial_id(asked)):
        return run_trial(dataclasses.replace(trial_context(search, tracking, traced), journal=mine), asked)


def trial_context(search: Search, tracking: StudyRun, traced: bool = False) -> TrialContext:
    """What one trial reads of its search."""
    prepared = search.prepared
    return TrialContext(
        search.study,
        search.spec,
        prepared.space,
        search.name,
        search.storage_url,
        search.tracker,
        tracking.experiment_id,
        tracking.parent_run_id,
        prepared.constraints,
        prepared.learns_infeasible,
        traced,
        search.progress,
        search.warn,
        search.interrupts,
        checkpoint_mb=search.options.checkpoint_mb,
        checkpoint_every=search.options.checkpoint_every,
    )


def finish(search: Search, tracking: StudyRun, status: str) -> None:
    """After every worker is done: write what their journals kept, repair what they left, close the
    study's run with `status` (unless workers elsewhere still run trials: the last one out closes it)."""
    where = journal_of(search)
    sync.tell_kept(where, search.warn)
    _restore(search, tracking, where)
    _repair(search, tracking)
    study_run.close_if_last(search.tracker, tracking, search.study, search.spec, search.lock, status)


def summary(
    search: Search, tracking: StudyRun, outcomes: Sequence[TrialOutcome] = (), where: sync.Where | None = None
) -> SearchSummary:
    tracker = search.tracker
    where = where or journal_of(search)
    pending = len(sync.pending(where))
    line = sync.pending_line(where, pending, tracker.uri if tracker else None) if pending else ""
    return SearchSummary(
        search.name,
        search.spec.metric,
        tracking.experiment_id,
        tracking.parent_run_id,
        counted_trials(search.study),
        len(outcomes),
        ranked(search.study)[: 10 if search.spec.multi_objective else 5],
        tracker.uri if tracker else None,
        list(tracker.failures) if tracker else [],
        [o.number for o in outcomes if not o.recorded],
        list(tracking.notes),
        list(search.spec.objectives),
        pending,
        line,
    )


def _repair(search: Search, tracking: StudyRun) -> None:
    repair.repair(
        search.study, search.lock, search.tracker, tracking.experiment_id, tracking.parent_run_id, search.warn
    )
    sweep_checkpoints(search)


def sweep_checkpoints(search: Search) -> None:
    """Remove the checkpoints no trial will resume from (what a dead process, or a trial retried
    elsewhere, left); a folder that cannot be read is left alone."""
    try:
        checkpoints.sweep(search.study, checkpoints.folder_for(search.storage_url, search.name))
    except OSError as exc:
        search.warn(f"checkpoints of {search.name} not tidied ({exc})")


def _stop_after_failures(search: Search, outcomes: Sequence[TrialOutcome]) -> None:
    """`--max-failures` trials in a row that failed stop the search with the last one's reason."""
    in_row = 0
    for outcome in reversed(outcomes):
        if outcome.state != "FAIL":
            break
        in_row += 1
    if in_row >= search.options.max_failures:
        raise TooManyFailures(
            f"{in_row} trials failed in a row (last: {_last_fail_reason(search.study)}); "
            "the search stopped. Fix the cause (traceback.txt on the failed runs) or raise --max-failures"
        )


def _last_fail_reason(study: optuna.Study) -> str:
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    return (record(failed[-1]).fail_reason or "?")[:200] if failed else "?"


def _close_tracking(
    search: Search, tracking: StudyRun, dashboard: Dashboard, status: str, where: sync.Where
) -> None:
    """The journal's pending records written if the store answers (else the file stays for a
    later command), the dashboard's last render, runs whose close failed while tracking was down;
    the study's run itself unless this is a worker (its coordinator closes it once every worker is done)."""
    try:
        _replay(search, where)
        _restore(search, tracking, where)
    finally:
        if where.mine is not None:
            where.mine.close()
        sweep_checkpoints(search)
    if search.tracker is None or tracking.parent_run_id is None:
        return
    dashboard.refresh(search.study, force=True)
    if tracking.experiment_id is not None:
        repair.repair_runs(search.study, search.tracker, tracking.experiment_id, tracking.parent_run_id)
    if not search.options.worker:
        study_run.close_if_last(search.tracker, tracking, search.study, search.spec, search.lock, status)
