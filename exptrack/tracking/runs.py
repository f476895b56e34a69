"""The domain API of exptrack's MLflow runs, which owns their tag layout: the study's parent run
(one per Optuna study, adopted by every worker on any machine), a trial's run nested under it, an
`exp train` run; each closed with the status matching its state (`records.RUN_STATUS`, the state
itself in a tag, since MLflow shows a pruned run like a failed one), and runs a dead process left
RUNNING closed with the reason. Callers hand over what happened, never tags."""

from __future__ import annotations

import dataclasses
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from exptrack import processes, records
from exptrack.errors import UserError, first_line, redact
from exptrack.records import ROLE_TAG, RUN_STATUS, STUDY_TAG, TRIAL_TAG
from exptrack.stores.url import parse
from exptrack.tracking import queries, ui_links
from exptrack.tracking.tracker import Tracker


@dataclasses.dataclass(frozen=True)
class StudyFacts:
    """What the study's parent run records of it."""

    name: str
    uid: str  # the Optuna study's identity: the parent run belongs to the study it tags
    storage_url: str  # tagged with the password removed
    sampler: str
    pruner: str
    objectives: Mapping[str, str]  # figure -> direction, in value order
    search_space: Mapping[str, Any]  # the space as declared (a param)
    params: Sequence[str]  # the space's parameter names, the columns of the saved runs view
    constraints: Sequence[str] = ()
    files: Sequence[Path] = ()  # the study file and its search space, logged once
    adopt_untagged: bool = False  # a study older than the uid tag takes the untagged run of its name


@dataclasses.dataclass(frozen=True)
class OpenedRun:
    experiment_id: str
    run_id: str
    replaced: str | None = None  # a study run: another Optuna study's parent run of its name, if any


@dataclasses.dataclass(frozen=True)
class TrialFacts:
    """What a trial's run records when it opens."""

    study_name: str
    storage_url: str  # where its Optuna trial lives, tagged with the password removed
    number: int
    params: Mapping[str, Any]  # the active parameters, by name
    config_yaml: str  # the whole config, an artifact `exp train` runs again
    node_id: str | None = None  # its system metrics' node (`records.system_node`); None: not sampled
    retry_of: str | None = None  # the trial whose dead worker it repeats


def experiment_id(tracker: Tracker, name: str) -> str:
    """The experiment of this name, created (or restored) when needed."""
    experiment = tracker.client.get_experiment_by_name(name)
    if experiment is None:
        from mlflow.exceptions import MlflowException

        try:
            return tracker.client.create_experiment(
                name, tags={STUDY_TAG: name, **records.EXPERIMENT_KIND_TAGS}
            )
        except MlflowException as exc:  # another search (other Optuna store) created it just now
            experiment = tracker.client.get_experiment_by_name(name)
            if experiment is None:
                raise exc from None
    if experiment.lifecycle_stage == "deleted":
        tracker.client.restore_experiment(experiment.experiment_id)
    return str(experiment.experiment_id)


def open_study_run(tracker: Tracker, study: StudyFacts) -> OpenedRun:
    """The study's experiment and parent run, its search space as a param and its saved runs view.
    The parent run belongs to one Optuna study, the one whose `uid` it is tagged with: a new study
    of the same name (its Optuna store reset) gets a new parent run, and names the older one.
    A store that stops answering here (after the preflight's check: e.g. a `--workers` worker
    starting into an outage) is one line, not an unexpected error: no trial has started."""
    from mlflow.exceptions import MlflowException

    try:
        opened = _parent_run(tracker, study)
    except MlflowException as exc:
        raise UserError(
            f"MLflow tracking store {redact(tracker.uri)} could not open the study's runs "
            f"({first_line(exc, 200)}); no trial started: start or fix it, then re-run the same command"
        ) from exc
    tracker.log(opened.run_id, params={records.SEARCH_SPACE_PARAM: str(study.search_space)})
    first, *others = (_column(figure) for figure in study.objectives)
    maximize = next(iter(study.objectives.values())) == "maximize"
    key, value = ui_links.runs_view_tag(study.name, first, maximize, list(study.params), others)
    with tracker.guard("save the runs table view"):
        tracker.client.set_experiment_tag(opened.experiment_id, key, value)
    return opened


