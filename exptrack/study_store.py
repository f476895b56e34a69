"""A stored study's trials as both the search and the results commands read them: a typed
`TrialRecord` view of one trial (what the search filed on it, by `records`' keys), which count
toward --trials, which are feasible, the Pareto front, and ranking best first. (Opening the
storage is `stores.optuna_storage`'s.)

Kept light (optuna only, no torch) so `exp trials`, `exp studies` and `exp export` start fast.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from exptrack import records


class _Text:
    """A text the search filed on a trial under `key`; None where it filed none."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __get__(self, record: TrialRecord, owner: type | None = None) -> str | None:
        stored = record.trial.user_attrs.get(self.key)
        return None if stored is None else str(stored)


class _Mapping:
    """A mapping the search filed on a trial under `key`, as a copy; {} where it filed none."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __get__(self, record: TrialRecord, owner: type | None = None) -> dict[str, Any]:
        stored = record.trial.user_attrs.get(self.key)
        return dict(stored) if isinstance(stored, dict) else {}


class _Count:
    """A positive whole number the search filed on a trial under `key`; None where it filed none."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __get__(self, record: TrialRecord, owner: type | None = None) -> int | None:
        stored = record.trial.user_attrs.get(self.key)
        return stored if isinstance(stored, int) and not isinstance(stored, bool) and stored > 0 else None


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """What the search filed on one Optuna trial, typed: readers ask `record(trial).run_id`, never
    `trial.user_attrs[...]`, so a key's spelling and its value's type live here and in `records`."""

    trial: FrozenTrial
    config = _Mapping(records.CONFIG_ATTR)  # the whole `TrialConfig` as a dict; {} before sampling
    costs = _Mapping(records.PROFILE_ATTR)  # `FitResult.profile`: seconds, samples/s, memory, MFU
    run_id = _Text(records.RUN_ID_ATTR)
    fail_reason = _Text(records.FAIL_REASON_ATTR)
    retry_of = _Text(records.RETRY_ATTR)  # the number of the killed trial this one repeats
    checkpoint_epoch = _Count(records.CHECKPOINT_EPOCH_ATTR)  # a SIGTERM kept its checkpoint of this epoch
    resumed_from_epoch = _Count(records.RESUMED_ATTR)  # a retry that resumed after this epoch
    worker = _Text(records.WORKER_ATTR)  # the process that ran it, host:pid:start-time
    # the weights asked for when they could not be had (its config says what it trained from)
    weights_requested = _Text(records.WEIGHTS_REQUESTED)
    classes = _Count(records.CLASSES_ATTR)  # its dataset's class count: chance accuracy is 1 / classes
    # its validation split's size: a val_accuracy's binomial error is sqrt(p(1-p)/n)
    val_samples = _Count(records.VAL_SAMPLES_ATTR)

    @property
    def number(self) -> int:
        return self.trial.number

    @property
    def state(self) -> TrialState:
        """Optuna's state, except FAIL for a trial that ran out of memory (COMPLETE in Optuna only so
        the sampler learns from it)."""
        return TrialState.FAIL if out_of_memory(self.trial) else self.trial.state

    @property
    def has_config(self) -> bool:
        return isinstance(self.trial.user_attrs.get(records.CONFIG_ATTR), dict)

    @property
    def has_costs(self) -> bool:
        return isinstance(self.trial.user_attrs.get(records.PROFILE_ATTR), dict)

    @property
    def run_pending(self) -> bool:
        """Its run could not be opened (an outage): `exp sync` writes it later."""
        return records.RUN_PENDING_ATTR in self.trial.user_attrs

    @property
    def is_retry(self) -> bool:
        return records.RETRY_ATTR in self.trial.user_attrs

    @property
    def retry_of_number(self) -> int | None:
        """`retry_of` as the trial number it is (0 included), for finding the retried trial."""
        return retry_number(self.trial)

    @property
    def dropped(self) -> bool:
        """Marked by `exp trials drop`: kept only for its number, in no results table."""
        return records.DROPPED_ATTR in self.trial.user_attrs

    @property
    def feasible(self) -> bool:
        return is_feasible(self.trial)


def record(trial: FrozenTrial) -> TrialRecord:
    return TrialRecord(trial)


def retry_number(trial: FrozenTrial | optuna.Trial) -> int | None:
    """The number of the killed trial `trial` repeats; None for a trial that is no retry. Takes a
    live `optuna.Trial` too: a running trial reads its own before any FrozenTrial of it exists."""
    stored = trial.user_attrs.get(records.RETRY_ATTR)
    return stored if isinstance(stored, int) and not isinstance(stored, bool) else None


def enqueue_retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue one more try of `trial`'s params, marked as its retry (`retry_number` reads it back)."""
    study.enqueue_trial(trial.params, user_attrs={records.RETRY_ATTR: trial.number})


