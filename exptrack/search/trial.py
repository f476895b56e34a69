"""One trial, ask to close: sample a `TrialConfig`, open its MLflow run, `fit`, then tell Optuna
and close the run with the matching status. Failures of any kind end only this trial.

A trial reads the stores and the study's declaration from its search (`TrialSearch`, which
`loop.Search` satisfies), so nothing is copied per trial.
"""

from __future__ import annotations

import contextlib
import gc
import math
import platform
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import optuna
import torch
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from exptrack import config as cfg
from exptrack import records, study_store
from exptrack.errors import UserError, failure_reason, redact
from exptrack.search import feasibility, signals
from exptrack.search.space import SearchSpace
from exptrack.study import Constraint, Study
from exptrack.study_store import absolute_url
from exptrack.tracking import ui_links
from exptrack.tracking.tracker import Tracker
from exptrack.training import fit, profiling

TAKEN_OVER = "another worker marked this trial FAIL: no heartbeat reached it within the grace period"


class Progress(Protocol):
    """What the CLI shows while a search runs."""

    def start(self, done: int, total: int, metric: str) -> None: ...
    def trial_started(self, number: int, config: cfg.TrialConfig) -> None: ...
    def trial_finished(self, number: int, state: str, value: float | None, best: float | None) -> None: ...


class TrialSearch(Protocol):
    """What a trial reads from the search running it."""

    study: optuna.Study
    spec: Study
    space: SearchSpace
    name: str
    storage_url: str
    tracker: Tracker | None
    experiment_id: str | None
    parent_run_id: str | None
    progress: Progress | None
    warn: Callable[[str], None]
    unrecorded: list[int]
    profile_trials_left: int  # how many more trials this invocation traces (--profile-trials)
    constraints: tuple[Constraint, ...]
    learns_infeasible: bool  # an out-of-memory trial is told as infeasible, not FAIL


class TrialReporter:
    """fit's reporter for one trial: Optuna pruning + MLflow per-epoch metrics. Every objective
    that is an epoch metric must stay finite; a single one is reported to Optuna each epoch (its
    learning curve, and what the pruner judges; Optuna takes no per-epoch values for several)."""

    def __init__(
        self,
        trial: optuna.Trial,
        tracker: Tracker | None,
        run_id: str | None,
        objectives: list[str],
        epochs: int,
    ) -> None:
        self.trial, self.tracker, self.run_id, self.epochs = trial, tracker, run_id, epochs
        self.watched = [name for name in objectives if name in records.EPOCH_METRICS]
        self.reports = len(objectives) == 1 and bool(self.watched)
        self.train_started_at = math.nan  # fit calls on_setup right before its first step

    def on_setup(self, facts: Mapping[str, Any]) -> None:
        self.train_started_at = time.time()
        if self.tracker:
            self.tracker.log_setup(self.run_id, facts)

    def on_epoch(self, epoch: int, metrics: Mapping[str, float]) -> bool:
        if self.tracker:
            self.tracker.log_epoch(self.run_id, epoch, metrics)
        for name in self.watched:
            if not math.isfinite(metrics[name]):
                raise fit.NonFiniteLossError(f"{name} is {metrics[name]} at epoch {epoch}")
        if not self.reports:
            return False
        self.trial.report(metrics[self.watched[0]], epoch)
        # A trial whose training is complete is never pruned: after its last epoch there is
        # nothing left to save, and its value is as final as any complete trial's.
        return epoch < self.epochs and self.trial.should_prune()


