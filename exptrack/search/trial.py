"""One trial, ask to close: sample a `TrialConfig`, open its MLflow run, `fit`, then tell Optuna
and close the run with the matching status. Failures of any kind end only this trial.

A trial reads a frozen `TrialContext` (the stores, the study's declaration, the open runs) and
hands back a `TrialOutcome` (state, value, recorded): it changes nothing of the loop that runs it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import platform
import signal
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from exptrack import config as cfg
from exptrack import records, study_store
from exptrack.errors import UserError, failure_reason, redact
from exptrack.search import checkpoints, feasibility, signals
from exptrack.search.options import CHECKPOINT_EVERY_S, CHECKPOINT_MB
from exptrack.search.space import SearchSpace
from exptrack.search.trial_reporter import TrialReporter
from exptrack.stores.faults import StoreFault, StoreUnavailable
from exptrack.stores.optuna_storage import params_in_one_write, set_user_attrs
from exptrack.study import Constraint, Study
from exptrack.tracking import runs, ui_links
from exptrack.tracking.journal import Journal
from exptrack.tracking.tracker import Tracker
from exptrack.tracking.trial_log import TrialLog
from exptrack.training import devices, fit, profiling
from exptrack.training import objective as objectives

TAKEN_OVER = "another worker marked this trial FAIL: no heartbeat reached it within the grace period"


class Progress(Protocol):
    """What the CLI shows while a search runs."""

    def start(self, done: int, total: int, metric: str) -> None: ...
    def trial_started(self, number: int, config: cfg.TrialConfig) -> None: ...
    def trial_finished(self, number: int, state: str, value: float | None, best: float | None) -> None: ...


@dataclasses.dataclass(frozen=True)
class TrialContext:
    """What one trial reads: its study and stores, the study's declaration and open runs."""

    study: optuna.Study
    spec: Study
    space: SearchSpace
    name: str  # the study's name (--new-study may have made it NAME-2)
    storage_url: str
    tracker: Tracker | None = None
    experiment_id: str | None = None
    parent_run_id: str | None = None  # None: no MLflow run is opened for the trial
    constraints: tuple[Constraint, ...] = ()
    learns_infeasible: bool = False  # an out-of-memory trial is told as infeasible, not FAIL
    traced: bool = False  # one of the first --profile-trials: torch.profiler traces its training
    progress: Progress | None = None
    warn: Callable[[str], None] = print
    interrupts: signals.Interrupts = dataclasses.field(default_factory=signals.Interrupts)
    journal: Journal | None = None  # this process's journal of the study (`tracking.journal`)
    checkpoint_mb: int = CHECKPOINT_MB  # --checkpoint-mb: a bigger checkpoint is not kept; 0: none
    checkpoint_every: float = CHECKPOINT_EVERY_S  # --checkpoint-every: seconds between two


@dataclasses.dataclass(frozen=True)
class TrialOutcome:
    """How one trial ended, for the loop's budget, failure count and summary."""

    number: int
    state: str  # COMPLETE, PRUNED or FAIL
    value: float | None  # its (first) objective; None when it failed
    recorded: bool = True  # False: tracking is on and its run lacks records (kept in the journal)
    traced: bool = False  # its training was traced (counts against --profile-trials)


def run_trial(ctx: TrialContext, trial: optuna.Trial) -> TrialOutcome:
    """Train an asked trial and tell its outcome. A signal or a `UserError` is re-raised once both
    stores record the trial as failed."""
    try:
        with params_in_one_write(trial):  # one transaction, not one a param (benchmarks/README.md)
            sampled = ctx.space.sample(trial, ctx.spec.fixed)
        asked = cfg.from_dict(sampled, source=ctx.space.source)
        # weights are the built-in's: a study's own function is not told they are unavailable
        config = asked if ctx.spec.custom_objective else fit.with_available_weights(asked, ctx.warn)
    except UpdateFinishedTrialError:  # failed by another worker before it was sampled (see _taken_over)
        return _outcome(ctx, trial.number, _taken_over(ctx, trial, None))
    except BaseException as exc:
        _outcome(ctx, trial.number, fail(ctx, trial, None, exc))
        raise
    log = TrialLog(ctx.journal, ctx.tracker, trial.number)
    run_id = _start_run(ctx, trial, config, asked.weights, log)
    if ctx.progress:
        ctx.progress.trial_started(trial.number, config)
    traced = ctx.traced and run_id is not None
    state, value = _train(ctx, trial, config, run_id, traced, log)
    recorded = log.settle(ctx.warn) and (run_id is not None or not _tracked(ctx))
    return _outcome(ctx, trial.number, state, recorded, traced, value)