def _parent_run(tracker: Tracker, study: StudyFacts) -> OpenedRun:
    experiment = experiment_id(tracker, study.name)
    runs = queries.study_runs(tracker, experiment, study.name)
    mine = [r for r in runs if r.data.tags.get(records.STUDY_UID_TAG) == study.uid]
    if not mine and study.adopt_untagged:
        mine = [r for r in runs if records.STUDY_UID_TAG not in r.data.tags][:1]
    tags = _study_tags(study)
    if mine:
        run_id = mine[0].info.run_id
        tracker.client.update_run(run_id, status="RUNNING")
        tracker.log(run_id, tags=tags)
        return OpenedRun(experiment, run_id)
    run_id = tracker.client.create_run(experiment, run_name=study.name, tags=tags).info.run_id
    for path in study.files:
        with tracker.guard(f"log {path.name} on the study run"):
            tracker.client.log_artifact(run_id, str(path), artifact_path=records.STUDY_FILES_DIR)
    return OpenedRun(experiment, run_id, runs[-1].info.run_id if runs else None)


def _study_tags(study: StudyFacts) -> dict[str, str]:
    tags = {
        ROLE_TAG: records.ROLE_STUDY,
        STUDY_TAG: study.name,
        records.STUDY_UID_TAG: study.uid,
        records.HOST_TAG: platform.node(),
        records.STORAGE_TAG: redact(parse(study.storage_url).absolute().text),
        records.SAMPLER_TAG: study.sampler,
        records.PRUNER_TAG: study.pruner,
        records.METRIC_TAG: ",".join(study.objectives),
        records.DIRECTION_TAG: ",".join(study.objectives.values()),
        records.OPTUNA_STUDY_TAG: study.name,
    }
    if study.constraints:
        tags[records.CONSTRAINTS_TAG] = ", ".join(study.constraints)
    return tags


def _column(figure: str) -> str:
    """An objective's column in the runs table: an epoch metric's latest value, or a cost figure's
    tag under `profile/` (see records.PROFILE_DIR: cost figures are tags, not metrics)."""
    if figure in records.EPOCH_METRICS:
        return f"metrics.`{figure}`"
    return f"tags.`{records.profile_tag(figure)}`"


def close_study_run(tracker: Tracker, run_id: str, status: str, metrics: Mapping[str, float]) -> None:
    tracker.log(run_id, metrics=metrics)
    with tracker.guard("close the study run"):
        tracker.client.set_terminated(run_id, status=status)


def open_trial_run(tracker: Tracker, study: OpenedRun, trial: TrialFacts) -> str | None:
    """The trial's run nested under the study's (its tags in the same write), its system metrics
    sampled until it closes; None if MLflow is down. Its params and config.yaml follow in the
    background: the run id, which the trial stores before training, is the only write training
    waits for (~5 ms on sqlite)."""
    name, what = records.trial_run_name(trial.number), f"the run of trial {trial.number}"
    run_id = tracker.create_run(study.experiment_id, name, trial_tags(study, trial), f"open {what}")
    if run_id is None:
        return None
    tracker.log_later(run_id, params=trial.params)
    tracker.artifacts.text_later(
        run_id, trial.config_yaml, records.CONFIG_ARTIFACT, f"log the config of trial {trial.number}"
    )
    if trial.node_id is not None:
        tracker.watch_system(run_id, trial.node_id)
    return run_id


def trial_tags(study: OpenedRun, trial: TrialFacts) -> dict[str, str]:
    """A trial run's tags, written with its creation (live, or restored after an outage)."""
    tags = {
        records.PARENT_RUN_TAG: study.run_id,
        ROLE_TAG: records.ROLE_TRIAL,
        STUDY_TAG: trial.study_name,
        TRIAL_TAG: str(trial.number),
        records.TRIAL_STORAGE_TAG: redact(parse(trial.storage_url).absolute().text),
    }
    if trial.retry_of is not None:
        tags[records.RETRY_OF_TAG] = trial.retry_of
    return tags


