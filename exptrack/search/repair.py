"""Repair what a killed process left behind: trials RUNNING in Optuna whose worker process is dead
become FAIL (with a reason) and their MLflow runs FAILED; runs RUNNING of finished trials are closed,
and so are `exp train` runs of the study whose process died.

A trial records its worker as host:pid:start-time (`processes.worker_id`), so a recycled pid is not
taken for the owner. Trials of workers on other hosts cannot be judged from here and are left alone.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna
from optuna.trial import TrialState

from exptrack import records, study_store
from exptrack.processes import owner_is_dead
from exptrack.tracking.tracker import Tracker


def repair_trials(study: optuna.Study, tracker: Tracker | None, retry: bool = True) -> list[int]:
    """Fail the RUNNING trials of dead workers; returns their numbers. With `retry`, each one's
    parameters are queued once more, linked by the `retry_of` user attribute."""
    repaired = []
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = frozen.user_attrs.get(records.WORKER_ATTR)
        if not isinstance(worker, str) or not owner_is_dead(worker):
            continue
        reason = f"worker process {worker} died while the trial ran (killed or crashed)"
        study._storage.set_trial_user_attr(frozen._trial_id, records.FAIL_REASON_ATTR, reason)
        study.tell(frozen.number, state=TrialState.FAIL, skip_if_finished=True)
        run_id = frozen.user_attrs.get(records.RUN_ID_ATTR)
        if tracker and run_id:
            tracker.close_stale_run(run_id, "FAILED", reason)
        if retry and records.RETRY_ATTR not in frozen.user_attrs and frozen.params:
            study.enqueue_trial(frozen.params, user_attrs={records.RETRY_ATTR: frozen.number})
        repaired.append(frozen.number)
    return repaired


def repair_runs(study: optuna.Study, tracker: Tracker, experiment_id: str) -> list[str]:
    """Close MLflow trial runs left RUNNING whose trial is no longer running; returns their ids."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    closed = []
    for run_id, number in tracker.running_trial_runs(experiment_id):
        trial = by_number.get(number)
        if trial is None or trial.state in (TrialState.RUNNING, TrialState.WAITING):
            continue
        why = trial.user_attrs.get(records.FAIL_REASON_ATTR)
        reason = f"trial {number} is {trial.state.name} in Optuna" + (f": {why}" if why else "")
        status = records.RUN_STATUS.get(study_store.state_name(trial), "FAILED")  # out of memory: FAILED
        tracker.close_stale_run(run_id, status, reason)
        closed.append(run_id)
    return closed


def repair(
    study: optuna.Study,
    tracker: Tracker | None,
    experiment_id: str | None,
    warn: Callable[[str], None] = print,
) -> None:
    """Both repairs, at the start of a search; says what it fixed."""
    failed = repair_trials(study, tracker)
    if failed:
        numbers = ", ".join(map(str, failed))
        warn(f"trial(s) {numbers} were left RUNNING by a dead process: marked FAIL and queued once more")
    if tracker and experiment_id:
        closed = repair_runs(study, tracker, experiment_id)
        if closed:
            warn(f"closed {len(closed)} MLflow run(s) left RUNNING by an interrupted search")
        trained = tracker.close_dead_train_runs([experiment_id])
        if trained:
            warn(f"closed {len(trained)} exp train run(s) left RUNNING by a process that died")
