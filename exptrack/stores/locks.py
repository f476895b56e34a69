"""What every backend's lock shares: re-entrant within a process, and how long a lock or a store
call waits before it gives up. Each backend module subclasses `StoreLock`."""

from __future__ import annotations

import threading

from exptrack.errors import UserError

LOCK_TIMEOUT_S = 300  # creating both stores takes seconds, an ask milliseconds: minutes mean a stuck peer
OUTAGE_S = 120  # how long a lock (and a store call) waits out a database restart before giving up
POLL_S = 0.02


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


def stuck(where: str) -> UserError:
    return UserError(
        f"another exptrack process has held the store lock on {where} for {LOCK_TIMEOUT_S} s; "
        "stop the stuck process (ps aux | grep exptrack) and re-run"
    )
