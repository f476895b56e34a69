"""A study's trials on a time line, read from its Optuna storage: when each was asked, took its
first training step and ended; the gap from one trial's end to the next one's first step (per
worker process); when the k-th trial finished and the best value by then."""

from __future__ import annotations

import itertools
import statistics
from typing import Any

from exptrack import records, study_store

FIRST_STEP_ATTR = "first_step_at"  # what baseline_optuna_mlflow.py stores on each trial


def read_trials(storage: str, study_name: str) -> list[dict[str, Any]]:
    """Each trial's state, value, start, end and first training step (unix seconds): exptrack keeps
    the latter in the trial's profile attr, the baseline in a user attr of its own."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # the arm ended before it created its study: its log says why
        return []
    rows = []
    for t in study.get_trials(deepcopy=False):
        profile = study_store.record(t).costs
        first = t.user_attrs.get(FIRST_STEP_ATTR, profile.get(records.TRAIN_STARTED_AT))
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "start": t.datetime_start.timestamp() if t.datetime_start else None,
                "end": t.datetime_complete.timestamp() if t.datetime_complete else None,
                "first_step_at": first,
                "worker": study_store.record(t).worker or "-",
            }
        )
    return rows


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "median": None, "mean": None, "max": None}
    return {
        "n": len(values),
        "median": statistics.median(values),
        "mean": statistics.fmean(values),
        "max": max(values),
    }


def gaps(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Seconds from one trial's end to the next one's first step, per worker process, and from a
    trial's start (ask) to its own first step."""
    timed = [t for t in trials if t["first_step_at"] is not None and t["start"] is not None]
    between = []
    for worker in {t["worker"] for t in timed}:
        mine = sorted((t for t in timed if t["worker"] == worker), key=lambda t: t["start"])
        between += [b["first_step_at"] - a["end"] for a, b in itertools.pairwise(mine) if a["end"]]
    return {
        "between_trials_s": _stats(between),
        "ask_to_first_step_s": _stats([t["first_step_at"] - t["start"] for t in timed]),
    }


def summarize_arm(arm: dict[str, Any], trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Add trial counts, best value, finish times and gaps to one arm's record."""
    done = sorted(
        (t for t in trials if t["state"] in ("COMPLETE", "PRUNED") and t["end"]), key=lambda t: t["end"]
    )
    values = [t["value"] for t in done if t["state"] == "COMPLETE"]
    return {
        **arm,
        "finished_trials": len(done),
        "complete_trials": len(values),
        "best_val_accuracy": max(values) if values else None,
        # seconds from the command's start to its k-th finished trial, and the best value by then
        "finish_s": [t["end"] - arm["started_at"] for t in done],
        "best_by_trial": _running_best(done),
        **gaps(trials),
    }


def _running_best(done: list[dict[str, Any]]) -> list[float | None]:
    best: float | None = None
    out = []
    for t in done:
        if t["state"] == "COMPLETE" and (best is None or t["value"] > best):
            best = t["value"]
        out.append(best)
    return out