def closing(
    summary: Mapping[str, float],
    profile: Mapping[str, float | str] | None = None,
    *,
    pruned_epoch: int | None = None,
    broken: Sequence[str] = (),
) -> tuple[dict[str, float], dict[str, str]]:
    """The metrics and tags a trial's run closes with (live, or restored after an outage). Its
    single figures are tags, not metrics, so the UI's metrics tab opens on the learning curves
    (records.PROFILE_DIR says why): `summary` (best_val_accuracy, ...) as is, `profile`'s cost
    figures under `profile/`; then the epoch a pruned trial stopped after and the constraints it
    broke. No metrics: the final epoch's figures are the curves' last points."""
    figures = {**summary, **{records.profile_tag(k): v for k, v in (profile or {}).items()}}
    tags = {name: str(value) for name, value in figures.items()}  # str(float) reads back exactly
    if pruned_epoch is not None:
        tags[records.PRUNED_EPOCH_TAG] = str(pruned_epoch)
        tags[records.DESCRIPTION_TAG] = records.pruned_description(pruned_epoch)
    if broken:
        tags[records.INFEASIBLE_TAG] = ", ".join(broken)
    return {}, tags


def finish_run(
    tracker: Tracker,
    run_id: str | None,
    state: str,
    summary: Mapping[str, float],
    profile: Mapping[str, float | str] | None = None,
    *,
    pruned_epoch: int | None = None,
    broken: Sequence[str] = (),
) -> None:
    """Close a trial's (or `exp train`'s) run with the status matching `state` once its queued
    writes are done, with what `closing` says it closes with."""
    figures, tags = closing(summary, profile, pruned_epoch=pruned_epoch, broken=broken)
    tracker.close_run(run_id, state, figures, tags)


def fail_run(
    tracker: Tracker,
    run_id: str | None,
    reason: str,
    traceback: str | None = None,
    out_of_memory: bool = False,
) -> None:
    """Close a run FAILED with the reason (and the traceback, as an artifact); `out_of_memory`:
    an infeasible trial under a sampler that steers by constraints."""
    tags = fail_tags(reason, out_of_memory)
    tracker.log(run_id, tags=tags)
    if traceback is not None:
        tracker.artifacts.text(run_id, redact(traceback), records.TRACEBACK_ARTIFACT)
    tracker.close_run(run_id, "FAIL", {})


def fail_tags(reason: str, out_of_memory: bool = False) -> dict[str, str]:
    """The tags of a failed run: why, and whether it ran out of memory (an infeasible trial)."""
    tags = {records.FAIL_REASON_TAG: reason}
    if out_of_memory:
        tags[records.INFEASIBLE_TAG] = records.OUT_OF_MEMORY
    return tags


def open_train_run(
    tracker: Tracker,
    experiment: str,
    config_file: Path,
    provenance: Mapping[str, Any],
    params: Mapping[str, Any],
) -> OpenedRun:
    """An `exp train` run of `config_file` in `experiment` (the study its config came from), owned
    by this process, so the next `exp train` or search closes it if the process dies."""
    tags = {
        ROLE_TAG: records.ROLE_TRAIN,
        records.CONFIG_FILE_TAG: str(config_file),
        records.HOST_TAG: platform.node(),
        records.OWNER_TAG: processes.worker_id(),  # with the run's creation: no window without it
    }
    study, trial = provenance.get(records.PROVENANCE_STUDY), provenance.get(records.PROVENANCE_TRIAL)
    if study is not None and trial is not None:
        tags[STUDY_TAG] = str(study)
        tags[records.REPRODUCES_TAG] = f"{study}/{records.trial_run_name(int(trial))}"
    if provenance.get(records.PROVENANCE_RUN_ID):
        tags[records.SOURCE_RUN_TAG] = str(provenance[records.PROVENANCE_RUN_ID])
    experiment_run = experiment_id(tracker, experiment)
    run_id = tracker.client.create_run(
        experiment_run, run_name=f"train-{config_file.stem}", tags=tags
    ).info.run_id
    tracker.log(run_id, params=params)
    return OpenedRun(experiment_run, run_id)


