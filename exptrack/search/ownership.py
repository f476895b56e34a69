"""Who owns a running trial, and when it counts as abandoned: one mechanism on one machine and on many.

A trial is asked under the store's lock (`stores.backends.store_lock`: a directory flock for sqlite, a
PostgreSQL advisory lock), and before the lock is released it holds its first Optuna heartbeat and
its worker (host:pid:start-time). So, seen under that lock, a RUNNING trial without a worker was
asked by a process that died inside the lock: abandoned at once. A trial whose worker is a dead
process of this host is abandoned at once too (the fast path); any other is abandoned when its
heartbeat is older than the grace period (Optuna's own test, `_get_stale_trial_ids`).

Abandoned trials become FAIL with the reason written first (Optuna refuses attributes on a finished
trial, so its `fail_stale_trials` would lose the reason), and their parameters are queued once more,
linked by `retry_of`. The process whose state change wins does the retry: there is exactly one.
A trial a SIGTERM stopped with its checkpoint kept (`checkpoint_epoch`) is FAIL already; its retry,
which resumes from that checkpoint, is queued under the same lock by the next ask or repair that
finds none queued (a retry of a retry too: a scheduler may preempt a long trial more than once).
"""

from __future__ import annotations

import dataclasses
import datetime
import threading

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from exptrack import records
from exptrack.processes import owner_is_dead, worker_id
from exptrack.stores import optuna_private
from exptrack.stores.locks import StoreLock
from exptrack.study_store import counted, enqueue_retry, record

ORPHAN_REASON = "asked by a process that died before it recorded itself as the trial's worker"


@dataclasses.dataclass(frozen=True)
class Abandoned:
    """A trial this process marked FAIL; its MLflow run (if any) is closed by the caller."""

    number: int
    run_id: str | None
    reason: str


def ask(study: optuna.Study, lock: StoreLock, budget: int) -> tuple[optuna.Trial | None, list[Abandoned]]:
    """Under the store lock: fail abandoned trials, then ask a new trial if finished + running ones
    leave room in `budget`, and record its heartbeat and worker before anyone else looks. One read
    of the trials serves the three questions: each read reloads every running trial of every
    worker, under the lock all workers take turns at (3 reads a trial before; benchmarks/README.md)."""
    with lock:
        trials = study.get_trials(deepcopy=False)
        abandoned = fail_abandoned(study, lock, trials)
        if abandoned:  # failed now, their retries queued: what counts has changed
            trials = study.get_trials(deepcopy=False)
        running = [t for t in trials if t.state == TrialState.RUNNING]
        if counted(trials) + len(running) >= budget:  # an out-of-memory trial does not count
            return None, abandoned
        trial = study.ask()
        if _heartbeat_interval(study) is not None:
            optuna_private.storage_of(study).record_heartbeat(optuna_private.trial_id(trial))
        trial.set_user_attr(records.WORKER_ATTR, worker_id())
    return trial, abandoned


def fail_abandoned(
    study: optuna.Study, lock: StoreLock, trials: list[optuna.trial.FrozenTrial] | None = None
) -> list[Abandoned]:
    """Mark the abandoned RUNNING trials FAIL (hold `lock`); a retry is queued for each that ran,
    and for each a SIGTERM left to resume. `trials`: the study's trials as just read under the
    lock (else read here)."""
    stale = set(_stale_trial_ids(study))
    failed = []
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    for frozen in [t for t in trials if t.state == TrialState.RUNNING]:
        reason = _why_abandoned(frozen, optuna_private.trial_id(frozen) in stale, lock, study)
        if reason and _fail(study, frozen, reason):
            failed.append(Abandoned(frozen.number, record(frozen).run_id, reason))
    for interrupted in awaiting_retry(trials):  # FAIL before this read: it holds them
        enqueue_retry(study, interrupted)
    return failed


def awaiting_retry(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """FAIL trials a SIGTERM stopped with their checkpoint kept, and no retry queued yet (nor
    dropped by `exp trials drop`)."""
    retried = {record(t).retry_of_number for t in trials}
    return [
        t
        for t in trials
        if t.state == TrialState.FAIL
        and record(t).checkpoint_epoch is not None
        and not record(t).dropped
        and t.number not in retried
        and t.params
    ]


def _why_abandoned(
    frozen: optuna.trial.FrozenTrial, stale: bool, lock: StoreLock, study: optuna.Study
) -> str | None:
    worker = record(frozen).worker
    if worker is None:
        # Only a lock that keeps other processes out proves the asker died inside it; one a
        # database restart can drop proves it only once the asker could have waited the restart out.
        asked = frozen.datetime_start or datetime.datetime.now()
        waiting = (datetime.datetime.now() - asked).total_seconds() < lock.lost_for_s
        return ORPHAN_REASON if lock.locks_processes and not waiting else None
    if owner_is_dead(worker):
        return f"worker process {worker} died while the trial ran (killed or crashed)"
    if stale:
        backend = optuna_private.rdb_storage_of(study)  # Optuna wraps it in a cache
        grace = getattr(backend, "grace_period", None)
        return f"worker process {worker} sent no heartbeat for {grace} s (killed, crashed or cut off)"
    return None


def _fail(study: optuna.Study, frozen: optuna.trial.FrozenTrial, reason: str) -> bool:
    """FAIL with `reason`, then one retry; False when another process finished the trial first."""
    storage = optuna_private.storage_of(study)
    try:
        storage.set_trial_user_attr(optuna_private.trial_id(frozen), records.FAIL_REASON_ATTR, reason)
        storage.set_trial_state_values(optuna_private.trial_id(frozen), state=TrialState.FAIL)
    except UpdateFinishedTrialError:
        return False
    if frozen.params and not record(frozen).is_retry:
        enqueue_retry(study, frozen)
    return True


def _heartbeat_interval(study: optuna.Study) -> int | None:
    getter = getattr(optuna_private.storage_of(study), "get_heartbeat_interval", None)
    return getter() if getter else None


def _stale_trial_ids(study: optuna.Study) -> list[int]:
    if _heartbeat_interval(study) is None:
        return []
    return optuna_private.stale_trial_ids(study)


class Heartbeat:
    """Beats for one trial until stopped: Optuna's heartbeat thread stops for good at the first
    database error (a restart would then get a live trial failed), so this one carries on."""

    def __init__(self, study: optuna.Study, trial_id: int) -> None:
        self.interval = _heartbeat_interval(study)
        self.storage, self.trial_id = optuna_private.storage_of(study), trial_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="exptrack-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        if self.interval is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)  # a beat waiting out a database restart is left to finish

    def _beat(self) -> None:
        assert self.interval is not None
        while not self._stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)  # type: ignore[attr-defined]
            except Exception:  # the next beat tries again; the grace period covers a gap
                continue
