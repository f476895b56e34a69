"""The Optuna store of studies, as both the search and the results commands read it: which URL,
opening it, finding a stored study, and ranking its trials best first.

Kept light (optuna only, no torch) so `exp trials`, `exp studies` and `exp export` start fast.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from exptrack import records
from exptrack.errors import UserError, redact

DEFAULT_STORAGE = "sqlite:///optuna.db"
SQLITE_BUSY_TIMEOUT_S = 60  # several processes on one file: wait for the lock, don't fail


def resolve_storage(url: str | None) -> str:
    """Flag, then OPTUNA_STORAGE, then a sqlite file in the working directory."""
    return url or os.environ.get("OPTUNA_STORAGE") or DEFAULT_STORAGE


def absolute_url(url: str) -> str:
    """A sqlite URL with its file made absolute (`sqlite:///optuna.db` -> `sqlite:////work/optuna.db`),
    for records that must name the same file whichever directory reads them."""
    if not url.startswith("sqlite:///") or url.startswith("sqlite:////") or ":memory:" in url:
        return url
    path, sep, query = url.removeprefix("sqlite:///").partition("?")
    return f"sqlite:///{Path(path).resolve()}{sep}{query}"


def missing_sqlite_file(url: str) -> Path | None:
    """The file a `sqlite:///` URL names, when it does not exist (opening it would create it empty)."""
    if not url.startswith("sqlite:///") or url.endswith(":memory:"):
        return None
    path = Path(url.removeprefix("sqlite:///").split("?")[0])
    return None if path.exists() else path


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """The RDB storage at `url` (creating its tables when new); one line when it cannot be opened."""
    engine: dict[str, Any] = (
        {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
        if url.startswith("sqlite")
        else {"pool_pre_ping": True}
    )
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine)
    except Exception as exc:
        raise UserError(
            f"Optuna storage {redact(url)} cannot be opened ({type(exc).__name__}); fix --storage"
        ) from exc


def study_names(storage: str | None) -> list[str]:
    """Names of the studies in a storage; an unreadable or absent storage is a UserError."""
    url = resolve_storage(storage)
    missing = missing_sqlite_file(url)
    if missing:
        raise UserError(f"no Optuna storage at {missing}; run exp search here first, or pass --storage")
    try:
        return list(optuna.get_all_study_names(storage=url))
    except Exception as exc:
        raise UserError(
            f"Optuna storage {redact(url)} cannot be read ({type(exc).__name__}); fix --storage"
        ) from exc


def load_existing_study(name: str, storage: str | None) -> optuna.Study:
    """A study a search already wrote; an unknown name lists the ones that exist."""
    url = resolve_storage(storage)
    names = study_names(url)
    if name not in names:
        known = ", ".join(sorted(names)) or "none yet: run exp search first"
        raise UserError(f"no study named {name!r} in {redact(url)}; studies there: {known}")
    return optuna.load_study(study_name=name, storage=url)


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


def is_maximized(study: optuna.Study) -> bool:
    return study.direction == optuna.study.StudyDirection.MAXIMIZE