def confirmed(study: optuna.Study) -> dict[str, dict[str, Any]]:
    """What `exp confirm` recorded on the study: trial number (text) -> its repeats' figures
    (`seeds`, `val_accuracy_mean`, `val_accuracy_sd`, ... `test_accuracy_ci_high`)."""
    stored = study.user_attrs.get(records.CONFIRMED_ATTR)
    if not isinstance(stored, dict):
        return {}
    return {str(k): dict(v) for k, v in stored.items() if isinstance(v, dict)}


def counted_trials(study: optuna.Study) -> int:
    """Trials that count toward --trials: those that ran to an end (complete or pruned); one
    that ran out of memory is COMPLETE in Optuna only so the sampler learns from it, and does not."""
    return counted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def counted(trials: Iterable[FrozenTrial]) -> int:
    """`counted_trials` of trials already read (one read serves several questions)."""
    ended = (TrialState.COMPLETE, TrialState.PRUNED)
    return sum(t.state in ended and not out_of_memory(t) for t in trials)


def kept(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """Trials not dropped by `exp trials drop` (FAIL and marked, kept only for their numbers):
    what every results table shows."""
    return [t for t in trials if not record(t).dropped]


def violations(trial: FrozenTrial) -> dict[str, float]:
    """{constraint: violation} the search stored on the trial with Optuna's `set_constraint`
    (> 0: broken by that much); {} for a trial without constraint values."""
    return dict(trial.constraints)


def is_feasible(trial: FrozenTrial) -> bool:
    return all(value <= 0 for value in violations(trial).values())


def out_of_memory(trial: FrozenTrial) -> bool:
    return violations(trial).get(records.OUT_OF_MEMORY, 0.0) > 0


def state_name(trial: FrozenTrial) -> str:
    """The state a user sees: Optuna's, except FAIL for a trial that ran out of memory."""
    return "FAIL" if out_of_memory(trial) else trial.state.name


def best_first(trials: Iterable[FrozenTrial], maximize: bool) -> list[FrozenTrial]:
    """Feasible trials with a value, best first for the direction (ties keep trial order)."""
    sign = -1.0 if maximize else 1.0
    valued = [t for t in trials if t.value is not None and not math.isnan(t.value) and is_feasible(t)]
    return sorted(valued, key=lambda t: sign * float(t.value or 0.0))


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """A multi-objective study's Pareto set by trial number: Optuna's `best_trials`, which leaves
    out infeasible trials (the same constraint values `is_feasible` reads)."""
    return sorted(study.best_trials, key=lambda t: t.number)


def objective_names(study: optuna.Study) -> list[str] | None:
    """The objectives' names in the order of a trial's values, as the search recorded them; None
    for a study that did not (searched before several objectives were possible)."""
    names = study.user_attrs.get(records.STUDY_OBJECTIVES_ATTR)
    if isinstance(names, list) and len(names) == len(study.directions):
        return [str(name) for name in names]
    return None


def ranked(study: optuna.Study) -> list[FrozenTrial]:
    """A study's best trials: feasible complete ones best first, or for several objectives the
    Pareto front (by number). What the summary, export and `--from-study` all mean by "best"."""
    if len(study.directions) > 1:
        return pareto_front(study)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return best_first(complete, is_maximized(study))


def stored_objectives(study: optuna.Study) -> dict[str, str]:
    """{figure: maximize|minimize} as the search stored them on the study (its study file need
    not be at hand: `exp sync`, `exp studies copy`)."""
    figures = study.user_attrs.get(records.STUDY_OBJECTIVES_ATTR) or [
        study.user_attrs.get(records.STUDY_METRIC_ATTR)
    ]
    directions = [d.name.lower() for d in study.directions]
    return dict(zip(figures, directions, strict=False))


def study_figures(study: optuna.Study, objectives: Mapping[str, str]) -> dict[str, float]:
    """The study run's figures: finished_trials and best_<objective> for each objective (over the
    feasible complete trials; with several objectives each one's best sits on the Pareto front),
    pareto_front_size."""
    figures: dict[str, float] = {records.FINISHED_TRIALS_METRIC: float(counted_trials(study))}
    best = ranked(study)
    if len(objectives) > 1:
        figures[records.PARETO_SIZE_METRIC] = float(len(best))
    for index, (metric, direction) in enumerate(objectives.items()):
        values = [t.values[index] for t in best if t.values]
        if values:
            figures[f"{records.BEST_PREFIX}{metric}"] = (max if direction == "maximize" else min)(values)
    return figures


def is_maximized(study: optuna.Study) -> bool:
    return study.direction == optuna.study.StudyDirection.MAXIMIZE
