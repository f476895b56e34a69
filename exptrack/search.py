"""The Optuna side of a search: storage, sampler, pruner, trial budget and the per-trial objective.

Ask/tell drives each trial: `study.ask()` -> sample a `TrialConfig` -> open its MLflow run ->
`train.fit` -> `study.tell(...)` -> close the run with the status matching the trial's state.
Callbacks around `optimize` could not open the run before training or close it correctly.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import traceback
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.trial import TrialState

from exptrack import config as cfg
from exptrack import dashboards, train
from exptrack import space as spaces
from exptrack.errors import UserError, redact
from exptrack.stores import DEFAULT_STORAGE, RUN_ID_ATTR, load_existing_study, resolve_storage  # noqa: F401 (moved, re-exported)
from exptrack.study import Study
from exptrack.tracking import Tracker

SAMPLERS = ("tpe", "random", "cmaes", "gp", "qmc", "grid")
PRUNERS = ("none", "median", "hyperband")
MAX_CONSECUTIVE_FAILURES = 5
DASHBOARD_EVERY_S = 30.0  # a page inlines 4.8 MB of plotly.js: re-render at most this often, and at the end
optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


@dataclasses.dataclass(frozen=True)
class SearchOptions:
    trials: int
    timeout: float | None = None  # seconds for this invocation
    storage: str | None = None
    study_name: str | None = None
    sampler: str | None = None  # None: the study file's choice
    pruner: str | None = None
    seed: int | None = None


class Progress(Protocol):
    """What the CLI shows while a search runs."""

    def start(self, done: int, total: int) -> None: ...
    def trial_started(self, number: int, config: cfg.TrialConfig) -> None: ...
    def trial_finished(self, number: int, state: str, value: float | None, best: float | None) -> None: ...


@dataclasses.dataclass
class SearchSummary:
    study_name: str
    experiment_id: str | None
    parent_run_id: str | None
    finished: int
    ran: int  # trials this invocation ran
    best: list[optuna.trial.FrozenTrial]
    tracking_failures: list[str]


def make_sampler(name: str, seed: int | None, space: spaces.SearchSpace) -> optuna.samplers.BaseSampler:
    if name == "tpe":  # multivariate + group handles the conditional loss parameters together
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    if name == "grid":
        if not space.is_discrete():
            raise UserError(
                "--sampler grid needs a discrete space: give every float a step, or use tpe/random"
            )
        return optuna.samplers.BruteForceSampler(seed=seed)
    raise UserError(f"unknown sampler {name!r}; use one of {', '.join(SAMPLERS)}")


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":  # judge from epoch 1 on, once 5 trials have set a median
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, epochs), reduction_factor=3)
    raise UserError(f"unknown pruner {name!r}; use one of {', '.join(PRUNERS)}")


def counted_trials(study: optuna.Study) -> int:
    """Trials that count toward --trials: those that ran to an end (complete or pruned)."""
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


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


class Search:
    """One study's search in this process."""

    def __init__(
        self,
        study: Study,
        options: SearchOptions,
        tracker: Tracker | None,
        progress: Progress | None = None,
        warn: Callable[[str], None] = print,
    ) -> None:
        self.spec, self.options, self.tracker, self.progress, self.warn = (
            study,
            options,
            tracker,
            progress,
            warn,
        )
        self.name = options.study_name or study.name
        self.space = spaces.load(study.search_space_path())
        self.storage_url = resolve_storage(options.storage)
        train.check(
            cfg.from_dict(self.space.sample(optuna.trial.FixedTrial(_first_point(self.space)), study.fixed))
        )
        train.resolve_device(str(study.fixed.get("device", "auto")))
        epochs = int(study.fixed.get("epochs", cfg.TrialConfig.epochs))
        self.sampler = make_sampler(options.sampler or study.sampler, options.seed, self.space)
        self.pruner = make_pruner(options.pruner or study.pruner, epochs)
        self.study = self._open_study()
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.dashboard = self._dashboard_path()
        self._dashboard_at = -math.inf

    def _dashboard_path(self) -> Path | None:
        """The study's dashboard file, validated now; a missing default one just means no dashboard."""
        if not self.spec.dashboard:
            return None
        path = self.spec.resolve(self.spec.dashboard)
        if not path.is_file():
            return None
        dashboards.load(path)
        return path

    def _open_study(self) -> optuna.Study:
        try:
            storage = optuna.storages.RDBStorage(
                self.storage_url, engine_kwargs=_engine_kwargs(self.storage_url)
            )
        except Exception as exc:
            raise UserError(
                f"Optuna storage {redact(self.storage_url)} cannot be opened ({type(exc).__name__}); fix --storage"
            ) from exc
        study = optuna.create_study(
            study_name=self.name,
            storage=storage,
            sampler=self.sampler,
            pruner=self.pruner,
            direction=self.spec.direction,
            load_if_exists=True,
        )
        attrs = {
            "metric": self.spec.metric,
            "search_space": self.space.describe(),
            "fixed": dict(self.spec.fixed),
        }
        for key, value in attrs.items():
            if key not in study.user_attrs:
                study.set_user_attr(key, value)
        return study

    def run(self) -> SearchSummary:
        done_before = counted_trials(self.study)
        if self.progress:
            self.progress.start(done_before, self.options.trials)
        self.open_tracking()
        started, ran, failures_in_row = time.monotonic(), 0, 0
        status = "FAILED"
        try:
            while counted_trials(self.study) < self.options.trials:
                if self.options.timeout is not None and time.monotonic() - started > self.options.timeout:
                    break
                state = self.run_trial()
                self.refresh_dashboard()
                ran += 1
                failures_in_row = failures_in_row + 1 if state == "FAIL" else 0
                if failures_in_row >= MAX_CONSECUTIVE_FAILURES:
                    raise UserError(
                        f"{failures_in_row} trials failed in a row; the search stopped. "
                        "Read the traceback.txt of the failed runs in MLflow and fix the cause"
                    )
            status = "FINISHED"
        finally:
            self._close_tracking(status)
        return self.summary(ran)

    def summary(self, ran: int) -> SearchSummary:
        complete = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        reverse = self.spec.direction == "maximize"
        best = sorted(complete, key=lambda t: t.value if t.value is not None else -math.inf, reverse=reverse)
        return SearchSummary(
            self.name,
            self.experiment_id,
            self.parent_run_id,
            counted_trials(self.study),
            ran,
            best[:5],
            list(self.tracker.failures) if self.tracker else [],
        )

    def open_tracking(self) -> None:
        if self.tracker is None:
            return
        tags = {
            "storage": redact(self.storage_url),
            "sampler": type(self.sampler).__name__,
            "pruner": type(self.pruner).__name__,
            "metric": self.spec.metric,
            "direction": self.spec.direction,
            "optuna_study": self.name,
        }
        files = [p for p in (self.spec.source_path, self.spec.search_space_path()) if p is not None]
        self.experiment_id, self.parent_run_id = self.tracker.open_study_run(self.name, tags, files)
        self.tracker.log(self.parent_run_id, params={"search_space": str(self.space.describe())})

    def refresh_dashboard(self, force: bool = False) -> None:
        """Re-render the study's dashboard onto its parent run as `dashboard.html`."""
        if self.tracker is None or self.parent_run_id is None or self.dashboard is None:
            return
        if not force and time.monotonic() - self._dashboard_at < DASHBOARD_EVERY_S:
            return
        self._dashboard_at = time.monotonic()
        self.tracker.log_file(
            self.parent_run_id, "dashboard.html", dashboards.render(self.study, self.dashboard)
        )

    def _close_tracking(self, status: str) -> None:
        if self.tracker is None or self.parent_run_id is None:
            return
        self.refresh_dashboard(force=True)
        metrics: dict[str, float] = {"finished_trials": float(counted_trials(self.study))}
        best = self.summary(0).best
        if best and best[0].value is not None:
            metrics[f"best_{self.spec.metric}"] = best[0].value
        self.tracker.close_study_run(self.parent_run_id, status, metrics)

    def run_trial(self) -> str:
        """Ask, train, tell; returns the trial's final state name."""
        trial = self.study.ask()
        config = self._config_for(trial)
        run_id = self._start_run(trial, config)
        if self.progress:
            self.progress.trial_started(trial.number, config)
        reporter = TrialReporter(trial, self.tracker, run_id, self.spec.metric)
        try:
            result = train.fit(config, reporter, self.warn)
        except BaseException as exc:
            self._fail(trial, run_id, exc)
            if isinstance(exc, KeyboardInterrupt | UserError | SystemExit):
                raise
            return "FAIL"
        return self._tell(trial, run_id, result)

    def _config_for(self, trial: optuna.Trial) -> cfg.TrialConfig:
        try:
            return cfg.from_dict(self.space.sample(trial, self.spec.fixed), source=self.space.source)
        except BaseException as exc:
            self.study.tell(trial, state=TrialState.FAIL)
            raise exc

    def _start_run(self, trial: optuna.Trial, config: cfg.TrialConfig) -> str | None:
        trial.set_user_attr("config", config.to_dict())
        trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
        if self.tracker is None or self.experiment_id is None or self.parent_run_id is None:
            return None
        run_id = self.tracker.start_trial(
            self.experiment_id,
            self.parent_run_id,
            self.name,
            trial.number,
            config.flat_params(),
            cfg.dump_yaml(config, {"study": self.name, "trial": trial.number}),
        )
        if run_id is not None:
            trial.set_user_attr(RUN_ID_ATTR, run_id)
            self.tracker.log(run_id, tags={"optuna.storage": redact(self.storage_url)})
        return run_id

    def _tell(self, trial: optuna.Trial, run_id: str | None, result: train.FitResult) -> str:
        final = dict(result.final)
        final.pop("epoch", None)
        figures = {**result.profile, **{f"final_{k}": v for k, v in final.items()}}
        values = [h[self.spec.metric] for h in result.history]
        if values:
            figures[f"best_{self.spec.metric}"] = (max if self.spec.direction == "maximize" else min)(values)
        trial.set_user_attr(dashboards.PROFILE_ATTR, result.profile)
        if result.stopped_early:
            state = "PRUNED"
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            value = final.get(self.spec.metric, math.nan)
            if not math.isfinite(value):
                return self._fail(
                    trial, run_id, ValueError(f"objective value {value} is not a finite number")
                )
            state = "COMPLETE"
            self.study.tell(trial, value)
        if self.tracker:
            self.tracker.finish_trial(run_id, state, figures)
        self._report(trial.number, state)
        return state

    def _fail(self, trial: optuna.Trial, run_id: str | None, exc: BaseException) -> str:
        """Record a failed trial in both stores, with the reason; never leave it RUNNING."""
        reason = (
            "interrupted by the user"
            if isinstance(exc, KeyboardInterrupt)
            else f"{type(exc).__name__}: {exc}"
        )
        trial.set_user_attr("fail_reason", redact(reason)[:1000])
        self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        if self.tracker:
            self.tracker.log(run_id, tags={"exptrack.fail_reason": reason[:1000]})
            if not isinstance(exc, KeyboardInterrupt):
                self.tracker.log_file(run_id, "traceback.txt", "".join(traceback.format_exception(exc)))
            self.tracker.finish_trial(run_id, "FAIL", {})
        self._report(trial.number, "FAIL")
        return "FAIL"

    def _report(self, number: int, state: str) -> None:
        if self.progress is None:
            return
        frozen = self.study.get_trials(deepcopy=False)[number]
        try:
            best = self.study.best_value
        except ValueError:
            best = None
        self.progress.trial_finished(number, state, frozen.value, best)


def _first_point(space: spaces.SearchSpace) -> dict[str, Any]:
    """A valid point of the space (each param at its low end / first option), to check the
    fixed config against the space before trial 1."""
    point: dict[str, Any] = {}

    def visit(param: spaces.Param) -> None:
        if param.branches:
            option = param.choices[0]
            point[param.name] = option
            for sub in param.branches[option]:
                visit(sub)
        elif param.kind == "choice":
            point[param.name] = param.choices[0]
        else:
            point[param.name] = param.low

    for p in space.params:
        visit(p)
    return point


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):  # several processes on one file: wait for the lock, don't fail
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True}
