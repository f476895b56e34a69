"""A wrong store path never destroys data: swapped --storage / --tracking-uri, an application's
database, or an MLflow store of an older release are left byte-identical by every command that
only reads, and refused in one line (exit 2) where they are not an exptrack store. An older MLflow
store is migrated by `exp search` as MLflow migrates it (a copy kept), its registered model intact."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest
from mlflow import MlflowClient
from sqlalchemy import create_engine

from tests.faultkit import FAULTY, SMALL, run_cli_batch
from tests.fixtures_search import STUDY, Searched


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _application_db(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
        db.execute("INSERT INTO users (email) VALUES ('ada@example.com')")
    db.close()


_KILLED_MID_TRANSACTION = """
import os, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA cache_size=2")  # spills the transaction's pages into the file before it ends
db.execute("BEGIN")
db.execute("CREATE TABLE orders (item)")
for _ in range(3000):
    db.execute("INSERT INTO orders VALUES (?)", ("x" * 500,))
os._exit(0)  # killed: the file holds half a transaction, its hot journal the way back
"""


def _application_db_killed_mid_write(path: Path) -> None:
    import subprocess
    import sys

    _application_db(path)
    subprocess.run([sys.executable, "-c", _KILLED_MID_TRANSACTION, str(path)], check=True)
    assert path.with_name(path.name + "-journal").stat().st_size > 0


def _older_mlflow_store(path: Path) -> None:
    """An MLflow store as the previous MLflow release left it: one schema migration behind its
    head, holding a registered model and no run."""
    from alembic import command
    from mlflow.store.db.utils import _get_alembic_config

    url = f"sqlite:///{path}"
    client = MlflowClient(url)
    client.create_registered_model("digits-classifier", description="shipped in June")
    engine = create_engine(url)
    config = _get_alembic_config(url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "-1")
    engine.dispose()


def _creation_cut_short_after(path: Path, revision: str) -> None:
    """What MLflow's creation of a new store leaves when killed right after migration `revision`."""
    from alembic import command
    from mlflow.store.db.utils import _get_alembic_config
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase

    url = f"sqlite:///{path}"
    engine = create_engine(url)
    InitialBase.metadata.create_all(engine)
    config = _get_alembic_config(url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    engine.dispose()


@pytest.fixture
def stores(searched: Searched, tmp_path: Path) -> Path:
    """A folder holding copies of a real search's stores (o.db: Optuna's, m.db: MLflow's, o.bak: a
    copy of o.db), an application's database (app.db; hot.db, as a writer killed mid-transaction
    left it) and an older MLflow store (older.db)."""
    shutil.copy(searched.cwd / "optuna.db", tmp_path / "o.db")
    shutil.copy(searched.cwd / "optuna.db", tmp_path / "o.bak")
    shutil.copy(searched.cwd / "mlflow.db", tmp_path / "m.db")
    for folder in ("studies", "search_spaces", "dashboards"):
        shutil.copytree(searched.cwd / folder, tmp_path / folder)
    _application_db(tmp_path / "app.db")
    _application_db_killed_mid_write(tmp_path / "hot.db")
    _older_mlflow_store(tmp_path / "older.db")
    return tmp_path


def _uris(storage: str, tracking: str) -> list[str]:
    return ["--storage", f"sqlite:///{storage}", "--tracking-uri", f"sqlite:///{tracking}"]


SEARCH = ["search", FAULTY, *SMALL, "--trials", "1"]
# (command, the file it must leave untouched, words the one line says)
REFUSED = [
    (["trials", STUDY, *_uris("o.bak", "o.db")], "o.db", "holds an Optuna study, not an MLflow store"),
    (["report", STUDY, "--out", "page.html", *_uris("o.bak", "o.db")], "o.db", "did you swap"),
    (["export", STUDY, "--out", "best", *_uris("o.bak", "o.db")], "o.db", "did you swap"),
    (["studies", *_uris("o.bak", "o.db")], "o.db", "did you swap"),
    (["ui", "--tracking-uri", "sqlite:///o.db"], "o.db", "did you swap"),
    ([*SEARCH, *_uris("m.db", "o.db")], "o.db", "did you swap"),
    ([*SEARCH, *_uris("m.db", "o.db")], "m.db", "holds an MLflow store, not an Optuna study"),
    (["trials", STUDY, *_uris("o.bak", "app.db")], "app.db", "holds other tables (users)"),
    ([*SEARCH, *_uris("new.db", "app.db")], "app.db", "not an MLflow store"),
    ([*SEARCH, *_uris("app.db", "new.db")], "app.db", "not an Optuna storage"),
    (["trials", STUDY, "--storage", "sqlite:///app.db"], "app.db", "not an Optuna storage"),
    (["train", "best.yaml", "--tracking-uri", "sqlite:///app.db"], "app.db", "not an MLflow store"),
    ([*SEARCH, *_uris("new.db", "hot.db")], "hot.db-journal", "holds other tables (users)"),
    (["trials", STUDY, *_uris("o.bak", "hot.db")], "hot.db", "holds other tables (users)"),
]


@pytest.mark.slow
def test_a_wrong_or_foreign_store_file_is_refused_in_one_line_and_left_byte_identical(stores: Path) -> None:
    cases = []
    for i, (args, _, _) in enumerate(REFUSED):
        cwd = stores / f"case-{i}"
        shutil.copytree(stores, cwd, ignore=shutil.ignore_patterns("case-*"))
        (cwd / "best.yaml").write_text("backbone: resnet18\nweights: none\nepochs: 1\nsubset: 32\nimage_size: 8\n")
        cases.append((cwd, args))
    before = {cwd: {p.name: _digest(p) for p in cwd.glob("*.db*")} for cwd, _ in cases}
    results = run_cli_batch(cases)
    for (cwd, args), result, (_, untouched, words) in zip(cases, results, REFUSED, strict=True):
        shown = " ".join(args)
        assert result.returncode == 2, (shown, result.stdout, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and words in lines[0], (shown, result.stderr)
        assert "Traceback" not in result.stdout + result.stderr
        assert _digest(cwd / untouched) == before[cwd][untouched], shown
        # nothing else written either: no store created, no page, no export
        assert {p.name: _digest(p) for p in cwd.glob("*.db*")} == before[cwd], shown
        assert not (cwd / "page.html").exists() and not (cwd / "best").exists(), shown


@pytest.mark.slow
def test_read_only_commands_leave_an_older_mlflow_store_as_it_is(stores: Path) -> None:
    before = _digest(stores / "older.db")
    (done,) = run_cli_batch([(stores, ["trials", STUDY, *_uris("o.db", "older.db")])])
    assert done.returncode == 0, done.stderr
    assert "older MLflow's schema" in done.stdout + done.stderr
    assert _digest(stores / "older.db") == before
    (ui,) = run_cli_batch([(stores, ["ui", "--tracking-uri", "sqlite:///older.db"])])
    assert ui.returncode == 2 and "older MLflow's schema" in ui.stderr
    assert _digest(stores / "older.db") == before


@pytest.mark.slow
def test_search_migrates_an_older_mlflow_store_keeping_its_model_and_a_copy(stores: Path) -> None:
    before = _digest(stores / "older.db")
    (done,) = run_cli_batch([(stores, [*SEARCH, *_uris("fresh-optuna.db", "older.db")])])
    assert done.returncode == 0, done.stderr
    assert "migrated from schema" in done.stdout + done.stderr
    (backup,) = stores.glob("older.db.*.bak")
    assert _digest(backup) == before  # the file as it was, beside it
    client = MlflowClient(f"sqlite:///{stores / 'older.db'}")
    (model,) = client.search_registered_models()
    assert model.name == "digits-classifier" and model.description == "shipped in June"
    (experiment,) = [e for e in client.search_experiments() if e.name == "faulty"]
    assert len(client.search_runs([experiment.experiment_id])) == 2  # the study run and its trial


def _tables(url: str) -> set[str]:
    from sqlalchemy import inspect

    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.slow
def test_swapped_postgresql_urls_are_refused_before_either_database_is_touched(postgres, project: Path) -> None:  # type: ignore[no-untyped-def]
    optuna_url, mlflow_url = postgres.create_database("swap_optuna"), postgres.create_database("swap_mlflow")
    first = run_cli_batch([(project, [*SEARCH, "--storage", optuna_url, "--tracking-uri", mlflow_url])])
    assert first[0].returncode == 0, first[0].stderr
    tables = {url: _tables(url) for url in (optuna_url, mlflow_url)}
    swapped = [*SEARCH, "--storage", mlflow_url, "--tracking-uri", optuna_url]
    (done,) = run_cli_batch([(project, swapped)])
    assert done.returncode == 2, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.strip()]
    assert "did you swap --storage and --tracking-uri" in line
    assert {url: _tables(url) for url in tables} == tables  # no MLflow table inside Optuna's database


@pytest.mark.slow
def test_a_creation_cut_short_after_a_migration_that_writes_a_row_is_rebuilt(project: Path) -> None:
    # 1b5f0d9ad7c1 writes MLflow's 'default' workspace: the file holds a row, yet no record of a user
    _creation_cut_short_after(project / "mlflow.db", "1b5f0d9ad7c1")
    (done,) = run_cli_batch([(project, [*SEARCH, *_uris("optuna.db", "mlflow.db")])])
    assert done.returncode == 0, done.stderr
    assert "migrated" not in done.stdout + done.stderr and not list(project.glob("*.bak"))
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "faulty"]
    assert len(client.search_runs([experiment.experiment_id])) == 2
