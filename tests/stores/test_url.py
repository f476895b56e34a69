"""A store URL is parsed once, in `exptrack.stores`: what each part means, what may be shown, and
which schemes are refused because exptrack has no lock across processes there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from exptrack.errors import UserError
from exptrack.stores import backends
from exptrack.stores.url import parse, resolve_storage, resolve_tracking
from tests.faultkit import FAULTY, SMALL, run_cli_batch


def test_a_store_url_names_its_backend_driver_file_and_shows_no_password() -> None:
    url = parse("postgresql+psycopg://alice:s3cr/t@db.example:5432/optuna")
    assert (url.backend, url.scheme, url.driver, url.path) == ("postgresql", "postgresql", "psycopg", None)
    assert "s3cr" not in str(url) and str(url).startswith("postgresql+psycopg://alice:***@")
    sqlite = parse("sqlite:///runs/optuna.db?timeout=5")
    assert (sqlite.backend, sqlite.path, sqlite.is_database) == ("sqlite", Path("runs/optuna.db"), True)
    assert parse("sqlite:///:memory:").is_database is False
    assert parse("http://mlflow:5000").backend == "server" and parse("mysql://u@h/db").backend == "database"


def test_a_relative_sqlite_url_is_made_absolute_for_records_read_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse("sqlite:///optuna.db?x=1").absolute().text == f"sqlite:///{tmp_path / 'optuna.db'}?x=1"
    assert parse("postgresql://h/db").absolute().text == "postgresql://h/db"


def test_resolving_prefers_the_flag_then_the_environment_then_a_file_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTUNA_STORAGE", "sqlite:///from-env.db")
    assert resolve_storage(None) == "sqlite:///from-env.db"
    assert resolve_storage("sqlite:///flag.db") == "sqlite:///flag.db"
    monkeypatch.delenv("OPTUNA_STORAGE")
    assert resolve_storage(None) == "sqlite:///optuna.db"
    assert resolve_storage("postgresql://h/db") == "postgresql+psycopg://h/db"


def test_a_tracking_servers_password_goes_to_mlflows_variables_not_the_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    assert resolve_tracking("https://bob:p%40ss@mlflow.example/") == "https://mlflow.example/"
    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == ("bob", "p@ss")
    assert parse("https://bob:x@mlflow.example:8443/ml/").server_base() == "https://mlflow.example:8443/ml"


def test_a_database_without_a_lock_across_processes_is_refused() -> None:
    with pytest.raises(UserError, match=r"mysql:// stores are not supported.*--trials would not be exact"):
        backends.store_lock("mysql+pymysql://u:p@127.0.0.1/optuna")


@pytest.mark.slow
def test_search_on_a_mysql_storage_ends_in_one_line_before_any_store(project: Path) -> None:
    args = ["search", FAULTY, *SMALL, "--trials", "1", "--storage", "mysql://user:secret@127.0.0.1:1/optuna"]
    (done,) = run_cli_batch([(project, args)])
    assert done.returncode == 2, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.strip()]
    assert "mysql:// stores are not supported" in line and "secret" not in line
    assert not list(project.glob("*.db"))