def _train(
    ctx: TrialContext,
    trial: optuna.Trial,
    config: cfg.TrialConfig,
    run_id: str | None,
    traced: bool,
    log: TrialLog,
) -> tuple[str, float | None]:
    """The study's training function, then tell; the trial's final state name and, when told,
    its (first) value. Any failure (a raised exception, a return that is not a number) ends only
    this trial."""
    spec, saved = ctx.spec, _checkpoints(ctx, trial, config)
    reporter = TrialReporter(
        trial, ctx.tracker, run_id, list(spec.objectives), config.epochs, log, spec.custom_objective, ctx.warn,
        saved,
    )  # fmt: skip
    try:
        with ctx.interrupts.interruptible():
            returned = _call(ctx, config, reporter, run_id, traced)
            final = objectives.final_values(returned, reporter.last_report, spec.metric)
    except StoreFault:  # an outage is never the trial's failure: the repair retries it (and resumes)
        raise
    except BaseException as exc:
        if not _keep_for_retry(ctx, trial, exc, saved):
            saved.discard()
        out_of_memory = devices.is_out_of_memory(exc)
        fail(ctx, trial, run_id, exc, infeasible=out_of_memory and ctx.learns_infeasible, log=log)
        if isinstance(exc, KeyboardInterrupt | UserError | SystemExit):
            _outcome(ctx, trial.number, "FAIL")
            raise
    else:
        try:
            state = _tell(ctx, trial, run_id, reporter, final)
        except UpdateFinishedTrialError:  # its queued retry may resume from the checkpoint
            return _taken_over(ctx, trial, run_id, log), None
        except StoreUnavailable:  # trained: the journal keeps its result, the checkpoint is done
            saved.discard()
            raise
        saved.discard()
        return state, reporter.told_value
    if out_of_memory:  # after the except block, so the exception's frames (and tensors) are gone
        devices.release_memory()
    return "FAIL", None


def _checkpoints(
    ctx: TrialContext, trial: optuna.Trial, config: cfg.TrialConfig
) -> checkpoints.TrialCheckpoints:
    """The trial's checkpoint, in the study's folder; a retry resumes its predecessor's."""
    return checkpoints.TrialCheckpoints(
        checkpoints.folder_for(ctx.storage_url, ctx.name),
        trial.number,
        study_store.retry_number(trial),
        config.to_dict(),
        ctx.checkpoint_mb,
        ctx.warn,
        ctx.interrupts.shielded,
        ctx.checkpoint_every,
    )


def _keep_for_retry(
    ctx: TrialContext, trial: optuna.Trial, exc: BaseException, saved: checkpoints.TrialCheckpoints
) -> bool:
    """A SIGTERM (a scheduler's notice before preemption) with a checkpoint on disk: the trial is
    marked to be retried from it by the next search (`ownership.awaiting_retry`), the file kept.
    The epoch in progress is dropped: the last epoch end is what was saved, atomically, already."""
    if not (isinstance(exc, signals.Interrupted) and exc.signum == signal.SIGTERM and saved.saved_epoch):
        return False
    try:
        trial.set_user_attr(records.CHECKPOINT_EPOCH_ATTR, saved.saved_epoch)
    except (StoreFault, UpdateFinishedTrialError):
        return False
    ctx.warn(
        f"trial {trial.number}: its checkpoint after epoch {saved.saved_epoch} is kept ({saved.path}); "
        "the next exp search of this study resumes it"
    )
    return True


def _call(
    ctx: TrialContext, config: cfg.TrialConfig, reporter: TrialReporter, run_id: str | None, traced: bool
) -> Any:
    """The study's training function (the built-in `finetune` unless it names its own), given a
    trace folder when this is one of the first `--profile-trials` trials with a run to log to;
    the trace lands on the run under `profile/`, also when training fails (an OOM's trace helps)."""
    objective = ctx.spec.objective_function() or objectives.finetune
    if not traced or ctx.tracker is None or run_id is None:
        return objective(config, reporter)
    tracker = ctx.tracker

    def keep_trace(folder: Path) -> None:
        reporter.log.files(folder, records.PROFILE_DIR)
        tracker.artifacts.folder(run_id, folder, records.PROFILE_DIR)

    return objectives.call_traced(objective, config, reporter, keep_trace)


