"""The MLflow side of tidying a study (`exp studies rm|rename|copy`, `exp trials drop`): which runs
belong to one Optuna study (its parent run by uid, the runs nested under it, the trial runs its
trials name, the `exp train` runs reproducing them), deleted the MLflow way (lifecycle `deleted`,
so `mlflow gc` reclaims them), renamed with their experiment, or copied into a new experiment.
Every write here is idempotent, so a command killed midway is finished by running it again."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from exptrack import records
from exptrack.errors import UserError
from exptrack.records import PARENT_RUN_TAG, ROLE_TAG, STUDY_TAG
from exptrack.tracking import queries
from exptrack.tracking.tracker import Tracker

# Tags a copied run does not take from its original: its nesting, its study and MLflow's own
# bookkeeping of the original (source, user, git) stay with the original run.
NOT_COPIED = (PARENT_RUN_TAG, STUDY_TAG, "mlflow.runName")


@dataclasses.dataclass(frozen=True)
class StudyRuns:
    """The active runs of one Optuna study in its experiment."""

    experiment_id: str | None
    parents: list[Any]  # the study's parent run(s), tagged with its uid
    trials: list[Any]  # trial runs, and any other run nested under a parent (confirmations)
    reproductions: list[Any]  # `exp train` runs whose source run is one of the above
    others: int  # parent runs of other Optuna studies of the same name in the same experiment

    def all(self) -> list[Any]:
        """Children first, the parent last: a kill midway leaves the parent to find the rest by."""
        return [*self.reproductions, *self.trials, *self.parents]


def find(tracker: Tracker, name: str, uid: str | None, run_ids: Iterable[str] = ()) -> StudyRuns:
    """The active runs of the Optuna study `name` (tagged `uid`): one paged query of the
    experiment, filtered here (names and ids never go into a filter string)."""
    experiment = tracker.client.get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage != "active":
        return StudyRuns(None, [], [], [], 0)
    every = _all_runs(tracker, str(experiment.experiment_id))
    studies = [r for r in every if r.data.tags.get(ROLE_TAG) == records.ROLE_STUDY]
    # by uid, not by name: a rename killed midway leaves the parent tagged with either name
    parents = [r for r in studies if _belongs(r, name, uid)]
    others = len(studies) - len(parents)
    parent_ids = {r.info.run_id for r in parents}
    named = set(run_ids)
    trials = [
        r
        for r in every
        if r.info.run_id not in parent_ids
        and (r.data.tags.get(PARENT_RUN_TAG) in parent_ids or r.info.run_id in named)
    ]
    sources = parent_ids | {r.info.run_id for r in trials}
    reproductions = [
        r for r in every if r not in trials and r.data.tags.get(records.SOURCE_RUN_TAG) in sources
    ]
    return StudyRuns(str(experiment.experiment_id), parents, trials, reproductions, others)


def of_trials(found: StudyRuns, numbers: set[int], run_ids: set[str]) -> list[Any]:
    """The runs of some trials (named by the trial, or by number under the study's parent), the
    `exp confirm` repeats of their configs and the `exp train` runs reproducing them, those first."""
    shown = {str(n) for n in numbers}
    trial_runs = [
        r
        for r in found.trials
        if r.info.run_id in run_ids
        or (r.data.tags.get(ROLE_TAG) == records.ROLE_TRIAL and r.data.tags.get(records.TRIAL_TAG) in shown)
        or (
            r.data.tags.get(ROLE_TAG) == records.ROLE_CONFIRM
            and r.data.tags.get(records.CONFIRMS_TAG) in shown
        )
    ]
    sources = {r.info.run_id for r in trial_runs}
    return [
        *(r for r in found.reproductions if r.data.tags.get(records.SOURCE_RUN_TAG) in sources),
        *trial_runs,
    ]


def _belongs(parent: Any, name: str, uid: str | None) -> bool:
    """Is `parent` this study's run: tagged with its uid (a study older than the uid tag: its
    untagged run of that name)?"""
    tags = parent.data.tags
    if uid is None:
        return records.STUDY_UID_TAG not in tags and tags.get(STUDY_TAG) == name
    return tags.get(records.STUDY_UID_TAG) == uid


def _all_runs(tracker: Tracker, experiment_id: str) -> list[Any]:
    runs: list[Any] = []
    token = None
    while True:  # 1000 runs a page
        page = tracker.client.search_runs([experiment_id], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def delete(tracker: Tracker, runs: Iterable[Any], wrote: Callable[[], None]) -> int:
    """Delete each run the MLflow way (`mlflow gc` reclaims it later); how many."""
    count = 0
    for run in runs:
        tracker.client.delete_run(run.info.run_id)
        wrote()
        count += 1
    return count


def check_free(tracker: Tracker, new: str, uid: str | None) -> None:
    """Refuse a NEW name MLflow already uses, unless the experiment holds this very study's
    parent run (`uid`): a rename or copy killed midway, which this run finishes."""
    experiment = tracker.client.get_experiment_by_name(new)
    if experiment is None:
        return
    if experiment.lifecycle_stage != "active":
        raise UserError(
            f"MLflow keeps a deleted experiment named {new!r}; run `mlflow gc` on the tracking store "
            "to remove it for good, or pick another name"
        )
    mine = [
        r
        for r in _all_runs(tracker, str(experiment.experiment_id))
        if uid is not None and r.data.tags.get(records.STUDY_UID_TAG) == uid
    ]
    if not mine:
        raise UserError(f"MLflow already has an experiment named {new!r}; pick another name")


def rename(tracker: Tracker, old: str, new: str, uid: str | None, wrote: Callable[[], None]) -> None:
    """Rename the study's experiment and retag its runs (study name, run names, `reproduces`),
    finishing a rename an earlier run began (the experiment may already carry `new`)."""
    check_free(tracker, new, uid)
    found = find(tracker, new, uid)
    if found.experiment_id is None:
        found = find(tracker, old, uid)
        if found.experiment_id is None:
            return  # MLflow has no record of the study: nothing to rename there
        if found.others:
            raise UserError(
                f"MLflow experiment {old!r} also holds {found.others} other Optuna study run(s) of that "
                "name (another --storage); rename refused: remove those first"
            )
        tracker.client.rename_experiment(found.experiment_id, new)
        wrote()
    _retag_experiment(tracker, found.experiment_id, old, new)
    wrote()
    for run in found.all():
        _retag_run(tracker, run, old, new)
        wrote()


def _retag_experiment(tracker: Tracker, experiment_id: str, old: str, new: str) -> None:
    experiment = tracker.client.get_experiment(experiment_id)
    tracker.client.set_experiment_tag(experiment_id, STUDY_TAG, new)
    view = experiment.tags.get(records.RUNS_VIEW_TAG)
    if view:
        envelope = json.loads(view)
        envelope["name"] = f"{new}: trials"
        tracker.client.set_experiment_tag(experiment_id, records.RUNS_VIEW_TAG, json.dumps(envelope))


def _retag_run(tracker: Tracker, run: Any, old: str, new: str) -> None:
    tags = run.data.tags
    changed = {STUDY_TAG: new} if STUDY_TAG in tags else {}
    if tags.get(ROLE_TAG) == records.ROLE_STUDY:
        changed[records.OPTUNA_STUDY_TAG] = new
        tracker.client.update_run(run.info.run_id, name=new)
    reproduces = tags.get(records.REPRODUCES_TAG, "")
    if reproduces.startswith(f"{old}/"):
        changed[records.REPRODUCES_TAG] = f"{new}/{reproduces[len(old) + 1 :]}"
    for key, value in changed.items():
        tracker.client.set_tag(run.info.run_id, key, value)


def copy_parent(
    tracker: Tracker, source: Any, new: str, uid: str, wrote: Callable[[], None]
) -> tuple[str, str]:
    """(experiment id, run id) of the copy's parent run, made once: found again by `uid`."""
    from exptrack.tracking import runs as domain

    experiment = domain.experiment_id(tracker, new)
    mine = [
        r
        for r in queries.study_runs(tracker, experiment, new)
        if r.data.tags.get(records.STUDY_UID_TAG) == uid
    ]
    done = _finished_copies(tracker, mine, wrote)
    if source.info.run_id in done:
        return experiment, done[source.info.run_id]
    tags = _copied_tags(source, {STUDY_TAG: new, records.OPTUNA_STUDY_TAG: new, records.STUDY_UID_TAG: uid})
    return experiment, _copy_run(tracker, source, experiment, new, tags, wrote)


