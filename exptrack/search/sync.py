"""Finish what an outage left, from any later command that opens the study (`exp search`, `exp
trials`, `exp sync`): tell Optuna the results its store could not take, write the MLflow records of
journals whose writer is gone (`tracking.restore`), rebuild from the Optuna trial the run of a
trial whose journal is gone too (another host's disk), and count what is still pending.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from exptrack import config as cfg
from exptrack import records, study_store
from exptrack.errors import first_line, redact
from exptrack.search import feasibility, repair
from exptrack.search.space_params import named_params
from exptrack.stores import optuna_private
from exptrack.tracking import journal, queries, restore, runs
from exptrack.tracking.journal import MLFLOW_DONE, OPTUNA_DONE, Journal
from exptrack.tracking.tracker import Tracker

Warn = Callable[[str], None]
# Exit code of a command that ended with records still pending in a journal (0: both stores hold
# every record; 2: a one-line error; 1: a bug). `exp sync NAME` writes them.
PENDING_EXIT = 3
NOT_RESTORED = (
    "per-epoch metrics other than the objective, their times, system metrics, the dataset input "
    "and profile traces"
)


@dataclasses.dataclass(frozen=True)
class Where:
    """The study whose records are synced, and where its journals are."""

    study: optuna.Study
    storage_url: str
    folder: Path
    mine: Journal | None = None  # this process's own journal, replayed by `trial_log.replay`


def tell_kept(where: Where, warn: Warn) -> int:
    """Tell Optuna the results journaled while its store was down (journals whose writer is gone);
    before any repair, which would take their trials, still RUNNING, for abandoned ones."""
    told = 0
    with journal.orphans(where.folder, where.mine) as paths:
        for path in paths:
            for number, found in journal.by_trial(journal.read(path)).items():
                if "optuna" not in journal.owed(found):
                    continue
                told += _tell(where.study, number, [r for r in found if r["k"] == "tell"][-1])
                journal.append_to(path, {"k": OPTUNA_DONE, "n": number})
    if told:
        warn(f"told Optuna the results of {told} trial(s) kept in {where.folder} while its store was down")
    return told


def _tell(study: optuna.Study, number: int, record: dict[str, Any]) -> bool:
    """One kept tell, on a trial still RUNNING (False: another worker failed it meanwhile)."""
    frozen = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if frozen is None or frozen.state != TrialState.RUNNING:
        return False
    trial = optuna.Trial(study, optuna_private.trial_id(frozen))
    attrs = dict(record["attrs"])
    constraints = attrs.pop(records.JOURNAL_CONSTRAINTS_KEY, None)
    try:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        if constraints is not None:
            feasibility.record(trial, constraints)
        for step, value in sorted(record["steps"].items(), key=lambda item: int(item[0])):
            trial.report(value, int(step))
        if record["state"] == "PRUNED":
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, record["values"])
    except UpdateFinishedTrialError:
        return False
    return True


def restore_runs(where: Where, tracker: Tracker, experiment_id: str, parent_run_id: str, warn: Warn) -> None:
    """Write the MLflow records of journals whose writer is gone, then rebuild from Optuna the runs
    of tracked trials that no journal holds. The store down: said once, left for the next command."""
    try:
        _replay_orphans(where, tracker)
        rebuilt = _rebuild_from_optuna(where, tracker, experiment_id, parent_run_id)
    except Exception as exc:  # the tracking store is down again: nothing is lost, all is kept
        warn(
            f"MLflow records not written yet ({type(exc).__name__}: {first_line(exc, 200)}); kept in {where.folder}"
        )
        return
    if rebuilt:
        shown = ", ".join(map(str, rebuilt))
        warn(
            f"rebuilt the MLflow runs of trial(s) {shown} from their Optuna records (no journal holds "
            f"them: written on another host?); not restored: {NOT_RESTORED}"
        )


def _replay_orphans(where: Where, tracker: Tracker) -> None:
    with journal.orphans(where.folder, where.mine) as paths:
        for path in paths:
            settled = set()
            for number, found in journal.by_trial(journal.read(path)).items():
                owed = journal.owed(found)
                if "mlflow" in owed:
                    restore.write_trial(tracker, found, "journal")
                    journal.append_to(path, {"k": MLFLOW_DONE, "n": number})
                    owed.discard("mlflow")
                if not owed:
                    settled.add(number)
            journal.retire(path, settled)


def _rebuild_from_optuna(where: Where, tracker: Tracker, experiment_id: str, parent_run_id: str) -> list[int]:
    """Runs for tracked, finished trials that MLflow lacks (or whose run lacks the objective) and
    no journal still holds: built from the Optuna trial, tagged as restored from it."""
    study = where.study
    uid = study.user_attrs.get(records.STUDY_UID_ATTR)
    have = queries.trial_runs_under(tracker, study.study_name, uid, parent_run_id)
    held = set(journal.pending_elsewhere(where.folder, where.mine))
    if where.mine is not None:
        held |= set(where.mine.pending())
    metric = study.user_attrs.get(records.STUDY_METRIC_ATTR)
    rebuilt = []
    for trial in study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    ):
        if trial.number in held or not _needs_rebuild(have.get(trial.number), trial, metric):
            continue
        facts = _records_of(where, trial, experiment_id, parent_run_id, metric)
        restore.write_trial(
            tracker, facts, f"optuna: rebuilt from the Optuna trial; not restored: {NOT_RESTORED}"
        )
        rebuilt.append(trial.number)
    return rebuilt


def _needs_rebuild(run: Any, trial: FrozenTrial, metric: str | None) -> bool:
    """A trial whose run could not be opened (`RUN_PENDING_ATTR`) and that has none under the study
    run yet, or whose run lacks the objective it reported (its writes were lost). A trial whose run
    id names a run this store does not hold is left alone: it was tracked into another store."""
    if run is None:
        return study_store.record(trial).run_pending
    return bool(trial.intermediate_values) and metric is not None and metric not in run.data.metrics


def _records_of(
    where: Where, trial: FrozenTrial, experiment_id: str, parent_run_id: str, metric: str | None
) -> list[dict[str, Any]]:
    """The journal records a live run of `trial` would have written, from what Optuna holds."""
    stored = study_store.record(trial)
    loaded = cfg.from_dict(stored.config) if stored.config else None
    params = named_params(loaded.flat_params(), trial.params) if loaded else dict(trial.params)
    provenance = {records.PROVENANCE_STUDY: where.study.study_name, records.PROVENANCE_TRIAL: trial.number}
    facts = runs.TrialFacts(
        where.study.study_name, where.storage_url, trial.number, params,
        cfg.dump_yaml(loaded, provenance) if loaded else "", retry_of=stored.retry_of,
    )  # fmt: skip
    start, end = _ms(trial.datetime_start), _ms(trial.datetime_complete)
    tags = runs.trial_tags(runs.OpenedRun(experiment_id, parent_run_id), facts)
    found: list[dict[str, Any]] = [
        {"k": "open", "n": trial.number, "run": stored.run_id, "exp": experiment_id,
         "name": records.trial_run_name(trial.number), "tags": tags, "params": params,
         "config": facts.config_yaml or None, "start": start},
    ]  # fmt: skip
    for step, value in sorted(trial.intermediate_values.items()):
        found.append({"k": "epoch", "n": trial.number, "step": step, "metrics": {metric: value}, "ts": end})
    found.append({"k": "close", "n": trial.number, **_closing(where.study, trial, metric), "end": end})
    return found


def _closing(study: optuna.Study, trial: FrozenTrial, metric: str | None) -> dict[str, Any]:
    """State, figures and tags of a rebuilt run's close, as `trial._tell` and `fail` give them."""
    state = study_store.state_name(trial)
    stored = study_store.record(trial)
    if state == "FAIL":
        reason = stored.fail_reason
        reason = "failed (reason not recorded)" if reason is None else reason
        return {"state": state, "metrics": {}, "tags": runs.fail_tags(reason)}
    profile = {k: v for k, v in stored.costs.items() if k != records.TRAIN_STARTED_AT}
    figures: dict[str, float] = {}
    values = [v for _, v in sorted(trial.intermediate_values.items())]
    if metric and values:
        maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
        figures = {f"{records.BEST_PREFIX}{metric}": (max if maximize else min)(values)}
    pruned = len(values) if state == "PRUNED" else None
    metrics, tags = runs.closing(figures, profile, pruned_epoch=pruned)
    return {"state": state, "metrics": metrics, "tags": tags, "texts": {}}


