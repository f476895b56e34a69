"""How processes on one machine or many share a store: one lock per store, held by the database
or the kernel (never a file of ours), and a sqlite store file created whole or not at all.

- sqlite: `flock` on the directory holding the file. The kernel drops it when the process dies, and
  no lock file is left behind (a file per store in $TMPDIR used to pile up).
- PostgreSQL: a session advisory lock on a connection of its own, so processes on every machine
  that reach the database take turns; the server drops it when the connection dies.
- Other URLs (an MLflow server, MySQL): no lock; an MLflow server creates its own tables.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exptrack import processes
from exptrack.errors import UserError, redact

LOCK_TIMEOUT_S = 300  # creating both stores takes seconds, an ask milliseconds: minutes mean a stuck peer
POSTGRES_DRIVER = "postgresql+psycopg"  # psycopg 3, from the `postgres` extra
ADVISORY_KEY = int.from_bytes(hashlib.sha256(b"exptrack.store").digest()[:8], "big", signed=True)
_POLL_S = 0.02
OUTAGE_S = 120  # how long a lock (and a store call) waits out a database restart before giving up


def sqlite_path(url: str) -> Path | None:
    """The file a `sqlite:///` URL names, relative to the working directory (None for other URLs
    and in-memory databases)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?")[0]
    return None if path in ("", ":memory:") else Path(path)


def missing_sqlite_file(url: str) -> Path | None:
    """The file a `sqlite:///` URL names, when it does not exist (opening it would create it empty)."""
    path = sqlite_path(url)
    return path if path is not None and not path.exists() else None


def is_postgres(url: str) -> bool:
    return url.split(":", 1)[0].split("+")[0] in ("postgresql", "postgres")


def with_postgres_driver(url: str) -> str:
    """`postgresql://` (SQLAlchemy's default driver is psycopg2) -> `postgresql+psycopg://`; a
    PostgreSQL URL without psycopg installed is a one-line error naming the extra."""
    scheme, sep, rest = url.partition("://")
    if not sep or not is_postgres(url):
        return url
    if scheme in ("postgresql", "postgres"):
        scheme = POSTGRES_DRIVER
    if scheme == POSTGRES_DRIVER and not _has_psycopg():
        raise UserError(
            f"{redact(url)} needs the PostgreSQL driver psycopg 3, which is not installed; "
            "pip install -e '.[postgres]'"
        )
    return f"{scheme}://{rest}"


def _has_psycopg() -> bool:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False
    return True


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


class DirectoryLock(StoreLock):
    """`flock` on a directory: every sqlite store in it shares the lock; nothing is written."""

    locks_processes = True

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory
        self._fd: int | None = None

    def _acquire(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._fd = fd
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise UserError(_stuck(str(self.directory))) from None
                time.sleep(_POLL_S)

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


class AdvisoryLock(StoreLock):
    """A PostgreSQL session advisory lock on a connection kept for this process (autocommit, so
    no transaction stays open while the lock is held)."""

    locks_processes = True
    lost_for_s = float(OUTAGE_S)

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self._engine: Any = None
        self._connection: Any = None

    def _acquire(self) -> None:
        deadline = time.monotonic() + OUTAGE_S
        while True:
            try:
                self._connect().exec_driver_sql(f"SELECT pg_advisory_lock({ADVISORY_KEY})")
                return
            except Exception as exc:
                self._drop()
                if _lock_timed_out(exc):
                    raise UserError(_stuck(redact(self.url))) from exc
                if time.monotonic() > deadline:  # the database is gone, not just restarting
                    raise UserError(
                        f"database {redact(self.url)} unreachable for {OUTAGE_S} s "
                        f"({type(exc).__name__}); start it and re-run the same command"
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
            self._connection.exec_driver_sql(f"SET lock_timeout = '{LOCK_TIMEOUT_S}s'")
        return self._connection

    def _drop(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
        self._connection = None


_locks: dict[str, StoreLock] = {}
_locks_guard = threading.Lock()


def store_lock(url: str) -> StoreLock:
    """The one lock of the store at `url` in this process (sqlite: of its directory)."""
    path = sqlite_path(url)
    key = f"dir:{path.resolve().parent}" if path is not None else url
    with _locks_guard:
        if key not in _locks:
            if path is not None:
                _locks[key] = DirectoryLock(path.resolve().parent)
            elif is_postgres(url):
                _locks[key] = AdvisoryLock(url)
            else:
                _locks[key] = StoreLock()
        return _locks[key]


def _lock_timed_out(exc: BaseException) -> bool:
    return "lock timeout" in str(exc).lower()


def _stuck(where: str) -> str:
    return (
        f"another exptrack process has held the store lock on {where} for {LOCK_TIMEOUT_S} s; "
        "stop the stuck process (ps aux | grep exptrack) and re-run"
    )


# --- a sqlite store file, created whole or not at all ---------------------------------------------


def create_sqlite_once(path: Path, build: Callable[[str], None]) -> bool:
    """Create the sqlite store `path` with `build(url)` unless it exists; True if this process made it.

    The store is built under a temporary name beside it and then hard-linked into place, which
    fails if another process got there first (its store is as good as ours). A kill mid-build
    leaves only the temporary file, removed by the next start, never a half-made store."""
    if path.exists():
        return False
    path = path.resolve()  # the temporary name must not follow a later chdir
    _remove_abandoned_builds(path)
    temp = _build_name(path)
    try:
        build(f"sqlite:///{temp}")
        os.link(temp, path)
        return True
    except FileExistsError:
        return False
    finally:
        _remove(temp)


def replace_sqlite(path: Path, build: Callable[[str], None]) -> None:
    """Rebuild the sqlite store `path` (hold its lock): build beside it, then rename over it."""
    path = path.resolve()
    temp = _build_name(path)
    try:
        build(f"sqlite:///{temp}")
        os.replace(temp, path)
    finally:
        _remove(temp)


def _build_name(path: Path) -> Path:
    """This process's temporary build of `path`, named by its owner (host:pid:start-time)."""
    return path.with_name(f".{path.name}.{processes.worker_id()}.new")


def _remove_abandoned_builds(path: Path) -> None:
    """Temporary builds of this store whose process died (killed mid-build)."""
    for temp in path.parent.glob(f".{path.name}.*.new"):
        owner = temp.name.removeprefix(f".{path.name}.").removesuffix(".new")
        if processes.owner_is_dead(owner):
            _remove(temp)


def _remove(path: Path) -> None:
    for suffix in ("", "-journal", "-wal", "-shm"):
        leftover = path.with_name(path.name + suffix)
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
