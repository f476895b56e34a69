"""What every backend's lock shares: re-entrant within a process, and how long a lock or a store
call waits before it gives up. Each backend module subclasses `StoreLock`."""

from __future__ import annotations

import math
import os
import threading

from exptrack.errors import UserError

LOCK_TIMEOUT_S = 300  # creating both stores takes seconds, an ask milliseconds: minutes mean a stuck peer
# How long a lock (and a store call) waits out a database restart before giving up, unless
# EXPTRACK_STORE_WAIT says otherwise: a PostgreSQL restart or failover takes seconds to a minute.
OUTAGE_S = 120
WAIT_ENV = "EXPTRACK_STORE_WAIT"
POLL_S = 0.02


class StoreFault(UserError):
    """A store could not serve a call (stores.faults words it): the message names the store, how
    long it was waited for and how to resume."""


class StoreUnavailable(StoreFault):
    """The database stayed unreachable past the wait."""


class StoreFull(StoreFault):
    """The disk (or the database server's disk) is full: never waited out."""


class StoreDamaged(StoreFault):
    """The store's pages are damaged (sqlite: `database disk image is malformed`)."""


class StoreLock:
    """The lock of one store, re-entrant within a process: `with lock: ...`."""

    locks_processes = False  # True when it keeps other processes out (sqlite, PostgreSQL)
    # Seconds a holder may be stuck inside without its lock: a database restart drops an advisory
    # lock with its session while the holder's calls wait the outage out (up to OUTAGE_S).
    lost_for_s = 0.0

    def __init__(self) -> None:
        self._guard = threading.RLock()
        self._depth = 0

    def __enter__(self) -> StoreLock:
        self._guard.acquire()
        try:
            if self._depth == 0:
                self._acquire()
        except BaseException:
            self._guard.release()
            raise
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        try:
            if self._depth == 0:
                self._release()
        finally:
            self._guard.release()

    def _acquire(self) -> None:
        pass

    def _release(self) -> None:
        pass


def outage_s() -> float:
    """Seconds a store call waits out a lost database before it gives up: EXPTRACK_STORE_WAIT,
    else OUTAGE_S. Read on each wait, so a test (or a user) can shorten it per process."""
    text = os.environ.get(WAIT_ENV, "").strip()
    if not text:
        return float(OUTAGE_S)
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):  # `not >=`: NaN is refused too
        raise UserError(f"{WAIT_ENV}={text!r} is not a number of seconds (0 or more); fix or unset it")
    return seconds


def is_connection_lost(exc: BaseException) -> bool:
    """A lost or refused database connection (a restart, a network cut), not a bad request: an
    operational error anywhere in the chain, or the session it left waiting for a rollback."""
    from sqlalchemy import exc as sa

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, sa.OperationalError | sa.InterfaceError | sa.PendingRollbackError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def chain(exc: BaseException) -> list[BaseException]:
    """`exc`, what caused it, and the driver's own error SQLAlchemy wraps (`.orig`), in order."""
    found: list[BaseException] = []
    pending: list[BaseException | None] = [exc]
    while pending:
        seen = pending.pop(0)
        if seen is None or any(seen is old for old in found):
            continue
        found.append(seen)
        orig = getattr(seen, "orig", None)
        pending += [orig if isinstance(orig, BaseException) else None, seen.__cause__, seen.__context__]
    return found


def says(exc: BaseException, *phrases: str) -> bool:
    """Does any error in the chain say one of `phrases` (lower case)?"""
    return any(phrase in str(seen).lower() for seen in chain(exc) for phrase in phrases)


def stuck(where: str) -> UserError:
    return UserError(
        f"another exptrack process has held the store lock on {where} for {LOCK_TIMEOUT_S} s; "
        "stop the stuck process (ps aux | grep exptrack) and re-run"
    )
