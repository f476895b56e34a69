"""Finding what a search wrote: the Optuna storage URL, an existing study, the trial -> run link.

Kept light (optuna only, no torch) so `exp trials`, `exp studies` and `exp export` start fast.
"""

from __future__ import annotations

import os
from pathlib import Path

import optuna

from exptrack.errors import UserError, redact

DEFAULT_STORAGE = "sqlite:///optuna.db"
RUN_ID_ATTR = "mlflow_run_id"  # the trial's user attr holding its MLflow run id
CONFIG_ATTR = "config"  # the trial's user attr holding its full TrialConfig as a dict
FAIL_REASON_ATTR = "fail_reason"  # why a trial failed (exception, signal, dead worker)
RETRY_ATTR = "retry_of"  # on a retried trial: the number of the killed trial it repeats


def resolve_storage(url: str | None) -> str:
    """Flag, then OPTUNA_STORAGE, then a sqlite file in the working directory."""
    return url or os.environ.get("OPTUNA_STORAGE") or DEFAULT_STORAGE


def missing_sqlite_file(url: str) -> Path | None:
    """The file a `sqlite:///` URL names, when it does not exist (opening it would create it empty)."""
    if not url.startswith("sqlite:///") or url.endswith(":memory:"):
        return None
    path = Path(url.removeprefix("sqlite:///").split("?")[0])
    return None if path.exists() else path


def study_names(storage: str | None) -> list[str]:
    """Names of the studies in a storage; an unreadable or absent storage is a UserError."""
    url = resolve_storage(storage)
    missing = missing_sqlite_file(url)
    if missing:
        raise UserError(f"no Optuna storage at {missing}; run exp search here first, or pass --storage")
    try:
        return list(optuna.get_all_study_names(storage=url))
    except Exception as exc:
        raise UserError(
            f"Optuna storage {redact(url)} cannot be read ({type(exc).__name__}); fix --storage"
        ) from exc


def load_existing_study(name: str, storage: str | None) -> optuna.Study:
    """A study a search already wrote; an unknown name lists the ones that exist."""
    url = resolve_storage(storage)
    names = study_names(url)
    if name not in names:
        known = ", ".join(sorted(names)) or "none yet: run exp search first"
        raise UserError(f"no study named {name!r} in {redact(url)}; studies there: {known}")
    return optuna.load_study(study_name=name, storage=url)
