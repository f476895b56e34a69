"""A throw-away PostgreSQL server for the tests: Debian's binaries run as the `postgres` user
(`initdb` refuses root) on a free loopback port, data in a temporary directory; and other machines
simulated honestly: each "host" runs its processes under `unshare --uts` with a hostname and a
working and temporary directory of its own, so no file lock or pid check can reach across."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.faultkit import FAULTY, SMALL, MlflowServer, free_port

PG_ROOTS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)  # Debian's layout


def missing_reason() -> str | None:
    """Why PostgreSQL tests cannot run here, or None (scripts/test.sh installs what they need)."""
    if not any((root / "initdb").exists() for root in PG_ROOTS) and not shutil.which("initdb"):
        return "PostgreSQL server binaries (initdb, pg_ctl) not found: scripts/test.sh installs Debian's postgresql"
    if os.geteuid() != 0 or not shutil.which("runuser") or not shutil.which("unshare"):
        return "needs root with runuser and unshare (to start postgres as its user and simulate hosts)"
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        return "no `postgres` system user (Debian's postgresql package creates it)"
    return None


def _binary(name: str) -> str:
    for root in PG_ROOTS:
        if (root / name).exists():
            return str(root / name)
    found = shutil.which(name)
    assert found, name
    return found


class PostgresServer:
    """`initdb` + `pg_ctl start` as the postgres user; trust authentication on 127.0.0.1 only."""

    def __init__(self, max_connections: int = 300) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="exptrack-pg-"))  # not under pytest's root-only tmp
        self.max_connections = max_connections  # benchmarks/scale.py raises it for 64 workers
        self.data = self.root / "data"
        self.port = free_port()
        shutil.chown(self.root, "postgres", "postgres")
        self.root.chmod(0o755)

    def _as_postgres(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", *command],
            cwd=self.root,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )

    def start(self) -> None:
        if not self.data.exists():
            self._as_postgres(
                _binary("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"
            )
            # the superuser needs no password; users a test creates must give theirs (scram)
            (self.data / "pg_hba.conf").write_text(
                "local all all trust\n"
                "host all postgres 127.0.0.1/32 trust\n"
                "host all all 127.0.0.1/32 scram-sha-256\n"
            )
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c synchronous_commit=off -c full_page_writes=off -c max_connections={self.max_connections}"
        )
        log = str(self.root / "server.log")
        self._as_postgres(_binary("pg_ctl"), "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def restart(self) -> None:
        """A fast restart: every connection is cut, the data stays."""
        log = str(self.root / "server.log")  # the server must not inherit our output pipes
        self._as_postgres(_binary("pg_ctl"), "-D", str(self.data), "-m", "fast", "-l", log, "-w", "restart")

    def halt(self) -> None:
        """Stop the server, keeping its data (a database gone down); `start` brings it back."""
        self._as_postgres(_binary("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._as_postgres(_binary("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self, name: str, user: str | None = None, password: str | None = None) -> str:
        """A new empty database; its URL for exptrack (psycopg 3). With `user` and `password`, owned
        by that user, who must log in with the password (which the URL then holds)."""
        if user is None:
            self._as_postgres(
                _binary("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name
            )
            return self.url(name)
        psql = [_binary("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-q"]
        self._as_postgres(*psql, "-c", f"CREATE USER {user} PASSWORD '{password}'")
        self._as_postgres(*psql, "-c", f"CREATE DATABASE {name} OWNER {user}")
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{name}"

    def postmaster_pid(self) -> int:
        """The server's main process (its backends are its children)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def url(self, name: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def connections(self, database: str) -> int:
        """Open connections to `database` right now."""
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres") as db:
            row = db.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,)
            ).fetchone()
        return int(row[0]) if row else 0


class MlflowPgServer(MlflowServer):
    """`mlflow server` over a PostgreSQL database, serving artifacts over HTTP from a folder: what
    workers on other machines write to (docs/scaling.md's tracking-server recipe, exactly)."""

    def __init__(self, backend: str, artifacts: Path) -> None:
        super().__init__(artifacts.parent, backend, serve_artifacts=True)
        self.artifacts = artifacts  # where the server keeps what clients send it


class Host:
    """A simulated machine: its own hostname (`unshare --uts`), working directory and $TMPDIR."""

    def __init__(self, name: str, root: Path) -> None:
        self.name, self.cwd = name, root / name
        (self.cwd / "tmp").mkdir(parents=True)

    def exp(self, *args: str, faults: str = "", env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """`exp ARGS` on this host, as a background process (its pid is the exptrack process)."""
        from tests.conftest import exp_env

        environment = {**exp_env(self.cwd), **(env or {})}
        environment.update(TMPDIR=str(self.cwd / "tmp"), OMP_NUM_THREADS="1", EXPTRACK_FAULTS=faults)
        environment["EXPTRACK_GATE_DIR"] = str(self.cwd)
        command = ["unshare", "--uts", "sh", "-c", f'hostname {self.name} && exec "$@"', "sh"]
        return subprocess.Popen(
            [*command, sys.executable, "-m", "exptrack", *args],
            cwd=self.cwd,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def search(
        self, *args: str, faults: str = "", env: dict[str, str] | None = None
    ) -> subprocess.Popen[str]:
        """`exp search` of the faulty test study, tiny settings."""
        return self.exp("search", FAULTY, *SMALL, *args, faults=faults, env=env)
