"""One trial, ask to close: sample a `TrialConfig`, open its MLflow run, `train.fit`, then tell
Optuna and close the run with the matching status. Failures of any kind end only this trial."""

from __future__ import annotations

import dataclasses
import gc
import math
import traceback
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import optuna
import torch
from optuna.trial import TrialState

from exptrack import config as cfg
from exptrack import dashboards, signals, train
from exptrack import space as spaces
from exptrack.errors import UserError, redact
from exptrack.stores import CONFIG_ATTR, FAIL_REASON_ATTR, RETRY_ATTR, RUN_ID_ATTR
from exptrack.study import Study
from exptrack.tracking import Tracker


class Progress(Protocol):
    """What the CLI shows while a search runs."""

    def start(self, done: int, total: int) -> None: ...
    def trial_started(self, number: int, config: cfg.TrialConfig) -> None: ...
    def trial_finished(self, number: int, state: str, value: float | None, best: float | None) -> None: ...


class TrialReporter:
    """train.fit's reporter for one trial: Optuna pruning + MLflow per-epoch metrics."""

    def __init__(self, trial: optuna.Trial, tracker: Tracker | None, run_id: str | None, metric: str) -> None:
        self.trial, self.tracker, self.run_id, self.metric = trial, tracker, run_id, metric

    def on_setup(self, facts: Mapping[str, Any]) -> None:
        if self.tracker:
            self.tracker.log(self.run_id, tags={f"exptrack.{k}": str(v) for k, v in facts.items()})

    def on_epoch(self, epoch: int, metrics: Mapping[str, float]) -> bool:
        if self.tracker:
            self.tracker.log_epoch(self.run_id, epoch, metrics)
        value = metrics[self.metric]
        if not math.isfinite(value):
            raise train.NonFiniteLossError(f"{self.metric} is {value} at epoch {epoch}")
        self.trial.report(value, epoch)
        return self.trial.should_prune()


@dataclasses.dataclass
class TrialContext:
    """What a trial needs from its search: the stores, the study's spec and where to report."""

    study: optuna.Study
    spec: Study
    space: spaces.SearchSpace
    name: str
    storage_url: str
    tracker: Tracker | None
    experiment_id: str | None
    parent_run_id: str | None
    progress: Progress | None
    warn: Callable[[str], None]
    unrecorded: list[int]  # trials whose MLflow run could not be opened (tracking outage)


def run_trial(ctx: TrialContext, trial: optuna.Trial) -> str:
    """Train an asked trial and tell its outcome; returns the trial's final state name."""
    try:
        config = cfg.from_dict(ctx.space.sample(trial, ctx.spec.fixed), source=ctx.space.source)
    except BaseException as exc:
        fail(ctx, trial, None, exc)
        raise
    run_id = _start_run(ctx, trial, config)
    if ctx.progress:
        ctx.progress.trial_started(trial.number, config)
    reporter = TrialReporter(trial, ctx.tracker, run_id, ctx.spec.metric)
    try:
        with signals.interruptible():
            result = train.fit(config, reporter, ctx.warn)
    except BaseException as exc:
        fail(ctx, trial, run_id, exc)
        if isinstance(exc, KeyboardInterrupt | UserError | SystemExit):
            raise
        out_of_memory = isinstance(exc, torch.OutOfMemoryError)
    else:
        return _tell(ctx, trial, run_id, result)
    if out_of_memory:  # after the except block, so the exception's frames (and tensors) are gone
        release_memory()
    return "FAIL"


def _start_run(ctx: TrialContext, trial: optuna.Trial, config: cfg.TrialConfig) -> str | None:
    trial.set_user_attr(CONFIG_ATTR, config.to_dict())
    if ctx.tracker is None or ctx.experiment_id is None or ctx.parent_run_id is None:
        return None
    run_id = ctx.tracker.start_trial(
        ctx.experiment_id,
        ctx.parent_run_id,
        ctx.name,
        trial.number,
        config.flat_params(),
        cfg.dump_yaml(config, {"study": ctx.name, "trial": trial.number}),
    )
    if run_id is None:
        ctx.unrecorded.append(trial.number)
        return None
    trial.set_user_attr(RUN_ID_ATTR, run_id)
    tags = {"optuna.storage": redact(ctx.storage_url)}
    if RETRY_ATTR in trial.user_attrs:
        tags["exptrack.retry_of"] = str(trial.user_attrs[RETRY_ATTR])
    ctx.tracker.log(run_id, tags=tags)
    return run_id


def _tell(ctx: TrialContext, trial: optuna.Trial, run_id: str | None, result: train.FitResult) -> str:
    final = dict(result.final)
    final.pop("epoch", None)
    figures = {**result.profile, **{f"final_{k}": v for k, v in final.items()}}
    values = [h[ctx.spec.metric] for h in result.history]
    if values:
        figures[f"best_{ctx.spec.metric}"] = (max if ctx.spec.direction == "maximize" else min)(values)
    trial.set_user_attr(dashboards.PROFILE_ATTR, result.profile)
    if result.stopped_early:
        state = "PRUNED"
        ctx.study.tell(trial, state=TrialState.PRUNED)
    else:
        value = final.get(ctx.spec.metric, math.nan)
        if not isinstance(value, int | float) or not math.isfinite(value):
            return fail(ctx, trial, run_id, ValueError(f"objective value {value} is not a finite number"))
        state = "COMPLETE"
        ctx.study.tell(trial, value)
    if ctx.tracker:
        ctx.tracker.finish_trial(run_id, state, figures)
    report(ctx, trial.number, state)
    return state


def fail(ctx: TrialContext, trial: optuna.Trial, run_id: str | None, exc: BaseException) -> str:
    """Record a failed trial in both stores, with the reason; never leave it RUNNING."""
    reason = (
        f"interrupted by {exc}" if isinstance(exc, signals.Interrupted) else f"{type(exc).__name__}: {exc}"
    )
    trial.set_user_attr(FAIL_REASON_ATTR, redact(reason)[:1000])
    ctx.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    if ctx.tracker:
        ctx.tracker.log(run_id, tags={"exptrack.fail_reason": reason[:1000]})
        if not isinstance(exc, KeyboardInterrupt):
            ctx.tracker.log_file(run_id, "traceback.txt", "".join(traceback.format_exception(exc)))
        ctx.tracker.finish_trial(run_id, "FAIL", {})
    report(ctx, trial.number, "FAIL")
    return "FAIL"


def release_memory() -> None:
    """Give the failed trial's memory back so the next trial can allocate it."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def report(ctx: TrialContext, number: int, state: str) -> None:
    if ctx.progress is None:
        return
    frozen = ctx.study.get_trials(deepcopy=False)[number]
    try:
        best = ctx.study.best_value
    except ValueError:
        best = None
    ctx.progress.trial_finished(number, state, frozen.value, best)
