"""What a database holds, read before exptrack creates, migrates or rebuilds anything in it: nothing
yet, an MLflow store (at which schema revision), an Optuna storage, or another application's tables.
(What MLflow's own schema revisions mean is `tracking.store_setup`'s: only tracking imports MLflow.)

exptrack writes its schema only into a database it can prove is its own kind of store: swapped
`--storage` / `--tracking-uri`, or a URL naming an application's database, end in one line and leave
the file byte-identical (a sqlite file is only ever read here, through a read-only connection).
A store whose creation a kill cut short is recognised by what it holds (MLflow's tables and not
one row: MLflow writes its Default experiment only after its last migration), never by a lack of
runs; an older MLflow store is migrated the way `mlflow db upgrade` does, never rebuilt.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

from exptrack.errors import UserError, first_line, redact
from exptrack.stores import faults, sqlite
from exptrack.stores.url import parse

# Tables every MLflow and every Optuna schema has had; either pair tells the two stores apart.
MLFLOW_MARKS = frozenset({"experiments", "runs"})
OPTUNA_MARKS = frozenset({"studies", "trials", "version_info"})
ALEMBIC_TABLE = "alembic_version"  # both MLflow and Optuna migrate with alembic's default table


@dataclass(frozen=True)
class Contents:
    """A database's tables (alembic's bookkeeping table aside), its alembic revision, and the
    tables that hold at least one row."""

    tables: frozenset[str]
    revision: str | None
    filled: frozenset[str]

    @property
    def kind(self) -> str:
        """'empty', 'optuna', 'mlflow' or 'other' (an Optuna mark wins: MLflow's tables inside an
        Optuna database are what the swapped-URL bug of earlier versions left)."""
        if not self.tables:
            return "empty"
        if self.tables & OPTUNA_MARKS:
            return "optuna"
        if self.tables >= MLFLOW_MARKS:
            return "mlflow"
        return "other"


def read_contents(url: str) -> Contents:
    """What the database at `url` holds (a missing sqlite file holds nothing). Read-only."""
    path = parse(url).path
    if path is not None:
        return _sqlite_contents(path) if path.exists() and path.stat().st_size else Contents(frozenset(), None, frozenset())
    return _server_contents(url)


def _sqlite_contents(path: Path) -> Contents:
    try:
        return _read_sqlite(path)
    except sqlite3.OperationalError as exc:
        if not getattr(exc, "sqlite_errorname", "").startswith("SQLITE_READONLY"):
            raise
    # A writer killed mid-transaction left a hot journal, which a read-only connection cannot roll
    # back: judge a private copy (sqlite rolls the copy back), leaving the file as it is.
    with tempfile.TemporaryDirectory(prefix="exptrack-judge-") as folder:
        copy = Path(folder) / path.name
        for suffix in ("", "-journal"):
            source = path.with_name(path.name + suffix)
            if source.exists():
                shutil.copyfile(source, copy.with_name(copy.name + suffix))
        with contextlib.closing(sqlite3.connect(copy)) as db:  # its first read rolls the journal back
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return _read_sqlite(copy)


def _read_sqlite(path: Path) -> Contents:
    with sqlite.read_only(path, timeout=60) as db:
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        tables = frozenset(n for n in names if not n.startswith("sqlite_") and n != ALEMBIC_TABLE)
        revision = None
        if ALEMBIC_TABLE in names:
            row = db.execute(f"SELECT version_num FROM {ALEMBIC_TABLE}").fetchone()
            revision = str(row[0]) if row else None
        filled = frozenset(t for t in tables if db.execute(f'SELECT EXISTS (SELECT 1 FROM "{t}")').fetchone()[0])
    return Contents(tables, revision, filled)


def _server_contents(url: str) -> Contents:
    """A database server's tables in its default schema, through one short-lived connection."""
    from sqlalchemy import create_engine, inspect, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            names = inspect(connection).get_table_names()
            tables = frozenset(n for n in names if n != ALEMBIC_TABLE)
            revision = None
            if ALEMBIC_TABLE in names:
                revision = connection.execute(text(f"SELECT version_num FROM {ALEMBIC_TABLE}")).scalar()
            quote = connection.dialect.identifier_preparer.quote
            filled = frozenset(
                t for t in tables if connection.execute(text(f"SELECT EXISTS (SELECT 1 FROM {quote(t)})")).scalar()
            )
    finally:
        engine.dispose()
    return Contents(tables, None if revision is None else str(revision), filled)


# --- the Optuna storage ------------------------------------------------------------------------


def check_optuna_target(url: str, flag: str = "--storage") -> bool:
    """A UserError unless the database at `url` is empty or holds Optuna's tables; True when it
    holds a storage already."""
    contents = read(url, "Optuna storage", flag)
    kind = contents.kind
    if kind == "mlflow":
        raise UserError(
            f"{redact(url)} holds an MLflow store, not an Optuna study: did you swap --storage and "
            f"--tracking-uri? Fix {flag} (e.g. sqlite:///optuna.db)"
        )
    if kind == "other":
        raise UserError(foreign(url, contents, "an Optuna storage", flag))
    return kind == "optuna"


# --- shared ------------------------------------------------------------------------------------


def read(url: str, what: str, flag: str) -> Contents:
    try:
        return read_contents(url)
    except Exception as exc:  # sqlite3, OS or a database server's error: unreadable either way
        faults.raise_at_once(exc, url, what)  # damaged pages, a full disk: said as such
        raise UserError(f"{what} {redact(url)} cannot be read ({first_line(exc)}); fix {flag}") from exc


def foreign(url: str, contents: Contents, wanted: str, flag: str) -> str:
    shown = sorted(contents.tables)
    listed = ", ".join(shown[:4]) + (f" and {len(shown) - 4} more" if len(shown) > 4 else "")
    return (
        f"{redact(url)} holds other tables ({listed}), not {wanted}; exptrack writes only into its own "
        f"stores: name a new file or database with {flag}"
    )
