"""A stored study's trials as both the search and the results commands read them: which count toward
--trials, which are feasible, the Pareto front, and ranking best first. (Opening the storage is
`stores.optuna_storage`'s.)

Kept light (optuna only, no torch) so `exp trials`, `exp studies` and `exp export` start fast.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import optuna
from optuna.trial import FrozenTrial, TrialState

from exptrack import records


def counted_trials(study: optuna.Study) -> int:
    """Trials that count toward --trials: those that ran to an end (complete or pruned); one
    that ran out of memory is COMPLETE in Optuna only so the sampler learns from it, and does not."""
    ended = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    return sum(not out_of_memory(t) for t in ended)


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


def is_maximized(study: optuna.Study) -> bool:
    return study.direction == optuna.study.StudyDirection.MAXIMIZE
