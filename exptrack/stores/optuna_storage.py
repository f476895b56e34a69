"""The Optuna storage, as both the search and the results commands open it: created whole (a
sqlite file whole or not at all, a database server's tables under its lock), only in an empty
database or Optuna's own, with the trial heartbeat, and waiting out a database restart; read by
results commands without ever creating tables. Kept light (optuna only, no torch).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import optuna

from exptrack.errors import UserError, redact
from exptrack.stores import backends, faults, locks, optuna_private, schema, sqlite
from exptrack.stores.url import parse, resolve_storage

RDBStorage = optuna.storages.RDBStorage


def heartbeat_every(grace_period: int) -> int:
    """Seconds between a running trial's heartbeats: six chances to beat within the grace period."""
    return max(1, grace_period // 6)


def open_storage(url: str, grace_period: int | None = None) -> optuna.storages.RDBStorage:
    """The RDB storage at `url`, its tables created when new (a sqlite file whole or not at all; a
    database server under its advisory lock). With `grace_period`, running trials record Optuna's
    heartbeat and count as abandoned after that many seconds without one."""
    heartbeat: dict[str, Any] = {}
    if grace_period is not None:
        heartbeat = {"heartbeat_interval": heartbeat_every(grace_period), "grace_period": grace_period}
    engine = backends.engine_kwargs(url)
    if parse(url).is_database:
        schema.check_optuna_target(url)  # never Optuna's tables inside another store
    with _one_line_failure(url, "opened"):
        path = parse(url).path
        if path is not None:
            sqlite.create_once(path, lambda temp: _dispose(RDBStorage(temp)))
            return ResilientStorage(url, engine_kwargs=engine, **heartbeat)
        with backends.store_lock(url):  # tables created by one process at a time
            return ResilientStorage(url, engine_kwargs=engine, **heartbeat)


@contextlib.contextmanager
def _one_line_failure(url: str, verb: str) -> Iterator[None]:
    """Any failure of the storage at `url` as one line: a full disk or damage as such, else what
    could not be done and the flag that fixes it."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        faults.raise_at_once(exc, url, "Optuna storage")
        raise UserError(f"Optuna storage {redact(url)} cannot be {verb} ({type(exc).__name__}); fix --storage") from exc


def _dispose(storage: optuna.storages.RDBStorage) -> None:
    storage.engine.dispose()  # closes the file before it is linked into place




def _waits_out_outages(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: RDBStorage, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        # once a wait ran out in this process, later calls (a failed trial's record, a summary)
        # try once: another full wait would only hold the one-line ending back
        deadline = started + (0.0 if getattr(self, "_gave_up", False) else locks.outage_s())
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
                _give_up_unless_outage(self, exc, time.monotonic() - started, time.monotonic() > deadline)
            # this thread's session may still hold the broken transaction: start a fresh one
            with contextlib.suppress(Exception):
                self.scoped_session.remove()
            retried = True
            time.sleep(1.0)

    return call


def _give_up_unless_outage(storage: RDBStorage, exc: Exception, waited_s: float, late: bool) -> None:
    """Return to wait an outage out; otherwise raise: a full disk or damage at once, an outage past
    the wait, each as one line (stores.faults), and anything else as it is."""
    kind = faults.kind(exc, storage.url)
    if kind == "outage" and not late:
        return
    ending = faults.ending(exc, storage.url, "Optuna storage", waited_s)
    if ending is None:
        raise exc
    if kind == "outage":
        storage._gave_up = True  # type: ignore[attr-defined]
    raise ending from exc


class ResilientStorage(RDBStorage):
    """Optuna's RDB storage whose calls wait out a database restart instead of failing the trial
    (`locks.outage_s()`, EXPTRACK_STORE_WAIT): each call is one transaction, so repeating it after
    a refused connection is safe. Past the wait, on a full disk or a damaged store, a call ends in
    one line (a `faults.StoreFault`). A trial created twice (its commit landed, the reply was lost)
    stays RUNNING without an owner, and the next ask marks it FAIL (search.ownership)."""

    @_waits_out_outages
    def set_trial_user_attrs(self, trial_id: int, attrs: Mapping[str, Any]) -> None:
        """Several user attributes in one transaction (`set_user_attrs` says why)."""
        optuna_private.set_trial_user_attrs(self, trial_id, attrs)

    @_waits_out_outages
    def set_trial_system_attrs(self, trial_id: int, attrs: Mapping[str, Any]) -> None:
        """Several system attrs in one transaction (`set_constraints` says why)."""
        optuna_private.set_trial_system_attrs(self, trial_id, attrs)

    @_waits_out_outages
    def set_trial_params(
        self, trial_id: int, params: list[optuna_private.HeldParam], system_attrs: Mapping[str, Any]
    ) -> None:
        """A trial's held params and system attrs in one transaction (`params_in_one_write`)."""
        optuna_private.set_trial_params(self, trial_id, params, system_attrs)


@dataclasses.dataclass
class _Held:
    """The writes of one running trial this thread holds back (`params_in_one_write`)."""

    storage: ResilientStorage
    trial_id: int
    params: list[optuna_private.HeldParam] = dataclasses.field(default_factory=list)
    system_attrs: dict[str, Any] = dataclasses.field(default_factory=dict)

    def takes(self, storage: RDBStorage, name: str, args: tuple[Any, ...]) -> bool:
        """Is this call one of the held trial's param or system attr writes?"""
        return storage is self.storage and name in optuna_private.HELD_CALLS and bool(args) and args[0] == self.trial_id

    def add(self, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        if name == "set_trial_system_attr":
            key, value = optuna_private.system_attr_write(args, kwargs)
            self.system_attrs[key] = value
            return
        param = optuna_private.param_write(args, kwargs)
        if param[3] is not None:  # refused now, as Optuna refuses it, before its cache notes it
            optuna.distributions.check_distribution_compatibility(param[3], param[2])
        self.params.append(param)

    def write(self) -> None:
        """Everything held, in one transaction; nothing is held after it, written or refused."""
        params, attrs = self.params, self.system_attrs
        self.params, self.system_attrs = [], {}
        if params or attrs:
            self.storage.set_trial_params(self.trial_id, params, attrs)


_holding = threading.local()  # .held: this thread's _Held, while it samples a trial


def _holds_writes(method: Callable[..., Any]) -> Callable[..., Any]:
    """A storage call of a thread that holds a trial's writes: one of them is held; any other call
    (a read above all) first writes what is held, so this process never reads a store that lacks
    a write it made, and the database sees the same writes in the same order, fewer commits."""
    name = method.__name__

    @functools.wraps(method)
    def call(self: RDBStorage, *args: Any, **kwargs: Any) -> Any:
        held: _Held | None = getattr(_holding, "held", None)
        if held is not None:
            if held.takes(self, name, args):
                return held.add(name, args, kwargs)
            held.write()
        return method(self, *args, **kwargs)

    return call


optuna_private.wrap_storage_calls(ResilientStorage, lambda method: _holds_writes(_waits_out_outages(method)))


@contextlib.contextmanager
def params_in_one_write(trial: optuna.Trial) -> Iterator[None]:
    """Sample a trial's params within this block: Optuna's suggest API commits each param on its
    own (and TPE's constant_liar its relative params too), one round trip, pool ping and commit
    each; here they are held and written together when the block ends, or earlier at the first
    other store call (a sampler's read), so every read sees them as before. The same sampler
    calls with the same inputs: the same params. A worker killed while sampling leaves its trial
    with none of them, never some (unless a sampler read in between: grid reads before each param).
    Other workers see them once written, before training starts."""
    backend = optuna_private.rdb_storage_of(trial.study)
    if not isinstance(backend, ResilientStorage) or getattr(_holding, "held", None) is not None:
        yield
        return
    held = _holding.held = _Held(backend, optuna_private.trial_id(trial))
    try:
        yield
    except faults.StoreFault:  # the store is down past its wait: what is held cannot be written
        raise
    except BaseException:
        _holding.held = None
        with contextlib.suppress(Exception):  # the records as before: what it sampled until it failed
            _write(trial, held)
        raise
    finally:
        _holding.held = None
    _write(trial, held)


def _write(trial: optuna.Trial, held: _Held) -> None:
    names = [param[0] for param in held.params]
    try:
        held.write()
    except ValueError:  # a distribution the study holds differently: Optuna's cache must not keep it
        optuna_private.forget_param_distributions(trial.study, names)
        raise


def set_user_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    """`trial.set_user_attr` for each of `attrs`, in one transaction where the storage is ours (each
    of Optuna's is a transaction of its own: 5 round trips to a database server); as Optuna does,
    the trial object keeps them too (`trial.user_attrs`)."""
    backend = optuna_private.rdb_storage_of(trial.study)
    if len(attrs) < 2 or not isinstance(backend, ResilientStorage):
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    backend.set_trial_user_attrs(optuna_private.trial_id(trial), attrs)
    optuna_private.keep_user_attrs(trial, attrs)


def set_constraints(trial: optuna.Trial, values: Mapping[str, float]) -> None:
    """`trial.set_constraint` for each of `values`, in one transaction where the storage is ours:
    Optuna's reads the whole trial back before each write (a `get_trial`, ~6 SELECTs) to ignore a
    constraint already set; the trial object knows which were (it holds them, as Optuna's does)."""
    backend = optuna_private.rdb_storage_of(trial.study)
    if not isinstance(backend, ResilientStorage):
        for name, value in values.items():
            trial.set_constraint(name, value)
        return
    held = optuna_private.kept_system_attrs(trial)
    attrs = {optuna_private.constraint_attr(name): _constraint(name, value) for name, value in values.items()}
    attrs = {key: value for key, value in attrs.items() if key not in held}  # Optuna ignores a second one
    if attrs:
        backend.set_trial_system_attrs(optuna_private.trial_id(trial), attrs)
        held.update(attrs)


def _constraint(name: str, value: Any) -> float:
    """A constraint value as `Trial.set_constraint` takes it: a float, never NaN."""
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"Attempted to set a constraint for {name!r}, but NaN is not allowed.")
    return value


def readable_storage(storage: str | None) -> tuple[RDBStorage, list[str]]:
    """A storage a results command reads, opened once, and the names of its studies; an absent or
    unreadable storage is a UserError."""
    url = resolve_storage(storage)
    locks.outage_s()  # a bad EXPTRACK_STORE_WAIT is said now, not at the first outage
    missing = parse(url).missing_file()
    if missing:
        raise UserError(f"no Optuna storage at {missing}; run exp search here first, or pass --storage")
    if parse(url).is_database and not schema.check_optuna_target(url):  # never create by reading
        raise UserError(f"no Optuna storage at {redact(url)}; run exp search there first, or fix --storage")
    with _one_line_failure(url, "read"):  # resilient too: a results command waits out a restart
        opened = ResilientStorage(url, skip_table_creation=True, engine_kwargs=backends.engine_kwargs(url))
        return opened, [s.study_name for s in opened.get_all_studies()]


def load_existing_study(name: str, storage: str | None) -> optuna.Study:
    """A study a search already wrote; an unknown name lists the ones that exist."""
    opened, names = readable_storage(storage)
    if name not in names:
        known = ", ".join(sorted(names)) or "none yet: run exp search first"
        raise UserError(f"no study named {name!r} in {redact(opened.url)}; studies there: {known}")
    return optuna.load_study(study_name=name, storage=opened)


