"""Which backend module serves a store URL: its lock, engine settings and checks. A database with
no backend module here (MySQL, MariaDB, ...) is refused in one line: without a lock across
processes, two hosts starting together make two study runs and --trials stops being exact."""

from __future__ import annotations

import threading
from typing import Any

from exptrack.errors import UserError
from exptrack.stores import locks, postgresql, sqlite
from exptrack.stores.url import StoreURL, parse

_locks: dict[str, locks.StoreLock] = {}
_locks_guard = threading.Lock()


def store_lock(url: str) -> locks.StoreLock:
    """The one lock of the store at `url` in this process (sqlite: of its directory). An MLflow
    server creates its own store: its lock only orders this process's threads."""
    parsed = require_backend(url)
    path = parsed.path
    key = f"dir:{path.resolve().parent}" if path is not None else url
    with _locks_guard:
        if key not in _locks:
            if path is not None:
                _locks[key] = sqlite.DirectoryLock(path.resolve().parent)
            elif parsed.backend == "postgresql":
                _locks[key] = postgresql.AdvisoryLock(url)
            else:
                _locks[key] = locks.StoreLock()
        return _locks[key]


def require_backend(url: str, flag: str = "--storage") -> StoreURL:
    """The parsed URL, unless it names a database server this package has no backend for."""
    parsed = parse(url)
    if parsed.backend == "database":
        raise UserError(
            f"{parsed.scheme}:// stores are not supported: exptrack has no lock across processes there, so "
            f"--trials would not be exact; use sqlite:/// on one machine or postgresql:// for many ({flag})"
        )
    return parsed


def engine_kwargs(url: str) -> dict[str, Any]:
    """SQLAlchemy engine settings of the store's backend."""
    backend = parse(url).backend
    if backend == "sqlite":
        return dict(sqlite.ENGINE)
    if backend == "postgresql":
        return dict(postgresql.ENGINE)
    return {"pool_pre_ping": True}


def check_store(url: str, what: str, flag: str, write: bool = True) -> None:
    """Raise a one-line UserError when the store at `url` cannot be opened (or, with `write`,
    written). `what` names the store in the message, `flag` is the option that fixes it."""
    locks.outage_s()  # a bad EXPTRACK_STORE_WAIT is said now, not at the first outage
    parsed = require_backend(url, flag)
    if parsed.path is not None:
        sqlite.check_file(parsed.path, what, flag, write)
    elif parsed.backend == "postgresql":
        postgresql.check_server(url, what, flag)
