"""Creating the MLflow tracking store before any client touches it: once, whole, whatever else runs,
and only where the database is provably MLflow's (`stores.schema`): never over another store.

MLflow creates a database store on first use, in ~80 schema migrations (~5 s on sqlite) with no
lock across processes: a kill in those seconds left a half-migrated file that failed every later
start, and two processes creating one store at once interleaved their migrations. Here a sqlite
store is built under a temporary name and linked into place (`stores.sqlite.create_once`);
one whose creation a kill cut short (MLflow's tables, not one row) is rebuilt; one of an older MLflow
is migrated as `mlflow db upgrade` does, after a copy of the file is kept beside it. A PostgreSQL
store is created under the database's advisory lock. An MLflow server creates its own store.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exptrack.errors import UserError, redact
from exptrack.stores import backends, faults, schema, sqlite
from exptrack.stores.url import parse


def ensure_store(uri: str, say: Callable[[str], None] = print) -> None:
    """Create the database store at `uri` if it is new; rebuild a sqlite one a kill left half-made,
    migrate an older one. A database that is not an MLflow store is a UserError, left untouched; a
    disk that fills meanwhile ends in one line (not MLflow's migration SQL and its traceback)."""
    try:
        _ensure_store(uri, say)
    except UserError:
        raise
    except Exception as exc:
        faults.raise_at_once(exc, uri, "MLflow tracking store")
        raise


def _ensure_store(uri: str, say: Callable[[str], None]) -> None:
    path = parse(uri).path
    if path is not None:
        if sqlite.create_once(path, _build):
            return
        with backends.store_lock(uri):
            state = mlflow_state(uri)
            if state in ("new", "unfinished"):  # an empty file, or a creation cut short: no row to lose
                sqlite.rebuild(path, _build)
            elif state == "older":
                _migrate_sqlite(uri, path, say)
    elif parse(uri).backend == "postgresql":
        with backends.store_lock(uri):
            if mlflow_state(uri) == "older":
                # a shared database's other clients may still be of the older MLflow: its owner decides
                raise UserError(
                    f"MLflow store {redact(uri)} has an older MLflow's schema; back the database up, "
                    "then run: mlflow db upgrade URI (MLFLOW_TRACKING_URI's value)"
                )
            _create(uri)  # MLflow creates or finishes the tables; its engine stays cached for the client


def _migrate_sqlite(uri: str, path: Path, say: Callable[[str], None]) -> None:
    """MLflow's own upgrade (`mlflow db upgrade`), after the copy MLflow tells its users to take."""
    from mlflow.store.db.utils import _upgrade_db
    from sqlalchemy import create_engine

    before = schema.read_contents(uri).revision
    backup = path.with_name(f"{path.name}.{before}.bak")
    shutil.copy2(path, backup)
    engine = create_engine(uri)
    try:
        _upgrade_db(engine)
    finally:
        engine.dispose()
    say(f"MLflow store {path} migrated from schema {before} to {mlflow_head()}; the old file is {backup}")


def _build(url: str) -> None:
    """A new store, from a copy of this MLflow's migrated schema when one can be kept (see
    `migrated_schema`): MLflow opens the copy as any store whose tables exist, adding its Default
    experiment dated now, so the store is the one its migrations would have made."""
    schema_copy, path = migrated_schema(), parse(url).path
    if schema_copy is not None and path is not None:  # `path` is None only for a server's URL
        shutil.copyfile(schema_copy, path)
    _create(url).engine.dispose()  # close the file before it is linked into place


def migrated_schema() -> Path | None:
    """This MLflow's schema, migrated by MLflow's own `_initialize_tables` into an empty sqlite file
    once per user and MLflow release, kept in the user's cache (`cache_dir`). MLflow runs ~80
    migrations on every new store: seconds of each first command in a new project (8.9 s against
    0.38 s for copy and open on 2 loaded cores, benchmarks/store_creation.py). None where the cache cannot
    be written or read (a read-only home, a full disk): MLflow then migrates the new store itself."""
    import mlflow

    path = cache_dir() / f"mlflow-{mlflow.__version__}-{mlflow_head()}.db"
    try:
        if not path.exists():
            sqlite.create_once(path, _migrate)
        elif not _holds_migrated_schema(path):  # damaged or cut short: replaced by a rename, no lock
            sqlite.rebuild(path, _migrate)  # needed (a reader copies the old file or the new one)
        return path if _holds_migrated_schema(path) else None
    except Exception:  # any failure of a cache is a slower start, never an error
        return None


def cache_dir() -> Path:
    """Where exptrack keeps what it can rebuild: $EXPTRACK_CACHE_DIR, else the XDG cache."""
    explicit = os.environ.get("EXPTRACK_CACHE_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "exptrack"


def _holds_migrated_schema(path: Path) -> bool:
    try:
        contents = schema.read_contents(f"sqlite:///{path}")
    except Exception:  # damaged or not a database: rebuilt
        return False
    unfilled = not contents.filled - MIGRATION_SEEDS
    return contents.revision == mlflow_head() and _mlflow_built_it(contents) and unfilled


def _migrate(url: str) -> None:
    from mlflow.store.db.utils import _initialize_tables
    from sqlalchemy import create_engine

    Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()


def _create(url: str):  # type: ignore[no-untyped-def]
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    # the artifact root MlflowClient gives the store (./mlruns), so the Default experiment matches
    return SqlAlchemyStore(url, DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)


# Tables MLflow's own migrations write a row into (1b5f0d9ad7c1 adds the 'default' workspace): a
# row there is not a user's record, so a creation killed after that migration is still unfinished.
MIGRATION_SEEDS = frozenset({"workspaces"})

# --- what the database at a tracking URI is ------------------------------------------------


def mlflow_state(url: str, flag: str = "--tracking-uri") -> str:
    """The state of the MLflow store at `url`: 'new' (nothing there yet), 'current' (at this
    MLflow's schema), 'unfinished' (a creation cut short: MLflow's tables, not one row), or
    'older' (an MLflow store of an earlier release, to migrate). Anything else is a UserError
    naming what the database holds, so nothing is ever written into it."""
    contents = schema.read(url, "MLflow tracking store", flag)
    kind = contents.kind
    if kind == "empty":
        return "new"
    if kind == "optuna":
        raise UserError(
            f"{redact(url)} holds an Optuna study, not an MLflow store: did you swap --storage and "
            f"--tracking-uri? Fix {flag} (e.g. sqlite:///mlflow.db)"
        )
    if kind == "other":
        raise UserError(schema.foreign(url, contents, "an MLflow store", flag))
    return _mlflow_revision_state(url, contents, flag)


def _mlflow_revision_state(url: str, contents: schema.Contents, flag: str) -> str:
    if contents.revision == mlflow_head():
        return "current"
    if not contents.filled - MIGRATION_SEEDS and _mlflow_built_it(contents):
        return "unfinished"  # MLflow writes its Default experiment after its last migration
    if contents.revision is None:
        raise UserError(schema.foreign(url, contents, "an MLflow store (it has no schema revision)", flag))
    if contents.revision in mlflow_revisions():
        return "older"
    raise UserError(
        f"{redact(url)} has schema revision {contents.revision}, which is not one of this MLflow's: a "
        f"newer MLflow made it (pip install -U mlflow) or it is another application's database (fix {flag})"
    )


def _mlflow_built_it(contents: schema.Contents) -> bool:
    """Stamped with one of MLflow's revisions, or (killed before the first stamp) MLflow's tables
    only, with the copies alembic makes while it alters a sqlite table."""
    if contents.revision is not None:
        return contents.revision in mlflow_revisions()
    return all(t in mlflow_tables() or t.startswith("_alembic_tmp_") for t in contents.tables)


@functools.cache
def mlflow_tables() -> frozenset[str]:
    """Every table MLflow's migrations create (its tracking, registry and later models)."""
    import importlib

    from mlflow.store.db.base_sql_model import Base

    for models in ("tracking", "model_registry", "workspace"):  # importing them registers their tables
        importlib.import_module(f"mlflow.store.{models}.dbmodels.models")
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase

    return frozenset(Base.metadata.tables) | frozenset(InitialBase.metadata.tables)


@functools.cache
def mlflow_revisions() -> frozenset[str]:
    """Every schema revision MLflow's migration scripts know."""
    return frozenset(_migrations()["revisions"])


@functools.cache
def mlflow_head() -> str:
    """The schema revision this MLflow creates and expects (its migrations' one head)."""
    return str(_migrations()["head"])


def _migrations() -> dict[str, Any]:
    """MLflow's head revision and all its revisions, kept in the cache (`cache_dir`) under a key of
    MLflow's version and its migrations folder (each script's name, size and time), so a changed
    install is read afresh. Not MLflow's `_get_latest_schema_revision` on every command: it imports
    mlflow and alembic loads each of its ~70 migration scripts, 0.2-2.7 s of each `exp` command
    (2 cores, quiet to loaded), for a constant of the installed MLflow; a cache hit reads one file."""
    folder = _migrations_folder()
    path = cache_dir() / f"mlflow-{importlib.metadata.version('mlflow')}-{_folder_key(folder)}.json"
    try:
        kept = json.loads(path.read_text())
        if isinstance(kept.get("head"), str) and isinstance(kept.get("revisions"), list):
            return dict(kept)
    except (OSError, ValueError, AttributeError):  # absent, damaged or unreadable: read afresh
        pass
    found = _read_migrations()
    with contextlib.suppress(OSError):  # a cache that cannot be written only costs time
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(found))
        temporary.replace(path)  # whole or absent for a reader beside it
    return found


def _migrations_folder() -> Path:
    """mlflow/store/db_migrations/versions, found without importing mlflow (`find_spec`)."""
    spec = importlib.util.find_spec("mlflow")
    roots = list(spec.submodule_search_locations or []) if spec else []
    return Path(roots[0] if roots else ".") / "store" / "db_migrations" / "versions"


def _folder_key(folder: Path) -> str:
    """Each migration script's name, size and time: a file added, removed or edited changes it
    (not __pycache__, which changes when the scripts are first loaded)."""
    try:
        scripts = [(e.name, e.stat()) for e in os.scandir(folder) if e.name.endswith(".py")]
        entries = sorted((name, st.st_size, st.st_mtime_ns) for name, st in scripts)
    except OSError:
        entries = []  # no folder: the key of an empty one, and MLflow's own read decides
    return hashlib.sha256(repr(entries).encode()).hexdigest()[:16]


def _read_migrations() -> dict[str, Any]:
    """MLflow's own answer: its head (`_get_latest_schema_revision`) and alembic's walk of its scripts."""
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config, _get_latest_schema_revision

    script = ScriptDirectory.from_config(_get_alembic_config(db_url=""))
    revisions = sorted(r.revision for r in script.walk_revisions())
    return {"head": str(_get_latest_schema_revision()), "revisions": revisions}


def unreadable_mlflow(url: str, flag: str = "--tracking-uri") -> str | None:
    """For commands that only read: None when the MLflow store at `url` can be read as it is, else
    why not: 'new' (nothing there yet), a creation cut short, or an older schema (reading never
    migrates). A database that is not an MLflow store is a UserError."""
    state = mlflow_state(url, flag)
    if state == "older":
        return "it has an older MLflow's schema; exp search migrates it, keeping a copy, or run mlflow db upgrade"
    if state == "unfinished":
        return "its creation was cut short; the next exp search rebuilds it"
    return None if state == "current" else "new"
