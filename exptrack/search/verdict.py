"""What a finished search says about itself, warned once at its end and tagged on the study's
MLflow run: every finished trial at chance (1/classes) or at one value (nothing was learned, or
the searched parameters change nothing), the best trial's parameter at the edge of its
searched range (the optimum may lie outside it), and the top values within noise of each other
(the best is then partly luck: `exp confirm` repeats them)."""

from __future__ import annotations

import math
from collections.abc import Callable

import optuna
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from exptrack import noise, study_store
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
# Values within 2 standard errors of the best are within noise of it: about the 95% band of one
# estimate (1.96 se), rounded up. On digits' 359 validation images at 0.96: 2 x 0.0103 = 0.021,
# two images either way of the best.
NOISE_BAND = 2.0


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
    return _edges(study_store.ranked(study)[0]) + within_noise(study, metric)


def within_noise(study: optuna.Study, metric: str) -> list[str]:
    """One line when two or more of the top values lie within NOISE_BAND standard errors of the
    best: the noise of exp confirm's repeats when the study has them, else (val_accuracy only) the
    validation split's binomial error. Single objective only (the caller checks)."""
    ranked = [t for t in study_store.ranked(study) if t.value is not None]
    if len(ranked) < 2:
        return []
    best = float(ranked[0].value)  # type: ignore[arg-type]  # filtered above
    error, how = _noise(study, ranked[0], metric, best)
    if not error > 0:  # unknown (NaN), or a perfect score with no spread
        return []
    near = [float(t.value) for t in ranked if abs(float(t.value) - best) <= NOISE_BAND * error]  # type: ignore[arg-type]
    if len(near) < 2:
        return []
    return [
        f"the top {len(near)} trials' {metric} ({min(near):.4f} to {max(near):.4f}) lie within noise of "
        f"each other ({NOISE_BAND:g} x {how}): the best is partly luck; "
        f"exp confirm {study.study_name} --top {len(near)} --seeds 3 repeats them to tell them apart"
    ]


def _noise(study: optuna.Study, best: FrozenTrial, metric: str, value: float) -> tuple[float, str]:
    """(a standard error of one value, what it is): from exp confirm's repeats (the largest
    standard deviation among the configs it repeated), else the binomial error of an accuracy."""
    recorded = [v.get(f"{metric}_sd") for v in study_store.confirmed(study).values()]
    spreads = [float(s) for s in recorded if isinstance(s, int | float) and math.isfinite(s)]
    if spreads:
        return max(spreads), f"the standard deviation of exp confirm's repeats, {max(spreads):.4f}"
    n = study_store.record(best).val_samples
    if metric != "val_accuracy" or n is None:
        return math.nan, ""
    error = noise.binomial_se(value, n)
    return error, f"the binomial standard error sqrt(p(1-p)/n) at {n} validation images, {error:.4f}"


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