def _start_run(
    ctx: TrialContext, trial: optuna.Trial, config: cfg.TrialConfig, asked_weights: str, log: TrialLog
) -> str | None:
    """Store the config on the trial and open its run; when the weights asked for could not be
    had, both records carry what ran (`weights: none`) and a note of what was asked for."""
    note = {records.WEIGHTS_REQUESTED: asked_weights} if asked_weights != config.weights else {}
    set_user_attrs(trial, {records.CONFIG_ATTR: config.to_dict(), **note})
    if ctx.tracker is None or ctx.experiment_id is None or ctx.parent_run_id is None:
        return None
    provenance = {records.PROVENANCE_STUDY: ctx.name, records.PROVENANCE_TRIAL: trial.number, **note}
    retry_of = study_store.retry_number(trial)
    record = runs.TrialFacts(
        study_name=ctx.name,
        storage_url=ctx.storage_url,
        number=trial.number,
        params={**ctx.space.named_params(config.flat_params(), trial.params), **note},
        config_yaml=cfg.dump_yaml(config, provenance),
        node_id=records.system_node(platform.node(), profiling.physical_gpu(config.device)),
        retry_of=None if retry_of is None else str(retry_of),
    )
    opened = runs.OpenedRun(ctx.experiment_id, ctx.parent_run_id)
    run_id = runs.open_trial_run(ctx.tracker, opened, record)
    log.open(opened, record, run_id)
    if run_id is None:  # its run is written later, from the journal or else from this record
        with contextlib.suppress(StoreUnavailable):
            trial.set_user_attr(records.RUN_PENDING_ATTR, True)
        return None
    attrs = {records.RUN_ID_ATTR: run_id}
    base = ui_links.server_base(ctx.tracker.uri)
    if base:  # a link optuna-dashboard shows beside the trial (and that opens in a browser)
        attrs[records.RUN_URL_ATTR] = ui_links.run_url(base, ctx.experiment_id, run_id)
    set_user_attrs(trial, attrs)
    return run_id


def _tracked(ctx: TrialContext) -> bool:
    """Does the trial get an MLflow run (tracking on, the study's run open)?"""
    return ctx.tracker is not None and ctx.experiment_id is not None and ctx.parent_run_id is not None


def _tell(
    ctx: TrialContext,
    trial: optuna.Trial,
    run_id: str | None,
    reporter: TrialReporter,
    final: dict[str, float],
) -> str:
    """Tell Optuna the trained trial's outcome and close its run. The Optuna store down past its
    wait keeps the result: the tell goes to the journal (the next command that opens the study
    tells it) and the run is closed as trained, then the one-line outage ends the command."""
    history = reporter.history
    # the thread count CPU sums depend on, for `exp train` of an export (the built-in logs its own)
    profile = {records.TORCH_THREADS: float(devices.use_threads(None)), **reporter.figures}
    figures: dict[str, float] = {}  # the final epoch's figures are the curves' last points on MLflow
    for metric, direction in ctx.spec.objectives.items():
        values = [h[metric] for h in history if metric in h]
        if values:
            figures[f"{records.BEST_PREFIX}{metric}"] = (max if direction == "maximize" else min)(values)
    reporter.attrs[records.PROFILE_ATTR] = {**profile, records.TRAIN_STARTED_AT: reporter.train_started_at}
    # what an objective or a constraint may name (numbers: `feature_cache` is a text figure)
    reported = {k: v for k, v in {**profile, **final}.items() if not isinstance(v, str)}
    violations: dict[str, float] | None = None
    if ctx.constraints or ctx.learns_infeasible:  # before tell: the sampler reads them then
        try:
            violations = dict(feasibility.violations(ctx.constraints, reported))
        except ValueError as exc:
            return fail(ctx, trial, run_id, exc, log=reporter.log)
    state, told, why = _verdict(ctx, reporter.pruned, reported)
    if why is not None:
        return fail(ctx, trial, run_id, ValueError(why), log=reporter.log)
    kept: StoreUnavailable | None = None
    try:
        reporter.flush()
        broken = feasibility.record(trial, violations) if violations is not None else []
        if state == "PRUNED":
            frozen = ctx.study.tell(trial, state=TrialState.PRUNED)
        else:
            frozen = ctx.study.tell(trial, told)
        reporter.told_value = frozen.values[0] if frozen.values else None  # a pruned one's last report
    except StoreUnavailable as exc:
        kept, broken = exc, [name for name, value in (violations or {}).items() if value > 0]
        attrs = {**reporter.attrs, records.JOURNAL_CONSTRAINTS_KEY: violations}
        reporter.log.tell(state, told, reporter.kept, attrs)
    if ctx.tracker:
        pruned_epoch = len(history) if state == "PRUNED" else None
        closing = runs.closing(figures, profile, pruned_epoch=pruned_epoch, broken=broken)
        reporter.log.close(state, *closing)
        runs.finish_run(
            ctx.tracker, run_id, state, figures, profile, pruned_epoch=pruned_epoch, broken=broken
        )
    if kept is not None:
        ctx.warn(
            f"trial {trial.number} trained ({state}); the Optuna store is down, so its result is kept "
            f"in the journal {reporter.log.where()} and told by the next command that opens the study"
        )
        raise kept
    return state