def run_trial(search: TrialSearch, trial: optuna.Trial) -> str:
    """Train an asked trial and tell its outcome; returns the trial's final state name."""
    try:
        asked = cfg.from_dict(search.space.sample(trial, search.spec.fixed), source=search.space.source)
        config = fit.with_available_weights(asked, search.warn)
    except UpdateFinishedTrialError:  # failed by another worker before it was sampled (see _taken_over)
        return _taken_over(search, trial, None)
    except BaseException as exc:
        fail(search, trial, None, exc)
        raise
    run_id = _start_run(search, trial, config, asked.weights)
    if search.progress:
        search.progress.trial_started(trial.number, config)
    reporter = TrialReporter(trial, search.tracker, run_id, list(search.spec.objectives), config.epochs)
    try:
        with signals.interruptible():
            result = _fit(search, config, reporter, run_id)
    except BaseException as exc:
        out_of_memory = isinstance(exc, torch.OutOfMemoryError)
        fail(search, trial, run_id, exc, infeasible=out_of_memory and search.learns_infeasible)
        if isinstance(exc, KeyboardInterrupt | UserError | SystemExit):
            raise
    else:
        try:
            return _tell(search, trial, run_id, result, reporter.train_started_at)
        except UpdateFinishedTrialError:
            return _taken_over(search, trial, run_id)
    if out_of_memory:  # after the except block, so the exception's frames (and tensors) are gone
        release_memory()
    return "FAIL"


def _fit(
    search: TrialSearch, config: cfg.TrialConfig, reporter: TrialReporter, run_id: str | None
) -> fit.FitResult:
    """`fit`, traced when this is one of the first `--profile-trials` trials with a run to log to;
    the trace lands on the run under `profile/`, also when training fails (an OOM's trace helps)."""
    if search.profile_trials_left <= 0 or search.tracker is None or run_id is None:
        return fit.fit(config, reporter, search.warn)
    search.profile_trials_left -= 1
    with tempfile.TemporaryDirectory(prefix="exptrack-trace-") as folder:
        try:
            return fit.fit(config, reporter, search.warn, Path(folder))
        finally:
            search.tracker.log_folder(run_id, Path(folder), records.PROFILE_DIR)


def _start_run(
    search: TrialSearch, trial: optuna.Trial, config: cfg.TrialConfig, asked_weights: str
) -> str | None:
    """Store the config on the trial and open its run; when the weights asked for could not be
    had, both records carry what ran (`weights: none`) and a note of what was asked for."""
    trial.set_user_attr(records.CONFIG_ATTR, config.to_dict())
    note = {records.WEIGHTS_REQUESTED: asked_weights} if asked_weights != config.weights else {}
    if note:
        trial.set_user_attr(records.WEIGHTS_REQUESTED, asked_weights)
    if search.tracker is None or search.experiment_id is None or search.parent_run_id is None:
        return None
    provenance = {records.PROVENANCE_STUDY: search.name, records.PROVENANCE_TRIAL: trial.number, **note}
    tags = {records.TRIAL_STORAGE_TAG: redact(absolute_url(search.storage_url))}
    if records.RETRY_ATTR in trial.user_attrs:
        tags[records.RETRY_OF_TAG] = str(trial.user_attrs[records.RETRY_ATTR])
    run_id = search.tracker.start_trial(
        search.experiment_id,
        search.parent_run_id,
        search.name,
        trial.number,
        {**search.space.named_params(config.flat_params(), trial.params), **note},
        cfg.dump_yaml(config, provenance),
        tags,
    )
    if run_id is None:
        search.unrecorded.append(trial.number)
        return None
    trial.set_user_attr(records.RUN_ID_ATTR, run_id)
    search.tracker.watch_system(
        run_id, records.system_node(platform.node(), profiling.physical_gpu(config.device))
    )
    base = ui_links.server_base(search.tracker.uri)
    if base:  # a link optuna-dashboard shows beside the trial (and that opens in a browser)
        trial.set_user_attr(records.RUN_URL_ATTR, ui_links.run_url(base, search.experiment_id, run_id))
    return run_id


