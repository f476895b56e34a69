"""The training-function contract: `objective(config, reporter) -> value`, and the built-in
fine-tuning (`finetune`) as one such function.

A study's own function (`Study(objective=...)`) and the built-in are called the same way by a
search trial and by `exp train`: the config in, per-epoch metrics, pruning and cost figures
through the `Reporter`, the value out. The caller owns everything around it (the MLflow run, the
params, telling Optuna, failures), so a training function never imports optuna or mlflow.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from exptrack.config import TrialConfig
from exptrack.training import checkpoints, fit


class Reporter(Protocol):
    """What a training function is handed. `report` and `should_prune` are the loop's; the rest
    is optional to call. Once `should_prune()` has answered True the trial ends PRUNED whatever
    the function returns: stop training and return. A search trial's reporter is also a
    `checkpoints.Store`: `checkpoint(epoch, state)` at an epoch end, and `resume_state()` (the state
    a killed predecessor saved, or None) before the first epoch; `exp train`'s is not."""

    trace_dir: Path | None  # a torch.profiler trace written here lands on the run (--profile-trials)
    # True in `exp train` (and a confirmation run): score the held-out test split once at the end
    # and `log_test` it; a search trial is never told to, so nothing it decides sees the test set
    score_test: bool

    def report(self, epoch: int, metrics: Mapping[str, float]) -> None: ...
    def should_prune(self) -> bool: ...
    def log_figure(self, name: str, value: float | str) -> None: ...
    def log_setup(self, facts: Mapping[str, Any]) -> None: ...
    def log_model(self, model: nn.Module, example: Any = None) -> None: ...
    def log_test(self, metrics: Mapping[str, float], samples: int) -> None: ...
    def warn(self, message: str) -> None: ...


# A training function: the trial's config (its own parameters in `config.params`) and a
# reporter; it returns the study's metric, a dict of metrics, or None (the last report's).
Objective = Callable[[TrialConfig, Reporter], Any]


def call_traced(
    objective: Callable[[TrialConfig, Any], Any],
    config: TrialConfig,
    reporter: Reporter,
    keep_trace: Callable[[Path], None],
) -> Any:
    """`objective(config, reporter)` with a temporary trace folder in `reporter.trace_dir`, handed
    to `keep_trace` (to log under `profile/`) also when training fails: an OOM's trace helps."""
    with tempfile.TemporaryDirectory(prefix="exptrack-trace-") as folder:
        reporter.trace_dir = Path(folder)
        try:
            return objective(config, reporter)
        finally:
            keep_trace(Path(folder))


def final_values(returned: Any, last_report: Mapping[str, float], metric: str) -> dict[str, float]:
    """What a training function's return means: a number is the study's (first) metric, a dict
    names its metrics, None leaves the last epoch's report. Reported values fill in the rest."""
    if returned is None:
        return dict(last_report)
    if isinstance(returned, Mapping):
        return {**last_report, **{str(k): _number(v, str(k)) for k, v in returned.items()}}
    return {**last_report, metric: _number(returned, metric)}


def _number(value: Any, name: str) -> float:
    """A returned value as a float (a 0-d tensor or NumPy scalar too, through float())."""
    if isinstance(value, bool):
        raise TypeError(f"the training function returned {name}={value!r}, not a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"the training function returned {name}={value!r}, not a number") from None


class _FitReporter:
    """`fit`'s own reporter calls (`on_setup`, `on_epoch` -> stop?) as a training function's."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def on_setup(self, facts: Mapping[str, Any]) -> None:
        self.reporter.log_setup(facts)

    def on_epoch(self, epoch: int, metrics: Mapping[str, float]) -> bool:
        self.reporter.report(epoch, metrics)
        return self.reporter.should_prune()


def finetune(config: TrialConfig, reporter: Reporter) -> dict[str, float]:
    """The built-in objective: fine-tune `config`'s backbone (`fit.fit`), its cost figures
    logged, the trained model handed over (`exp train` logs it), the last epoch's metrics out."""
    store = reporter if isinstance(reporter, checkpoints.Store) else None
    result = fit.fit(
        config, _FitReporter(reporter), reporter.warn, reporter.trace_dir, reporter.score_test, store
    )
    for name, value in result.profile.items():
        reporter.log_figure(name, value)
    reporter.log_model(result.model, result.example)
    if reporter.score_test:
        reporter.log_test(result.test, result.test_samples)
    return {k: v for k, v in result.final.items() if k != "epoch"}
