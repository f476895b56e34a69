"""Reads of the tracking store: a study's parent and trial runs, the experiments searches created,
the runs left RUNNING; and the reads of the results commands, which answer from Optuna alone when
MLflow cannot be read and never create a store by looking."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exptrack import records
from exptrack.errors import redact
from exptrack.records import ROLE_TAG, STUDY_TAG, TRIAL_TAG
from exptrack.stores.url import parse, resolve_tracking
from exptrack.tracking import store_setup
from exptrack.tracking.tracker import Tracker


def study_runs(tracker: Tracker, experiment_id: str, study_name: str) -> list[Any]:
    """Every parent run for a study of this name, oldest first (one per Optuna study). The name
    is compared here, never put in the filter string: MLflow's filter grammar has no escape, so
    a quote in a name (`a'b`) broke the query (issue 25)."""
    runs = tracker.client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{ROLE_TAG}` = '{records.ROLE_STUDY}'",
        order_by=["attributes.start_time ASC"],
        max_results=1000,
    )
    return [run for run in runs if run.data.tags.get(STUDY_TAG) == study_name]


def study_run_id(tracker: Tracker, study_name: str, uid: str | None = None) -> str | None:
    """The parent run of the Optuna study tagged `uid`, else the newest of its name; None when
    MLflow has no record of the study (or cannot be read: a counted failure)."""
    with tracker.guard("find the study run"):
        experiment = tracker.client.get_experiment_by_name(study_name)
        if experiment is None:
            return None
        runs = study_runs(tracker, experiment.experiment_id, study_name)
        mine = [r for r in runs if uid is not None and r.data.tags.get(records.STUDY_UID_TAG) == uid]
        found = mine or runs
        return found[-1].info.run_id if found else None
    return None


def trial_runs(tracker: Tracker, study_name: str, uid: str | None = None) -> list[Any]:
    """Every trial run of a study, in one paged `search_runs` query (not one per trial); with
    `uid`, only those under that Optuna study's parent run (another study may share the name)."""
    experiment = tracker.client.get_experiment_by_name(study_name)
    if experiment is None:
        return []
    query = f"tags.`{ROLE_TAG}` = '{records.ROLE_TRIAL}'"
    parents = study_runs(tracker, experiment.experiment_id, study_name) if uid else []
    mine = [p for p in parents if p.data.tags.get(records.STUDY_UID_TAG) == uid]
    if mine:
        query += f" and tags.`{records.PARENT_RUN_TAG}` = '{mine[0].info.run_id}'"
    runs: list[Any] = []
    token = None
    while True:  # 1000 runs a page
        page = tracker.client.search_runs([experiment.experiment_id], filter_string=query, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def confirm_runs(tracker: Tracker, experiment_id: str, parent_run_id: str) -> list[Any]:
    """The `exp confirm` repeats under a study's parent run, in any status (one query)."""
    query = (
        f"tags.`{ROLE_TAG}` = '{records.ROLE_CONFIRM}' and tags.`{records.PARENT_RUN_TAG}` = '{parent_run_id}'"
    )
    return list(tracker.client.search_runs([experiment_id], filter_string=query, max_results=10000))


def finished_repeats(runs: list[Any]) -> dict[tuple[int, int], tuple[str, dict[str, float]]]:
    """(trial number, seed) -> (run id, last metrics) of the FINISHED confirm runs among `runs`."""
    done = {}
    for run in runs:
        tags = run.data.tags
        if run.info.status == "FINISHED" and records.CONFIRMS_TAG in tags and records.CONFIRM_SEED_TAG in tags:
            key = (int(tags[records.CONFIRMS_TAG]), int(tags[records.CONFIRM_SEED_TAG]))
            done[key] = (str(run.info.run_id), dict(run.data.metrics))
    return done


def study_experiments(tracker: Tracker) -> dict[str, str]:
    """Study name -> experiment id, for the experiments a search created."""
    experiments = tracker.client.search_experiments(filter_string=f"tags.`{STUDY_TAG}` != ''")
    return {e.name: str(e.experiment_id) for e in experiments}


def running_trial_runs(
    tracker: Tracker, experiment_id: str, parent_run_id: str | None
) -> list[tuple[str, int]]:
    """(run id, trial number) of the trial runs under `parent_run_id` still marked RUNNING."""
    nested = f" and tags.`{records.PARENT_RUN_TAG}` = '{parent_run_id}'" if parent_run_id else ""
    with tracker.guard("find runs left RUNNING"):
        runs = tracker.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{ROLE_TAG}` = '{records.ROLE_TRIAL}' and attributes.status = 'RUNNING'"
            + nested,
            max_results=10000,
        )
        return [(r.info.run_id, int(r.data.tags[TRIAL_TAG])) for r in runs if TRIAL_TAG in r.data.tags]
    return []


def running_train_runs(tracker: Tracker, experiment_ids: list[str] | None) -> list[Any]:
    """`exp train` runs marked RUNNING in `experiment_ids`, else in every active experiment."""
    ids = experiment_ids or [e.experiment_id for e in tracker.client.search_experiments()]
    running = f"tags.`{ROLE_TAG}` = '{records.ROLE_TRAIN}' and attributes.status = 'RUNNING'"
    return list(tracker.client.search_runs(ids, filter_string=running, max_results=1000)) if ids else []


def read_trial_runs(
    study_name: str, uri: str | None, warn: Callable[[str], None] = print, uid: str | None = None
) -> list[Any]:
    """A stored study's trial runs for a results command (one paged query), or [] when the
    tracking store cannot be read: the Optuna side alone still answers."""
    runs = _read_store(uri, warn, lambda tracker: trial_runs(tracker, study_name, uid))
    return [r for r in runs or [] if TRIAL_TAG in r.data.tags]


def by_trial_number(runs: list[Any]) -> dict[int, Any]:
    """Trial runs by the number of the Optuna trial each ran (its tag: a layout only tracking/ reads)."""
    return {int(r.data.tags[TRIAL_TAG]): r for r in runs if TRIAL_TAG in r.data.tags}


def trial_runs_under(tracker: Tracker, study_name: str, uid: str | None, parent_run_id: str) -> dict[int, Any]:
    """The study's trial runs nested under `parent_run_id`, by trial number (what `exp sync` checks
    before rebuilding a run from Optuna)."""
    runs = trial_runs(tracker, study_name, uid)
    return by_trial_number([r for r in runs if r.data.tags.get(records.PARENT_RUN_TAG) == parent_run_id])


def read_experiment_ids(uri: str | None, warn: Callable[[str], None] = print) -> dict[str, str]:
    """Study name -> MLflow experiment id for every experiment a search created (one query)."""
    return _read_store(uri, warn, study_experiments) or {}


def existing_store(uri: str | None, warn: Callable[[str], None] = print) -> Tracker | None:
    """A `Tracker` on the MLflow store at `uri` as it is, for a command that must not create,
    migrate or rebuild it; None (with a line saying why, unless there is simply no store yet) when
    there is nothing it can read. A database that is not an MLflow store is a UserError."""
    resolved = resolve_tracking(uri)
    if parse(resolved).is_database:
        why = store_setup.unreadable_mlflow(resolved)
        if why:
            if why != "new":
                warn(f"MLflow {redact(resolved)} not read ({why}); showing what Optuna has")
            return None
    return Tracker(uri, warn=warn, create=False)


def _read_store(uri: str | None, warn: Callable[[str], None], read: Callable[[Tracker], Any]) -> Any:
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