def tag_search_warnings(tracker: Tracker, run_id: str, lines: Sequence[str]) -> None:
    """File the search's warnings (a flat study, ...) on its study run, one per line."""
    tracker.log(run_id, tags={records.SEARCH_WARNINGS_TAG: "\n".join(lines)})


@dataclasses.dataclass(frozen=True)
class RepeatFacts:
    """What an `exp confirm` repeat's run records when it opens: the trial it repeats, its seed."""

    study_name: str
    number: int
    seed: int
    params: Mapping[str, Any]  # every config field, as an exp train run has them
    config_yaml: str


def open_confirm_run(tracker: Tracker, study: OpenedRun, repeat: RepeatFacts) -> str:
    """A repeat of trial `number` with a fresh seed, nested under the study's run beside the trials
    (tagged role=confirm, so the trials view and `exp trials` leave it out), owned by this process:
    the next `exp confirm` closes it if the process dies, and runs that seed again."""
    tags = {
        records.PARENT_RUN_TAG: study.run_id,
        ROLE_TAG: records.ROLE_CONFIRM,
        STUDY_TAG: repeat.study_name,
        records.CONFIRMS_TAG: str(repeat.number),
        records.CONFIRM_SEED_TAG: str(repeat.seed),
        records.HOST_TAG: platform.node(),
        records.OWNER_TAG: processes.worker_id(),
    }
    name = f"confirm-{records.trial_run_name(repeat.number)}-seed-{repeat.seed}"
    run_id = tracker.client.create_run(study.experiment_id, run_name=name, tags=tags).info.run_id
    tracker.log(run_id, params=repeat.params)
    tracker.artifacts.text(run_id, repeat.config_yaml, records.CONFIG_ARTIFACT)
    return str(run_id)


def close_dead_confirm_runs(tracker: Tracker, runs: Sequence[Any]) -> list[str]:
    """Close the confirm runs among `runs` left RUNNING by a process that is gone, as FAILED with
    the reason; their ids (their seeds are then run again)."""
    closed = []
    for run in runs:
        owner = run.data.tags.get(records.OWNER_TAG)
        if run.info.status == "RUNNING" and owner and processes.owner_is_dead(owner):
            reason = f"process {owner} died while the run trained (killed or crashed)"
            close_stale_run(tracker, run.info.run_id, "FAILED", reason)
            closed.append(run.info.run_id)
    return closed


def record_confirmation(tracker: Tracker, study_run_id: str, summary: str, table_csv: str) -> None:
    """`exp confirm`'s verdict and per-config lines as a tag on the study run, its table as an artifact."""
    tracker.log(study_run_id, tags={records.CONFIRM_SUMMARY_TAG: summary})
    tracker.artifacts.text(study_run_id, table_csv, records.CONFIRM_ARTIFACT)


def close_stale_run(tracker: Tracker, run_id: str, status: str, reason: str) -> None:
    """Close a run a dead process left RUNNING, saying why."""
    state = {v: k for k, v in RUN_STATUS.items()}.get(status, "FAIL")
    tracker.log(run_id, tags={records.FAIL_REASON_TAG: reason, records.STATE_TAG: state})
    with tracker.guard(f"close run {run_id}"):
        tracker.client.set_terminated(run_id, status=status)


def close_dead_train_runs(tracker: Tracker, experiment_ids: list[str] | None = None) -> list[str]:
    """Close the `exp train` runs left RUNNING by a process that is gone (killed, say), as
    FAILED with the reason; in `experiment_ids`, else in every active experiment. Their ids."""
    try:
        runs = queries.running_train_runs(tracker, experiment_ids)
    except Exception as exc:  # a repair must not stop the command that tries it
        tracker.warn(f"exp train runs left RUNNING not looked for ({type(exc).__name__}: {first_line(exc)})")
        return []
    closed = []
    for run in runs:
        owner = run.data.tags.get(records.OWNER_TAG)
        if owner and processes.owner_is_dead(owner):
            reason = f"process {owner} died while the run trained (killed or crashed)"
            close_stale_run(tracker, run.info.run_id, "FAILED", reason)
            closed.append(run.info.run_id)
    return closed
