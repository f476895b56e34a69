"""Creating the MLflow tracking store before any client touches it: once, whole, whatever else runs.

MLflow creates a database store on first use, in ~80 schema migrations (~5 s on sqlite) with no
lock across processes: a kill in those seconds left a half-migrated file that failed every later
start, and two processes creating one store at once interleaved their migrations. Here a sqlite
store is built under a temporary name and linked into place (`coordination.create_sqlite_once`),
one that a kill left half-made (holding no record yet) is rebuilt, and a PostgreSQL store is
created under the database's advisory lock. An MLflow server creates its own store.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from exptrack import coordination, store_checks


def ensure_store(uri: str) -> None:
    """Create the database store at `uri` if it is new; rebuild a sqlite one a kill left half-made."""
    path = coordination.sqlite_path(uri)
    if path is not None:
        if coordination.create_sqlite_once(path, _build) or _complete(path):
            return
        with coordination.store_lock(uri):
            if not _complete(path) and not _holds_records(path):
                coordination.replace_sqlite(path, _build)
    elif coordination.is_postgres(uri):
        with coordination.store_lock(uri):
            _create(uri)  # MLflow creates or finishes the tables; its engine stays cached for the client


def _build(url: str) -> None:
    _create(url).engine.dispose()  # close the file before it is linked into place


def _create(url: str):  # type: ignore[no-untyped-def]
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    # the artifact root MlflowClient gives the store (./mlruns), so the Default experiment matches
    return SqlAlchemyStore(url, DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)


def _complete(path: Path) -> bool:
    """The schema is at this MLflow's newest migration (an empty file is a store still to build)."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _schema_version(path) == _get_latest_schema_revision()


def _schema_version(path: Path) -> str | None:
    with store_checks.read_only(path, timeout=60) as db:
        try:
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.OperationalError:  # no such table: creation never got that far
            return None
    return str(row[0]) if row else None


def _holds_records(path: Path) -> bool:
    """Any run or experiment of a user: such a store is MLflow's to upgrade, never ours to rebuild."""
    with store_checks.read_only(path, timeout=60) as db:
        for query in ("SELECT 1 FROM runs LIMIT 1", "SELECT 1 FROM experiments WHERE name != 'Default'"):
            try:
                if db.execute(query).fetchone():
                    return True
            except sqlite3.OperationalError:  # the table is not there yet
                continue
    return False
