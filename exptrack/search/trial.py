"""One trial, ask to close: sample a `TrialConfig`, open its MLflow run, `fit`, then tell Optuna
and close the run with the matching status. Failures of any kind end only this trial.

A trial reads the stores and the study's declaration from its search (`TrialSearch`, which
`loop.Search` satisfies), so nothing is copied per trial.
"""

from __future__ import annotations

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
from optuna.trial import TrialState

from exptrack import config as cfg
from exptrack import records
from exptrack.errors import UserError, redact
from exptrack.search import signals
from exptrack.search.space import SearchSpace
from exptrack.study import Study
from exptrack.study_store import absolute_url
from exptrack.tracking import ui_links
from exptrack.tracking.tracker import Tracker
from exptrack.training import fit, profiling


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


class TrialReporter:
    """fit's reporter for one trial: Optuna pruning + MLflow per-epoch metrics."""

    def __init__(
        self, trial: optuna.Trial, tracker: Tracker | None, run_id: str | None, metric: str, epochs: int
    ) -> None:
        self.trial, self.tracker, self.run_id, self.metric = trial, tracker, run_id, metric
        self.epochs = epochs
        self.train_started_at = math.nan  # fit calls on_setup right before its first step

    def on_setup(self, facts: Mapping[str, Any]) -> None:
        self.train_started_at = time.time()
        if self.tracker:
            self.tracker.log_setup(self.run_id, facts)

    def on_epoch(self, epoch: int, metrics: Mapping[str, float]) -> bool:
        if self.tracker:
            self.tracker.log_epoch(self.run_id, epoch, metrics)
        value = metrics[self.metric]
        if not math.isfinite(value):
            raise fit.NonFiniteLossError(f"{self.metric} is {value} at epoch {epoch}")
        self.trial.report(value, epoch)
        # A trial whose training is complete is never pruned: after its last epoch there is
        # nothing left to save, and its value is as final as any complete trial's.
        return epoch < self.epochs and self.trial.should_prune()


def run_trial(search: TrialSearch, trial: optuna.Trial) -> str:
    """Train an asked trial and tell its outcome; returns the trial's final state name."""
    try:
        asked = cfg.from_dict(search.space.sample(trial, search.spec.fixed), source=search.space.source)
        config = fit.with_available_weights(asked, search.warn)
    except BaseException as exc:
        fail(search, trial, None, exc)
        raise
    run_id = _start_run(search, trial, config, asked.weights)
    if search.progress:
        search.progress.trial_started(trial.number, config)
    reporter = TrialReporter(trial, search.tracker, run_id, search.spec.metric, config.epochs)
    try:
        with signals.interruptible():
            result = _fit(search, config, reporter, run_id)
    except BaseException as exc:
        fail(search, trial, run_id, exc)
        if isinstance(exc, KeyboardInterrupt | UserError | SystemExit):
            raise
        out_of_memory = isinstance(exc, torch.OutOfMemoryError)
    else:
        return _tell(search, trial, run_id, result, reporter.train_started_at)
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
    metric = search.spec.metric
    final = dict(result.final)
    final.pop("epoch", None)
    figures = {f"{records.FINAL_PREFIX}{k}": v for k, v in final.items()}
    values = [h[metric] for h in result.history]
    if values:
        figures[f"{records.BEST_PREFIX}{metric}"] = (max if search.spec.direction == "maximize" else min)(
            values
        )
    trial.set_user_attr(records.PROFILE_ATTR, {**result.profile, records.TRAIN_STARTED_AT: started_at})
    if result.stopped_early:
        state = "PRUNED"
        search.study.tell(trial, state=TrialState.PRUNED)
    else:
        value = final.get(metric, math.nan)
        if not isinstance(value, int | float) or not math.isfinite(value):
            return fail(search, trial, run_id, ValueError(f"objective value {value} is not a finite number"))
        state = "COMPLETE"
        search.study.tell(trial, value)
    if search.tracker:
        pruned = {records.PRUNED_EPOCH_TAG: str(len(result.history))} if state == "PRUNED" else {}
        search.tracker.finish_trial(run_id, state, figures, result.profile, pruned)
    _report(search, trial.number, state)
    return state


def fail(search: TrialSearch, trial: optuna.Trial, run_id: str | None, exc: BaseException) -> str:
    """Record a failed trial in both stores, with the reason; never leave it RUNNING."""
    reason = (
        f"interrupted by {exc}" if isinstance(exc, signals.Interrupted) else f"{type(exc).__name__}: {exc}"
    )
    trial.set_user_attr(records.FAIL_REASON_ATTR, redact(reason)[:1000])
    search.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    if search.tracker:
        search.tracker.log(run_id, tags={records.FAIL_REASON_TAG: reason[:1000]})
        if not isinstance(exc, KeyboardInterrupt):
            search.tracker.log_file(
                run_id, records.TRACEBACK_ARTIFACT, "".join(traceback.format_exception(exc))
            )
        search.tracker.finish_trial(run_id, "FAIL", {})
    _report(search, trial.number, "FAIL")
    return "FAIL"


def release_memory() -> None:
    """Give the failed trial's memory back so the next trial can allocate it."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _report(search: TrialSearch, number: int, state: str) -> None:
    if search.progress is None:
        return
    frozen = search.study.get_trials(deepcopy=False)[number]
    try:
        best = search.study.best_value
    except ValueError:
        best = None
    search.progress.trial_finished(number, state, frozen.value, best)
