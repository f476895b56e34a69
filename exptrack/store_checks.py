"""Can a store be opened? Checked before anything is written, so a store that cannot be used ends
in one line naming the file or URL and the fix, in seconds, with nothing created: a sqlite path that
is a directory, a file that is not SQLite or was cut short, a store that cannot be written, a
database server that does not answer.

MLflow and Optuna find these out late and loudly (a directory as MLflow's sqlite file retried for
almost 2 minutes, then printed 600 lines), so both the search and `exp train` ask here first.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from exptrack import coordination
from exptrack.errors import UserError, first_line, redact

SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file
SERVER_TIMEOUT_S = 5  # a database server that has not answered in 5 s is down or unreachable
# URL schemes of database servers; http(s) tracking servers are checked by a request instead
DATABASE_SCHEMES = ("postgresql", "postgres", "mysql", "mssql", "oracle")


def check_store(url: str, what: str, flag: str, write: bool = True) -> None:
    """Raise a one-line UserError when the store at `url` cannot be opened (or, with `write`,
    written). `what` names the store in the message, `flag` is the option that fixes it."""
    path = coordination.sqlite_path(url)
    if path is not None:
        check_sqlite_file(path, what, flag, write)
    elif url.split("://")[0].split("+")[0] in DATABASE_SCHEMES:
        check_server(url, what, flag)


def check_sqlite_file(path: Path, what: str, flag: str, write: bool = True) -> None:
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
