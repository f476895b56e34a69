"""A new sqlite MLflow store starts from a cached copy of MLflow's migrated schema (made once per
user and MLflow release) instead of MLflow's ~80 migrations: the store must be the one MLflow makes,
and a cache that is damaged or cannot be written must only cost the migrations, never an error."""

from __future__ import annotations

import json
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


def test_mlflows_schema_revisions_are_read_once_per_install_and_a_damaged_copy_is_read_afresh(
    cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mlflow.store.db.utils import _get_latest_schema_revision

    first = store_setup._migrations()
    (kept,) = cache.glob("mlflow-*.json")
    assert first["head"] == _get_latest_schema_revision() and first["head"] in first["revisions"]
    assert store_setup._migrations() == first  # from the cached copy
    kept.write_text('{"head": ')  # cut short
    assert store_setup._migrations() == first and json.loads(kept.read_text()) == first  # rewritten
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("EXPTRACK_CACHE_DIR", str(tmp_path / "a-file" / "cache"))
    assert store_setup._migrations() == first  # a cache that cannot be written only costs time


def test_the_revisions_cache_key_changes_with_a_migration_script_not_with_its_bytecode(
    tmp_path: Path,
) -> None:
    (tmp_path / "0001_first.py").write_text("revision = '0001'\n")
    before = store_setup._folder_key(tmp_path)
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "0001_first.cpython-311.pyc").write_bytes(b"\x00")
    assert store_setup._folder_key(tmp_path) == before
    (tmp_path / "0002_second.py").write_text("revision = '0002'\n")
    assert store_setup._folder_key(tmp_path) != before