def _copied_metric(source: Any, metric: str) -> bool:
    """Every metric of a trial run; of a study run, not its figures over all its trials
    (finished_trials, best_*, pareto_front_size), which `exp studies copy` computes for the copy's
    own trials (a --where copy has fewer)."""
    if source.data.tags.get(records.ROLE_TAG) != records.ROLE_STUDY:
        return True
    study_figures = (records.FINISHED_TRIALS_METRIC, records.PARETO_SIZE_METRIC)
    return metric not in study_figures and not metric.startswith(records.BEST_PREFIX)


def _copied_tags(source: Any, changed: Mapping[str, str]) -> dict[str, str]:
    tags = {k: v for k, v in source.data.tags.items() if k not in NOT_COPIED and not k.startswith("mlflow.")}
    tags.pop(records.COPY_DONE_TAG, None)
    return {**tags, **changed, records.COPY_OF_TAG: source.info.run_id}


def _finished_copies(tracker: Tracker, runs: Iterable[Any], wrote: Callable[[], None]) -> dict[str, str]:
    """Source run id -> its finished copy among `runs`; a copy a kill left unfinished (no
    `copy_complete` tag: it was made first, its contents after) is deleted, to be made again."""
    done = {}
    for run in runs:
        tags = run.data.tags
        if records.COPY_OF_TAG not in tags:
            continue
        if tags.get(records.COPY_DONE_TAG) == "true":
            done[tags[records.COPY_OF_TAG]] = run.info.run_id
        else:
            tracker.client.delete_run(run.info.run_id)
            wrote()
    return done