def _verdict(
    ctx: TrialContext, pruned: bool, reported: Mapping[str, Any]
) -> tuple[str, list[float] | None, str | None]:
    """The state and values to tell, or why the trial fails (an objective missing or not finite)."""
    if pruned:
        return "PRUNED", None, None
    missing = [name for name in ctx.spec.objectives if name not in reported]
    if missing:
        return (
            "FAIL",
            None,
            f"objective {missing[0]} was not reported by this trial (it reported {', '.join(sorted(reported))})",
        )
    values = [reported[name] for name in ctx.spec.objectives]
    bad = [(n, v) for n, v in zip(ctx.spec.objectives, values, strict=True) if not _finite(v)]
    if bad:
        return "FAIL", None, f"objective {bad[0][0]}={bad[0][1]} is not a finite number"
    return "COMPLETE", [float(v) for v in values], None


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def fail(
    ctx: TrialContext,
    trial: optuna.Trial,
    run_id: str | None,
    exc: BaseException,
    infeasible: bool = False,
    log: TrialLog | None = None,
) -> str:
    """Record a failed trial in both stores, with the reason; never leave it RUNNING. With
    `infeasible` (out of memory, under a sampler that steers by constraints) Optuna is told an
    infeasible result the sampler learns from; the MLflow run still ends FAILED."""
    reason = failure_reason(exc)
    with contextlib.suppress(UpdateFinishedTrialError):  # already failed by another worker
        trial.set_user_attr(records.FAIL_REASON_ATTR, reason)
    if infeasible:
        feasibility.tell_out_of_memory(ctx.study, trial, ctx.constraints)
    else:
        ctx.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    if ctx.tracker:
        trace = None if isinstance(exc, KeyboardInterrupt) else "".join(traceback.format_exception(exc))
        if log is not None:
            texts = {records.TRACEBACK_ARTIFACT: redact(trace)} if trace is not None else {}
            log.close("FAIL", {}, runs.fail_tags(reason, infeasible), **texts)
        runs.fail_run(ctx.tracker, run_id, reason, trace, out_of_memory=infeasible)
    return "FAIL"


def _taken_over(
    ctx: TrialContext, trial: optuna.Trial, run_id: str | None, log: TrialLog | None = None
) -> str:
    """Another worker marked this trial FAIL while it trained (its heartbeat missed the grace
    period, e.g. the database was unreachable) and queued its retry: the result stays unused. Also
    before it was sampled: a database restart drops the advisory lock under which the trial was
    asked, and a worker that took the lock next found it without its worker recorded yet."""
    if ctx.tracker:
        if log is not None:
            log.close("FAIL", {}, runs.fail_tags(TAKEN_OVER))
        runs.fail_run(ctx.tracker, run_id, TAKEN_OVER)
    return "FAIL"


def _outcome(
    ctx: TrialContext,
    number: int,
    state: str,
    recorded: bool = True,
    traced: bool = False,
    value: float | None = None,  # as told; None: read from the study unless FAIL
) -> TrialOutcome:
    """The trial's outcome, shown on the progress line with the best feasible value so far. The
    study is read only for what the tell did not give (each read reloads every running trial)."""
    trials = None
    if state != "FAIL" and value is None:  # a pruned trial's value is its last reported one
        trials = ctx.study.get_trials(deepcopy=False)
        value = trials[number].values[0] if trials[number].values else None
    if ctx.progress is not None:
        best = None
        if not ctx.spec.multi_objective:
            trials = ctx.study.get_trials(deepcopy=False) if trials is None else trials
            complete = [t for t in trials if t.state == TrialState.COMPLETE]
            ranked = study_store.best_first(complete, ctx.spec.direction == "maximize")
            best = ranked[0].value if ranked else None
        ctx.progress.trial_finished(number, state, value, best)
    return TrialOutcome(number, state, value, recorded, traced)
