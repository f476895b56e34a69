"""A real PostgreSQL server for tests: a fresh cluster in a temporary directory, run as the
`postgres` user on a free loopback port, with password authentication for TCP connections."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.faultkit import free_port


def binaries() -> Path | None:
    """Debian keeps initdb and pg_ctl in /usr/lib/postgresql/NN/bin, off the PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """`start()`, `create_database(...)`, `stop()` (which also removes the cluster)."""

    def __init__(self) -> None:
        found = binaries()
        if found is None or shutil.which("runuser") is None or os.geteuid() != 0:
            pytest.skip("needs Debian's postgresql package and root (scripts/test.sh installs it)")
        self.bin, self.port = found, free_port()
        # not under pytest's tmp_path: its parents are private to root, and the server runs as postgres
        self.root = Path(tempfile.mkdtemp(prefix="exptrack-pg-"))
        self.data = self.root / "data"

    def _as_postgres(self, *command: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *command], check=True, capture_output=True, timeout=120
        )

    def start(self) -> None:
        shutil.chown(self.root, "postgres")
        self._as_postgres(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--no-sync",
            "--auth-local=trust", "--auth-host=scram-sha-256",
        )  # fmt: skip
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-w",
            "-o",
            options,
            "start",
        )

    def create_database(self, name: str, user: str, password: str) -> str:
        """A database owned by `user`; its URL (password included) for SQLAlchemy and MLflow."""
        psql = [str(self.bin / "psql"), "-h", str(self.root), "-p", str(self.port), "-U", "postgres", "-q"]
        self._as_postgres(*psql, "-c", f"CREATE USER {user} PASSWORD '{password}'")
        self._as_postgres(*psql, "-c", f"CREATE DATABASE {name} OWNER {user}")
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
