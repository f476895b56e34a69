"""Repair what a killed process left behind: trials it left RUNNING become FAIL with a reason and
their parameters are queued once more (`ownership.fail_abandoned`, under the store lock), their
MLflow runs are closed FAILED, MLflow runs left RUNNING by finished trials are closed, and so are `exp train` runs of the
study whose process died.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna
from optuna.trial import TrialState

from exptrack import records, study_store
from exptrack.search.ownership import Abandoned, fail_abandoned
from exptrack.stores.locks import StoreLock
from exptrack.tracking import queries, runs
from exptrack.tracking.tracker import Tracker


def close_abandoned_runs(tracker: Tracker | None, abandoned: list[Abandoned]) -> None:
    """Close the MLflow runs of trials this process marked FAIL, saying why."""
    for trial in abandoned:
        if tracker and trial.run_id:
            runs.close_stale_run(tracker, trial.run_id, "FAILED", trial.reason)


def repair_runs(
    study: optuna.Study, tracker: Tracker, experiment_id: str, parent_run_id: str | None
) -> list[str]:
    """Close this study's MLflow trial runs left RUNNING whose trial is no longer running."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    closed = []
    for run_id, number in queries.running_trial_runs(tracker, experiment_id, parent_run_id):
        trial = by_number.get(number)
        if trial is None or trial.state in (TrialState.RUNNING, TrialState.WAITING):
            continue
        why = study_store.record(trial).fail_reason
        reason = f"trial {number} is {trial.state.name} in Optuna" + (f": {why}" if why else "")
        status = records.RUN_STATUS.get(study_store.state_name(trial), "FAILED")  # out of memory: FAILED
        runs.close_stale_run(tracker, run_id, status, reason)
        closed.append(run_id)
    return closed


def repair(
    study: optuna.Study,
    lock: StoreLock,
    tracker: Tracker | None,
    experiment_id: str | None,
    parent_run_id: str | None,
    warn: Callable[[str], None] = print,
) -> None:
    """Both repairs, at the start of a search; says what it fixed."""
    with lock:
        abandoned = fail_abandoned(study, lock)
    report_abandoned(tracker, abandoned, warn)
    if tracker and experiment_id:
        closed = repair_runs(study, tracker, experiment_id, parent_run_id)
        if closed:
            warn(f"closed {len(closed)} MLflow run(s) left RUNNING by an interrupted search")
        trained = runs.close_dead_train_runs(tracker, [experiment_id])
        if trained:
            warn(f"closed {len(trained)} exp train run(s) left RUNNING by a process that died")


def report_abandoned(
    tracker: Tracker | None, abandoned: list[Abandoned], warn: Callable[[str], None]
) -> None:
    """Close their runs and say which trials were repaired."""
    if not abandoned:
        return
    close_abandoned_runs(tracker, abandoned)
    numbers = ", ".join(str(t.number) for t in abandoned)
    warn(f"trial(s) {numbers} were left RUNNING by a dead process: marked FAIL and queued once more")
