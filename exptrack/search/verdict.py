"""What a finished search says about itself, warned once at its end and tagged on the study's
MLflow run: every finished trial at chance (1/classes) or at one value (nothing was learned, or
the searched parameters change nothing), and the best trial's parameter at the edge of its
searched range (the optimum may lie outside it)."""

from __future__ import annotations

import math
from collections.abc import Callable

import optuna
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from exptrack import study_store
from exptrack.tracking import runs
from exptrack.tracking.tracker import Tracker

# val_accuracy within 5 points of 1/classes is chance: a model that predicts one class scores
# that class's share of a stratified validation set, 0.094-0.104 on 96 digits of 10 classes.
CHANCE_MARGIN = 0.05
# A float parameter within 2% of its range (of its log range, for log: true) from an end sits
# at that end; 2% of [1e-5, 1e-1] in log space is a factor of 1.2 from 1e-5 or 1e-1.
EDGE_SHARE = 0.02
# Several trials at the same value are "one value" when they differ by less than this.
SAME = 1e-9


def findings(study: optuna.Study, metric: str) -> list[str]:
    """One line per finding, for a single-objective study (several objectives: none)."""
    if len(study.directions) > 1:
        return []
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and not study_store.out_of_memory(t)
    ]
    if not done:
        return []
    flat = _flat(done, metric)
    if flat:
        return [flat]  # the best of trials that learned nothing sits anywhere: no edge to tell
    return _edges(study_store.ranked(study)[0])


def _flat(done: list[FrozenTrial], metric: str) -> str | None:
    values = [float(t.value) for t in done]  # type: ignore[arg-type]  # filtered above
    classes = {study_store.record(t).classes for t in done}  # None: not recorded
    only = classes.pop() if len(classes) == 1 else None
    chance = 1 / only if only else None
    what = f"all {len(done)} finished trials"
    if metric == "val_accuracy" and chance is not None and max(values) <= chance + CHANCE_MARGIN:
        return (
            f"{what} score val_accuracy at chance (1/{round(1 / chance)} = {chance:.3f}; best "
            f"{max(values):.4f}): nothing was learned; check the labels, the lr range and epochs"
        )
    if len(values) > 1 and max(values) - min(values) < SAME:
        return f"{what} score {metric}={values[0]:.4g}: the searched parameters change nothing"
    return None


def _edges(best: FrozenTrial) -> list[str]:
    found = []
    for name, dist in best.distributions.items():
        side = _edge(best.params[name], dist)
        if side:
            found.append(
                f"best trial {best.number}'s {name}={best.params[name]:.4g} sits at the {side} end of its "
                f"range [{dist.low:g}, {dist.high:g}]: the optimum may lie outside it; widen the range"  # type: ignore[attr-defined]
            )
    return found


def _edge(value: float, dist: object) -> str | None:
    """'low' or 'high' when `value` sits at that end of a numeric range, else None."""
    if isinstance(dist, IntDistribution):
        if (dist.high - dist.low) // dist.step < 2:  # two values: every draw is an end
            return None
        return "low" if value == dist.low else "high" if value == dist.high else None
    if not isinstance(dist, FloatDistribution) or dist.high <= dist.low:
        return None
    scale = math.log if dist.log else float
    share = (scale(value) - scale(dist.low)) / (scale(dist.high) - scale(dist.low))
    return "low" if share <= EDGE_SHARE else "high" if share >= 1 - EDGE_SHARE else None


def report(
    study: optuna.Study,
    metric: str,
    tracker: Tracker | None,
    run_id: str | None,
    warn: Callable[[str], None],
) -> list[str]:
    """Warn each finding and tag the study's run with them (`exptrack.search_warnings`)."""
    found = findings(study, metric)
    for line in found:
        warn(line)
    if found and tracker is not None and run_id is not None:
        runs.tag_search_warnings(tracker, run_id, found)
    return found
