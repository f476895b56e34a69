"""One throw-away PostgreSQL server per test session, and one `mlflow server` backed by it that
serves artifacts over HTTP; tests make their own databases on it. Skipped, with the reason, only
where the PostgreSQL binaries or root are missing (scripts/test.sh installs them on CI)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.pgserver import MlflowPgServer, PostgresServer


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    from tests.pgserver import PostgresServer, missing_reason  # here: conftest imports this module

    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tracking_server(
    postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowPgServer]:
    from tests.pgserver import MlflowPgServer

    backend = postgres.create_database("mlflow_server")
    server = MlflowPgServer(backend, tmp_path_factory.mktemp("mlflow-server") / "artifacts")
    server.start()
    try:
        yield server
    finally:
        server.stop()
