"""A file lock per Optuna storage, for the steps several processes on one machine must not do at
once: creating and migrating the stores, and checking the trial budget before asking a trial."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from filelock import FileLock

LOCK_TIMEOUT_S = (
    300  # creating both stores from scratch takes a few seconds; waiting minutes means a stuck peer
)


def storage_lock(storage_url: str) -> FileLock:
    """The lock shared by every process using `storage_url` (same URL, same lock file)."""
    if storage_url.startswith("sqlite:///"):
        path = Path(storage_url.removeprefix("sqlite:///")).resolve()
        key = str(path)
    else:
        key = storage_url
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return FileLock(Path(tempfile.gettempdir()) / f"exptrack-{digest}.lock", timeout=LOCK_TIMEOUT_S)
