"""The PostgreSQL backend: many machines' store. Its lock is a session advisory lock on a
connection of its own, so processes on every machine that reach the database take turns; the
server drops it when the connection dies (and, during a restart, while its holder waits).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from typing import Any

from exptrack.errors import UserError, first_line, redact
from exptrack.stores import locks

ADVISORY_KEY = int.from_bytes(hashlib.sha256(b"exptrack.store").digest()[:8], "big", signed=True)
SERVER_TIMEOUT_S = 5  # a database server that has not answered in 5 s is down or unreachable
# Per worker process: its main thread and its trial's heartbeat thread each hold a connection at
# most; 2 more absorb a burst. Pre-ping drops connections a database restart killed, recycle those
# a firewall may have cut while a long trial trained.
ENGINE: dict[str, Any] = {
    "pool_size": 2, "max_overflow": 2, "pool_pre_ping": True, "pool_recycle": 300,
    "connect_args": {"connect_timeout": 10},
}  # fmt: skip
DISK_FULL = "53100"  # SQLSTATE disk_full
DATA_CORRUPTED = ("XX001", "XX002")  # SQLSTATE data_corrupted, index_corrupted


def _states(exc: BaseException) -> set[str]:
    return {str(getattr(seen, "sqlstate", "") or "") for seen in locks.chain(exc)}


def is_disk_full(exc: BaseException) -> bool:
    """The server's disk is full (DiskFull, or `No space left on device` in its message): a full
    disk does not clear by itself, so it is never waited out."""
    return DISK_FULL in _states(exc) or locks.says(exc, "no space left on device")


def is_damaged(exc: BaseException) -> bool:
    return bool(_states(exc) & set(DATA_CORRUPTED))


def is_outage(exc: BaseException) -> bool:
    """A lost or refused connection (a restart, a network cut), not a full disk."""
    return locks.is_connection_lost(exc) and not is_disk_full(exc)


class AdvisoryLock(locks.StoreLock):
    """A PostgreSQL session advisory lock on a connection kept for this process (autocommit, so
    no transaction stays open while the lock is held)."""

    locks_processes = True

    @property
    def lost_for_s(self) -> float:  # type: ignore[override]
        return locks.outage_s()

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self._engine: Any = None
        self._connection: Any = None

    def _acquire(self) -> None:
        started = time.monotonic()
        deadline = started + locks.outage_s()
        while True:
            try:
                self._connect().exec_driver_sql(f"SELECT pg_advisory_lock({ADVISORY_KEY})")
                return
            except Exception as exc:
                self._drop()
                if _lock_timed_out(exc):
                    raise locks.stuck(redact(self.url)) from exc
                if time.monotonic() > deadline:  # the database is gone, not just restarting
                    raise locks.StoreUnavailable(
                        f"database {redact(self.url)} unreachable; waited {time.monotonic() - started:.0f} s "
                        f"({type(exc).__name__}); start it and re-run the same command: the study resumes "
                        f"(the wait is {locks.WAIT_ENV}={locks.outage_s():g} seconds)"
                    ) from exc
                time.sleep(1.0)

    def _release(self) -> None:
        try:
            self._connection.exec_driver_sql(f"SELECT pg_advisory_unlock({ADVISORY_KEY})")
        except Exception:
            self._drop()  # a dead connection: the server already dropped its locks

    def _connect(self) -> Any:
        if self._connection is None:
            from sqlalchemy import create_engine
            from sqlalchemy.pool import NullPool

            if self._engine is None:
                self._engine = create_engine(self.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
            self._connection = self._engine.connect()
            # a setting of the session: said once per connection, not on every ask
            self._connection.exec_driver_sql(f"SET lock_timeout = '{locks.LOCK_TIMEOUT_S}s'")
        return self._connection

    def _drop(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
        self._connection = None


def _lock_timed_out(exc: BaseException) -> bool:
    return "lock timeout" in str(exc).lower()


def check_server(url: str, what: str, flag: str) -> None:
    """A database server answers within SERVER_TIMEOUT_S (a closed port answers at once)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
        engine = create_engine(parsed, connect_args={"connect_timeout": SERVER_TIMEOUT_S})
    except ImportError as exc:  # SQLAlchemy imports the URL's driver here
        raise UserError(
            f"{what} {redact(url)} needs a database driver that is not installed ({first_line(exc)}); "
            "install it"
        ) from exc
    except Exception as exc:
        raise UserError(
            f"{what} {redact(url)} is not a valid database URL ({type(exc).__name__}); fix {flag}"
        ) from exc
    try:
        with engine.connect():
            pass
    except Exception as exc:
        raise UserError(
            f"{what} {redact(url)} cannot be opened ({type(exc).__name__}); start the database or fix {flag}"
        ) from exc
    finally:
        engine.dispose()
