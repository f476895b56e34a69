"""Infeasible trials, told so the sampler learns from them: a study's constraints on the figures a
trial reports, and running out of memory, become Optuna constraint values (> 0 = broken).

Each trial stores its values with Optuna 5's `Trial.set_constraint` before it is told, so Optuna's
own records agree with exptrack's: TPE, GP and NSGA-II/III read them to steer, `best_trial` and
`best_trials` leave infeasible trials out, `FrozenTrial.constraints` reads them back. An
out-of-memory trial is told COMPLETE with its `out_of_memory` constraint broken and placeholder
values: TPE and NSGA-II/III rank infeasible trials below every feasible one whatever their values,
so later proposals move away from the region that ran out of memory. Its MLflow run still ends
FAILED, and it does not count toward --trials.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState

from exptrack import records
from exptrack.stores.optuna_storage import set_constraints
from exptrack.study import Constraint
from exptrack.study_store import out_of_memory

NO_VALUE = 0.0  # the placeholder of an objective no trial has a real value for yet


def violations(constraints: Sequence[Constraint], figures: Mapping[str, float]) -> dict[str, float]:
    """{constraint: violation} for a trial that trained, out-of-memory included (0: it did not).
    A figure the trial did not report is a ValueError (the trial fails with it as reason)."""
    values: dict[str, float] = {}
    for constraint in constraints:
        if constraint.figure not in figures:
            raise ValueError(
                f"constraint {constraint} names {constraint.figure}, which this trial did not report "
                f"(it reported {', '.join(sorted(figures))})"
            )
        values[str(constraint)] = constraint.violation(float(figures[constraint.figure]))
    values[records.OUT_OF_MEMORY] = 0.0
    return values


def record(trial: optuna.Trial, values: Mapping[str, float]) -> list[str]:
    """Store the values on the trial (before it is told), in one transaction; returns the
    constraints it broke."""
    set_constraints(trial, values)
    return [name for name, value in values.items() if value > 0]


def tell_out_of_memory(study: optuna.Study, trial: optuna.Trial, constraints: Sequence[Constraint]) -> None:
    """Tell an out-of-memory trial as infeasible: the study's constraints unknown (0), the
    out-of-memory one broken, its values placeholders that never rank as best."""
    record(trial, {**{str(c): 0.0 for c in constraints}, records.OUT_OF_MEMORY: 1.0})
    study.tell(trial, placeholder_values(study))


def placeholder_values(study: optuna.Study) -> list[float]:
    """Per objective, the worst value of the trials that really completed (NO_VALUE before any),
    so a model of the objective itself (GP's) sees the region as bad too."""
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not out_of_memory(t) and t.values
    ]
    worst = []
    for index, direction in enumerate(study.directions):
        seen = [t.values[index] for t in complete]
        pick = min if direction == StudyDirection.MAXIMIZE else max
        worst.append(float(pick(seen)) if seen else NO_VALUE)
    return worst
