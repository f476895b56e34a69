"""A new sqlite MLflow store starts from a cached copy of MLflow's migrated schema (made once per
user and MLflow release) instead of MLflow's ~80 migrations: the store must be the one MLflow makes,
and a cache that is damaged or cannot be written must only cost the migrations, never an error."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from exptrack.tracking import store_setup


def _schema(path: Path) -> set[tuple[str, frozenset[str]]]:
    """Every table, index and trigger with the clauses of its SQL, and alembic's revision. Clauses,
    not text: MLflow's own migrations order a recreated table's constraints by string hashing
    (`runs` differs between two fresh stores under two PYTHONHASHSEEDs)."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL")
        found = {
            (name, frozenset(line.strip().rstrip(",") for line in sql.split("\n"))) for name, sql in rows
        }
        found |= {
            ("revision", frozenset({r})) for (r,) in db.execute("SELECT version_num FROM alembic_version")
        }
    return found


def _experiments(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM experiments").fetchone()[0])


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EXPTRACK_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_store_from_the_cached_schema_is_the_store_mlflow_makes(tmp_path: Path, cache: Path) -> None:
    by_mlflow = tmp_path / "mlflow-alone.db"
    SqlAlchemyStore(f"sqlite:///{by_mlflow}", "./mlruns").engine.dispose()
    store_setup.ensure_store(f"sqlite:///{tmp_path / 'first.db'}")  # makes the cached schema
    (cached,) = cache.glob("mlflow-*.db")
    began_ms = time.time() * 1000
    store_setup.ensure_store(f"sqlite:///{tmp_path / 'second.db'}")  # a copy of it
    assert _schema(tmp_path / "second.db") == _schema(by_mlflow) == _schema(tmp_path / "first.db")
    default = MlflowClient(f"sqlite:///{tmp_path / 'second.db'}").get_experiment("0")
    assert default.name == "Default" and default.creation_time >= began_ms - 1000  # dated now
    assert _experiments(cached) == 0  # the schema only: each store gets its own Default experiment


def test_a_damaged_cached_schema_is_rebuilt_and_an_unwritable_cache_only_costs_time(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_setup.ensure_store(f"sqlite:///{tmp_path / 'first.db'}")
    (cached,) = cache.glob("mlflow-*.db")
    cached.write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)  # cut short
    store_setup.ensure_store(f"sqlite:///{tmp_path / 'second.db'}")
    assert store_setup.mlflow_state(f"sqlite:///{tmp_path / 'second.db'}") == "current"
    assert _schema(cached) == _schema(tmp_path / "second.db") and _experiments(cached) == 0  # rebuilt

    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("EXPTRACK_CACHE_DIR", str(tmp_path / "a-file" / "cache"))
    assert store_setup.migrated_schema() is None
    store_setup.ensure_store(f"sqlite:///{tmp_path / 'third.db'}")
    assert store_setup.mlflow_state(f"sqlite:///{tmp_path / 'third.db'}") == "current"
