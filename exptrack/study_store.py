"""The Optuna store of studies, as both the search and the results commands read it: which URL,
opening it (created whole, with the trial heartbeat, waiting out a database restart), finding a
stored study, and ranking its trials best first.

Kept light (optuna only, no torch) so `exp trials`, `exp studies` and `exp export` start fast.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from exptrack import coordination, records, store_schema
from exptrack.errors import UserError, redact

DEFAULT_STORAGE = "sqlite:///optuna.db"
SQLITE_BUSY_TIMEOUT_S = 60  # several processes on one file: wait for the lock, don't fail
# Per worker process: its main thread and its trial's heartbeat thread each hold a connection at
# most; 2 more absorb a burst. Pre-ping drops connections a database restart killed, recycle those
# a firewall may have cut while a long trial trained.
POSTGRES_ENGINE = {"pool_size": 2, "max_overflow": 2, "pool_pre_ping": True, "pool_recycle": 300}


def resolve_storage(url: str | None) -> str:
    """Flag, then OPTUNA_STORAGE, then a sqlite file in the working directory; a PostgreSQL URL
    gets the psycopg 3 driver of the `postgres` extra."""
    return coordination.with_postgres_driver(url or os.environ.get("OPTUNA_STORAGE") or DEFAULT_STORAGE)


def heartbeat_every(grace_period: int) -> int:
    """Seconds between a running trial's heartbeats: six chances to beat within the grace period."""
    return max(1, grace_period // 6)


def absolute_url(url: str) -> str:
    """A sqlite URL with its file made absolute (`sqlite:///optuna.db` -> `sqlite:////work/optuna.db`),
    for records that must name the same file whichever directory reads them."""
    if not url.startswith("sqlite:///") or url.startswith("sqlite:////") or ":memory:" in url:
        return url
    path, sep, query = url.removeprefix("sqlite:///").partition("?")
    return f"sqlite:///{Path(path).resolve()}{sep}{query}"


def open_storage(url: str, grace_period: int | None = None) -> optuna.storages.RDBStorage:
    """The RDB storage at `url`, its tables created when new (a sqlite file whole or not at all; a
    database server under its advisory lock). With `grace_period`, running trials record Optuna's
    heartbeat and count as abandoned after that many seconds without one."""
    heartbeat: dict[str, Any] = {}
    if grace_period is not None:
        heartbeat = {"heartbeat_interval": heartbeat_every(grace_period), "grace_period": grace_period}
    engine = _engine_kwargs(url)
    if store_schema.is_database(url):
        store_schema.check_optuna_target(url)  # never Optuna's tables inside another store
    try:
        path = coordination.sqlite_path(url)
        if path is not None:
            coordination.create_sqlite_once(path, lambda temp: _dispose(RDBStorage(temp)))
            return ResilientStorage(url, engine_kwargs=engine, **heartbeat)
        with coordination.store_lock(url):  # tables created by one process at a time
            return ResilientStorage(url, engine_kwargs=engine, **heartbeat)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(
            f"Optuna storage {redact(url)} cannot be opened ({type(exc).__name__}); fix --storage"
        ) from exc


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    if coordination.is_postgres(url):
        return {**POSTGRES_ENGINE, "connect_args": {"connect_timeout": 10}}
    return {"pool_pre_ping": True}


def _dispose(storage: optuna.storages.RDBStorage) -> None:
    storage.engine.dispose()  # closes the file before it is linked into place


RDBStorage = optuna.storages.RDBStorage


def _is_outage(exc: BaseException) -> bool:
    """A lost or refused database connection (a restart, a network cut), not a bad request: an
    operational error anywhere in the chain, or the session it left waiting for a rollback."""
    from sqlalchemy import exc as sa

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, sa.OperationalError | sa.InterfaceError | sa.PendingRollbackError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _waits_out_outages(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: RDBStorage, *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + coordination.OUTAGE_S
        retried = False
        while True:
            try:
                return method(self, *args, **kwargs)
            except optuna.exceptions.UpdateFinishedTrialError:
                # a retried tell whose first attempt committed before the connection dropped
                if retried and method.__name__ == "set_trial_state_values":
                    return True
                raise
            except Exception as exc:
                if not _is_outage(exc) or time.monotonic() > deadline:
                    raise
            # this thread's session may still hold the broken transaction: start a fresh one
            with contextlib.suppress(Exception):
                self.scoped_session.remove()
            retried = True
            time.sleep(1.0)

    return call


class ResilientStorage(RDBStorage):
    """Optuna's RDB storage whose calls wait out a database restart instead of
    failing the trial (`coordination.OUTAGE_S`): each call is one transaction, so repeating it
    after a refused connection is safe. A trial created twice (its commit landed, the reply was lost) stays RUNNING without an
    owner, and the next ask marks it FAIL (search.ownership)."""


_STORE_CALLS = [n for n, v in vars(optuna.storages.BaseStorage).items() if callable(v) and n[0] != "_"]
# Optuna's cache in front of the storage calls these private ones directly.
_CACHE_CALLS = ["_create_new_trial", "_set_trial_param", "_get_best_trial_id", "_get_trials"]
for _name in [*_STORE_CALLS, *_CACHE_CALLS, "record_heartbeat", "_get_stale_trial_ids"]:
    setattr(ResilientStorage, _name, _waits_out_outages(getattr(RDBStorage, _name)))


def readable_storage(storage: str | None) -> tuple[RDBStorage, list[str]]:
    """A storage a results command reads, opened once, and the names of its studies; an absent or
    unreadable storage is a UserError."""
    url = resolve_storage(storage)
    missing = coordination.missing_sqlite_file(url)
    if missing:
        raise UserError(f"no Optuna storage at {missing}; run exp search here first, or pass --storage")
    if store_schema.is_database(url) and not store_schema.check_optuna_target(url):  # never create by reading
        raise UserError(f"no Optuna storage at {redact(url)}; run exp search there first, or fix --storage")
    try:
        opened = RDBStorage(url, skip_table_creation=True)
        return opened, [s.study_name for s in opened.get_all_studies()]
    except Exception as exc:
        raise UserError(
            f"Optuna storage {redact(url)} cannot be read ({type(exc).__name__}); fix --storage"
        ) from exc


def load_existing_study(name: str, storage: str | None) -> optuna.Study:
    """A study a search already wrote; an unknown name lists the ones that exist."""
    opened, names = readable_storage(storage)
    if name not in names:
        known = ", ".join(sorted(names)) or "none yet: run exp search first"
        raise UserError(f"no study named {name!r} in {redact(opened.url)}; studies there: {known}")
    return optuna.load_study(study_name=name, storage=opened)


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