def _ms(moment: datetime.datetime | None) -> int:
    return int((moment or datetime.datetime.now()).timestamp() * 1000)


def pending(where: Where) -> dict[int, set[str]]:
    """Trial -> stores still owed, over every journal of the study (this process's included)."""
    return journal.pending_elsewhere(where.folder)


def pending_line(where: Where, count: int, tracking_uri: str | None) -> str:
    """The one final line of a command that ends with records pending: how many, where, the fix."""
    command = f"exp sync {where.study.study_name} --storage {redact(where.storage_url)}"
    if tracking_uri:
        command += f" --tracking-uri {redact(tracking_uri)}"
    return f"{count} trial(s)' records are pending in {where.folder}; once both stores answer, write them with: {command}"


def sync_study(name: str, storage: str | None, tracking_uri: str | None, warn: Warn) -> tuple[int, str]:
    """`exp sync NAME` (and the start of `exp trials`): tell kept results, write every journal's
    records whose writer is gone, rebuild runs no journal holds, close runs of finished trials and
    the study run once no trial runs; (trials still pending, the line that says so)."""
    from exptrack.stores.optuna_storage import load_existing_study
    from exptrack.stores.url import resolve_storage

    url = resolve_storage(storage)
    study = load_existing_study(name, storage)
    where = Where(study, url, journal.folder_for(url, name))
    tell_kept(where, warn)
    tracker = queries.existing_store(tracking_uri, warn)
    if tracker is not None:
        _sync_runs(where, tracker, warn)
    count = len(pending(where))
    return count, pending_line(where, count, tracker.uri if tracker else tracking_uri) if count else ""


def _sync_runs(where: Where, tracker: Tracker, warn: Warn) -> None:
    """The MLflow side of `sync_study`, under the study's parent run (none: nothing to write to)."""
    study = where.study
    parent = queries.study_run_id(tracker, study.study_name, study.user_attrs.get(records.STUDY_UID_ATTR))
    if parent is None:
        return
    experiment_id = str(tracker.client.get_run(parent).info.experiment_id)
    restore_runs(where, tracker, experiment_id, parent, warn)
    if pending(where):
        return
    repair.repair_runs(study, tracker, experiment_id, parent)
    if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        figures = study_store.study_figures(study, study_store.stored_objectives(study))
        runs.close_study_run(tracker, parent, "FINISHED", figures)