def _copy_run(
    tracker: Tracker, source: Any, experiment: str, name: str, tags: dict[str, str], wrote: Callable[[], None]
) -> str:
    """A new run holding `source`'s contents, closed with its status; `copy_complete` comes last."""
    run_id = tracker.client.create_run(experiment, run_name=name, tags=tags).info.run_id
    wrote()
    _copy_contents(tracker, source, run_id)
    wrote()
    status = source.info.status if source.info.status != "RUNNING" else "FINISHED"
    tracker.client.set_terminated(run_id, status=status, end_time=source.info.end_time)
    tracker.client.set_tag(run_id, records.COPY_DONE_TAG, "true")
    wrote()
    return run_id


def copy_trial_runs(
    tracker: Tracker,
    experiment: str,
    parent: str,
    new: str,
    sources: Mapping[int, Any],
    wrote: Callable[[], None],
) -> dict[int, str]:
    """New number -> run id of a copy of each source run (found again by its `copy_of` tag, so a
    rerun makes none twice): params, tags, metric histories and artifacts, nested under `parent`."""
    nested = [r for r in _all_runs(tracker, experiment) if r.data.tags.get(PARENT_RUN_TAG) == parent]
    done = _finished_copies(tracker, nested, wrote)
    copied = {}
    for number, source in sources.items():
        if source.info.run_id not in done:
            changed = {PARENT_RUN_TAG: parent, STUDY_TAG: new, records.TRIAL_TAG: str(number)}
            name = records.trial_run_name(number)
            done[source.info.run_id] = _copy_run(
                tracker, source, experiment, name, _copied_tags(source, changed), wrote
            )
        copied[number] = done[source.info.run_id]
    return copied


def _copy_contents(tracker: Tracker, source: Any, run_id: str) -> None:
    """Params, every copied metric's whole history and the artifacts of `source` onto `run_id`."""
    import os
    import tempfile

    from mlflow.entities import Metric, Param

    client = tracker.client
    params = [Param(k, v) for k, v in source.data.params.items()]
    kept = [key for key in source.data.metrics if _copied_metric(source, key)]
    metrics = [m for key in kept for m in client.get_metric_history(source.info.run_id, key)]
    for start in range(0, max(len(params), len(metrics), 1), 100):  # MLflow takes 100 params a batch
        client.log_batch(
            run_id,
            metrics=[Metric(m.key, m.value, m.timestamp, m.step) for m in metrics[start : start + 100]],
            params=params[start : start + 100],
        )
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per run: noise
    if client.list_artifacts(source.info.run_id):
        with tempfile.TemporaryDirectory() as folder:
            local = client.download_artifacts(source.info.run_id, "", folder)
            client.log_artifacts(run_id, local)
