"""The sqlite backend: one machine's store. Its lock is a `flock` on the file's directory (the
kernel drops it when the process dies, and no lock file is left behind), a store file is created
whole or not at all (built under a temporary name, linked into place), and a file that cannot be
used (a directory, not SQLite, cut short, damaged, read-only) ends in one line before anything is
written.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exptrack import processes
from exptrack.errors import UserError, first_line
from exptrack.stores import locks

SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file
BUSY_TIMEOUT_S = 60  # several processes on one file: wait for the lock, don't fail
ENGINE: dict[str, Any] = {"connect_args": {"timeout": BUSY_TIMEOUT_S}}
FULL_CODES = ("SQLITE_FULL",)
DAMAGE_CODES = ("SQLITE_CORRUPT", "SQLITE_NOTADB")


def _codes(exc: BaseException) -> set[str]:
    return {getattr(seen, "sqlite_errorname", "") for seen in locks.chain(exc)}


def is_disk_full(exc: BaseException) -> bool:
    """sqlite's `database or disk is full`, or the file system's ENOSPC (a journal, a temporary
    build): a full disk does not clear by itself, so it is never waited out."""
    if _codes(exc) & set(FULL_CODES) or locks.says(exc, "database or disk is full"):
        return True
    return any(isinstance(seen, OSError) and seen.errno == errno.ENOSPC for seen in locks.chain(exc))


def is_damaged(exc: BaseException) -> bool:
    """`database disk image is malformed` (pages damaged behind an intact header) or not a database."""
    return bool(_codes(exc) & set(DAMAGE_CODES)) or locks.says(exc, "disk image is malformed")


def is_outage(exc: BaseException) -> bool:
    """A locked or briefly unreadable file, which waiting may clear; a full disk or damage never does."""
    return locks.is_connection_lost(exc) and not is_disk_full(exc) and not is_damaged(exc)


class DirectoryLock(locks.StoreLock):
    """`flock` on a directory: every sqlite store in it shares the lock; nothing is written."""

    locks_processes = True

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory
        self._fd: int | None = None

    def _acquire(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        deadline = time.monotonic() + locks.LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._fd = fd
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise locks.stuck(str(self.directory)) from None
                time.sleep(locks.POLL_S)

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None



# --- a sqlite store file, created whole or not at all ---------------------------------------------


def create_once(path: Path, build: Callable[[str], None]) -> bool:
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


def rebuild(path: Path, build: Callable[[str], None]) -> None:
    """Rebuild the sqlite store `path` (hold its lock): build beside it, then rename over it. The old
    file's journal goes first: a hot journal a killed writer left would otherwise be rolled back
    into the new file on its first open, writing old pages over it ('no such column')."""
    path = path.resolve()
    temp = _build_name(path)
    try:
        build(f"sqlite:///{temp}")
        for suffix in ("-journal", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                path.with_name(path.name + suffix).unlink()
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


def check_file(path: Path, what: str, flag: str, write: bool = True) -> None:
    folder = path.resolve().parent
    if path.is_dir():
        raise UserError(
            f"{what} {path} is a directory; name a database file, e.g. {flag} sqlite:///{path}/store.db"
        )
    if not path.exists():
        if not folder.is_dir():
            raise UserError(f"{what} {path}: directory {folder} does not exist; create it or fix {flag}")
        if write and not os.access(folder, os.W_OK | os.X_OK):
            raise UserError(f"{what} {path} cannot be created: directory {folder} is read-only; fix {flag}")
        return
    _check_sqlite_content(path, what, flag)
    if write and not (os.access(path, os.W_OK) and os.access(folder, os.W_OK | os.X_OK)):
        raise UserError(
            f"{what} {path} is read-only (sqlite writes the file and a journal beside it in {folder}); "
            f"make both writable or fix {flag}"
        )


def _check_sqlite_content(path: Path, what: str, flag: str) -> None:
    """A file that is not SQLite, or shorter than its header says (cut short by a full disk or a
    bad copy). An empty file is a new database, which sqlite fills in."""
    size = path.stat().st_size
    if size == 0:
        return
    with path.open("rb") as file:
        header = file.read(100)
    damaged = f"move it away to start a new store, restore a backup, or fix {flag}"
    if not header.startswith(SQLITE_HEADER) or len(header) < 100:
        raise UserError(f"{what} {path} is not an SQLite database (damaged, or another file); {damaged}")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size  # the header's encoding of 64 KiB
    pages = int.from_bytes(header[28:32], "big")
    # the page count is valid when the version-valid-for number matches the change counter
    if header[92:96] == header[24:28] and size < pages * page_size:
        raise UserError(f"{what} {path} is truncated ({size} of {pages * page_size} bytes); {damaged}")
    _probe(path, what, damaged)


def _probe(path: Path, what: str, damaged: str) -> None:
    """Read the schema read-only: a corrupt first page fails here. A busy or locked file, or a
    journal a killed writer left (rolled back by the next writer), is not damage."""
    try:
        with read_only(path, timeout=1) as db:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorname", "") in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
            raise UserError(f"{what} {path} is damaged ({first_line(exc)}); {damaged}") from exc


def read_only(path: Path, timeout: float) -> contextlib.closing[sqlite3.Connection]:
    """A read-only connection to the sqlite file `path` (as a file: URI, so `?` or `#` in the
    path stay part of it), closed on leaving the `with`."""
    return contextlib.closing(
        sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=timeout)
    )