def _tell(
    search: TrialSearch, trial: optuna.Trial, run_id: str | None, result: fit.FitResult, started_at: float
) -> str:
    final = dict(result.final)
    final.pop("epoch", None)
    figures = {f"{records.FINAL_PREFIX}{k}": v for k, v in final.items()}
    for metric, direction in search.spec.objectives.items():
        values = [h[metric] for h in result.history if metric in h]
        if values:
            figures[f"{records.BEST_PREFIX}{metric}"] = (max if direction == "maximize" else min)(values)
    trial.set_user_attr(records.PROFILE_ATTR, {**result.profile, records.TRAIN_STARTED_AT: started_at})
    reported = {**result.profile, **final}  # what an objective or a constraint may name
    tags: dict[str, str] = {}
    if search.constraints or search.learns_infeasible:  # before tell: the sampler reads them then
        try:
            violations = feasibility.violations(search.constraints, reported)
        except ValueError as exc:
            return fail(search, trial, run_id, exc)
        broken = feasibility.record(trial, violations)
        if broken:
            tags[records.INFEASIBLE_TAG] = ", ".join(broken)
    if result.stopped_early:
        state = "PRUNED"
        search.study.tell(trial, state=TrialState.PRUNED)
    else:
        missing = [name for name in search.spec.objectives if name not in reported]
        if missing:
            why = f"objective {missing[0]} was not reported by this trial (it reported {', '.join(sorted(reported))})"
            return fail(search, trial, run_id, ValueError(why))
        values = [reported[name] for name in search.spec.objectives]
        bad = [(n, v) for n, v in zip(search.spec.objectives, values, strict=True) if not _finite(v)]
        if bad:
            return fail(
                search, trial, run_id, ValueError(f"objective {bad[0][0]}={bad[0][1]} is not a finite number")
            )
        state = "COMPLETE"
        search.study.tell(trial, values)
    if search.tracker:
        if state == "PRUNED":
            tags[records.PRUNED_EPOCH_TAG] = str(len(result.history))
        search.tracker.finish_trial(run_id, state, figures, result.profile, tags)
    _report(search, trial.number, state)
    return state


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def fail(
    search: TrialSearch, trial: optuna.Trial, run_id: str | None, exc: BaseException, infeasible: bool = False
) -> str:
    """Record a failed trial in both stores, with the reason; never leave it RUNNING. With
    `infeasible` (out of memory, under a sampler that steers by constraints) Optuna is told an
    infeasible result the sampler learns from; the MLflow run still ends FAILED."""
    reason = failure_reason(exc)
    with contextlib.suppress(UpdateFinishedTrialError):  # already failed by another worker
        trial.set_user_attr(records.FAIL_REASON_ATTR, reason)
    if infeasible:
        feasibility.tell_out_of_memory(search.study, trial, search.constraints)
    else:
        search.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    if search.tracker:
        tags = {records.FAIL_REASON_TAG: reason}
        if infeasible:
            tags[records.INFEASIBLE_TAG] = records.OUT_OF_MEMORY
        search.tracker.log(run_id, tags=tags)
        if not isinstance(exc, KeyboardInterrupt):
            search.tracker.log_text(
                run_id, redact("".join(traceback.format_exception(exc))), records.TRACEBACK_ARTIFACT
            )
        search.tracker.finish_trial(run_id, "FAIL", {})
    _report(search, trial.number, "FAIL")
    return "FAIL"


def _taken_over(search: TrialSearch, trial: optuna.Trial, run_id: str | None) -> str:
    """Another worker marked this trial FAIL while it trained (its heartbeat missed the grace
    period, e.g. the database was unreachable) and queued its retry: the result stays unused. Also
    before it was sampled: a database restart drops the advisory lock under which the trial was
    asked, and a worker that took the lock next found it without its worker recorded yet."""
    if search.tracker:
        search.tracker.log(run_id, tags={records.FAIL_REASON_TAG: TAKEN_OVER})
        search.tracker.finish_trial(run_id, "FAIL", {})
    _report(search, trial.number, "FAIL")
    return "FAIL"


def release_memory() -> None:
    """Give the failed trial's memory back so the next trial can allocate it."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _report(search: TrialSearch, number: int, state: str) -> None:
    """The progress line: the trial's (first) objective and the best feasible one so far."""
    if search.progress is None:
        return
    frozen = search.study.get_trials(deepcopy=False)[number]
    value = frozen.values[0] if frozen.values and state != "FAIL" else None
    best = None
    if not search.spec.multi_objective:
        ranked = study_store.best_first(
            search.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
            search.spec.direction == "maximize",
        )
        best = ranked[0].value if ranked else None
    search.progress.trial_finished(number, state, value, best)
