"""A store URL, parsed once where it enters (a flag, an environment variable, a default): which
backend it names, its driver, its sqlite file, and the text that may be shown (password redacted).
No module outside `stores/` parses a URL; they ask a `StoreURL`.
"""

from __future__ import annotations

import functools
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from exptrack.errors import UserError, redact

DEFAULT_STORAGE = "sqlite:///optuna.db"
DEFAULT_TRACKING = "sqlite:///mlflow.db"
POSTGRES_DRIVER = "postgresql+psycopg"  # psycopg 3, from the `postgres` extra
DATABASE_SCHEMES = ("postgresql", "postgres", "mysql", "mariadb", "mssql", "oracle")
SERVER_SCHEMES = ("http", "https")  # an MLflow tracking server, which creates its own store


@dataclass(frozen=True)
class StoreURL:
    """One store URL. `text` is what drivers get (it may hold a password); `str()` is safe to show."""

    text: str

    def __str__(self) -> str:
        return redact(self.text)

    @property
    def scheme(self) -> str:
        """`sqlite`, `postgresql`, `http`, ... (the driver after `+` dropped)."""
        return self.text.partition(":")[0].split("+")[0].lower()

    @property
    def has_scheme(self) -> bool:
        """`scheme://...` rather than a bare path."""
        return "://" in self.text

    @property
    def driver(self) -> str | None:
        head = self.text.partition("://")[0]
        return head.partition("+")[2] or None

    @property
    def backend(self) -> str:
        """'sqlite', 'postgresql', 'server' (an MLflow tracking server), 'database' (a database
        server with no backend module here) or 'other' (a file store, databricks, ...)."""
        if self.scheme == "sqlite":
            return "sqlite"
        if self.scheme in ("postgresql", "postgres"):
            return "postgresql"
        if self.scheme in SERVER_SCHEMES:
            return "server"
        return "database" if self.scheme in DATABASE_SCHEMES else "other"

    @property
    def path(self) -> Path | None:
        """The file a `sqlite:///` URL names, relative to the working directory (None for other
        URLs and in-memory databases)."""
        if not self.text.startswith("sqlite:///"):
            return None
        path = self.text.removeprefix("sqlite:///").split("?")[0]
        return None if path in ("", ":memory:") else Path(path)

    @property
    def is_database(self) -> bool:
        """A sqlite file or a database server (not an MLflow server, a file store or memory)."""
        return self.path is not None if self.backend == "sqlite" else self.backend in ("postgresql", "database")

    def missing_file(self) -> Path | None:
        """The sqlite file this URL names, when it does not exist (opening it would create it empty)."""
        return self.path if self.path is not None and not self.path.exists() else None

    def absolute(self) -> StoreURL:
        """A sqlite URL with its file made absolute (`sqlite:///optuna.db` -> `sqlite:////work/optuna.db`),
        for records that must name the same file whichever directory reads them."""
        text = self.text
        if not text.startswith("sqlite:///") or text.startswith("sqlite:////") or ":memory:" in text:
            return self
        path, sep, query = text.removeprefix("sqlite:///").partition("?")
        return StoreURL(f"sqlite:///{Path(path).resolve()}{sep}{query}")

    def server_credentials(self) -> tuple[StoreURL, tuple[str, str] | None]:
        """`http://user:pw@host` -> (`http://host`, (user, password)). MLflow prints its client's URI
        ("View run ... at: URL") and puts it in errors, so the URI it gets must hold no password;
        MLflow sends the pair as basic auth from its own variables instead."""
        parts = urllib.parse.urlsplit(self.text)
        if self.backend != "server" or "@" not in parts.netloc:
            return self, None
        userinfo, _, host = parts.netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        bare = urllib.parse.urlunsplit(parts._replace(netloc=host))
        return StoreURL(bare), (urllib.parse.unquote(user), urllib.parse.unquote(password))

    def server_base(self) -> str | None:
        """The address of an MLflow server's UI (no user:password, no trailing slash), so links can
        be written down; None for a database or file store."""
        parts = urllib.parse.urlsplit(self.text)
        if self.backend != "server" or not parts.hostname:
            return None
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))

    def check_database_url(self, what: str, flag: str, example: str) -> None:
        """A URL SQLAlchemy can parse, with a dialect it knows; else one line naming the fix."""
        from sqlalchemy.engine import make_url

        try:
            make_url(self.text).get_dialect()
        except Exception as exc:
            raise UserError(
                f"{what} {self} is not a valid database URL ({type(exc).__name__}); fix {flag}, e.g. {example}"
            ) from exc

    def with_postgres_driver(self) -> StoreURL:
        """`postgresql://` (SQLAlchemy's default driver is psycopg2) -> `postgresql+psycopg://`; a
        PostgreSQL URL without psycopg installed is a one-line error naming the extra."""
        head, sep, rest = self.text.partition("://")
        if not sep or self.backend != "postgresql":
            return self
        if head in ("postgresql", "postgres"):
            head = POSTGRES_DRIVER
        if head == POSTGRES_DRIVER and not _has_psycopg():
            raise UserError(
                f"{self} needs the PostgreSQL driver psycopg 3, which is not installed; pip install -e '.[postgres]'"
            )
        return StoreURL(f"{head}://{rest}")


@functools.cache
def parse(text: str) -> StoreURL:
    return StoreURL(text)


def beside_store(storage_url: str, *names: str) -> Path:
    """A folder of a study's own files (its journal, its checkpoints): beside its sqlite Optuna
    store, else in the working directory (a database server's study: the folder the command runs
    in, the same one its re-run uses)."""
    path = parse(storage_url).path
    base = path.resolve().parent if path is not None else Path.cwd()
    return base.joinpath(*names)


def resolve_storage(flag: str | None) -> str:
    """The Optuna storage: flag, then OPTUNA_STORAGE, then a sqlite file in the working directory;
    a PostgreSQL URL gets the psycopg 3 driver of the `postgres` extra."""
    return parse(flag or os.environ.get("OPTUNA_STORAGE") or DEFAULT_STORAGE).with_postgres_driver().text


def resolve_tracking(flag: str | None) -> str:
    """The MLflow tracking URI: flag, then MLFLOW_TRACKING_URI, then a sqlite file in the working
    directory; a PostgreSQL URI gets the psycopg 3 driver. A tracking server's `user:password@`
    goes to MLflow's own MLFLOW_TRACKING_USERNAME/PASSWORD (MLflow sends them as basic auth, and
    worker processes inherit them), so that no URI exptrack passes on or MLflow prints holds it."""
    bare, credentials = parse(flag or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING).server_credentials()
    if credentials is not None:
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = credentials
    return bare.with_postgres_driver().text


def _has_psycopg() -> bool:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False
    return True
