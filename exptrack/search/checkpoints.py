"""Where and when a trial's checkpoint is kept (the file's format is `training.checkpoints`'): one
file per trial, `<folder of the sqlite Optuna store, else the working directory>/exptrack-checkpoints/
<study>/<trial>.pt` (beside `exptrack-journal/`), rewritten at each epoch end but the last, handed
over to the retry that resumes it, removed once no trial will resume from it.

Bounded twice: a checkpoint over `--checkpoint-mb` is not written (one line says so; 0 turns them
off), and a study's folder holds one file per running trial plus one per trial waiting to be
resumed, each removed when its trial ends (`TrialCheckpoints.discard`, and `sweep` for what a dead
process or another host's worker left).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from exptrack.search.options import CHECKPOINT_MB
from exptrack.search.ownership import awaiting_retry
from exptrack.stores.url import beside_store
from exptrack.study_store import record
from exptrack.training import checkpoints
from exptrack.training.checkpoints import Checkpoint, CheckpointUnusable

FOLDER = "exptrack-checkpoints"


def folder_for(storage_url: str, study_name: str) -> Path:
    """A study's checkpoints (`stores.url.beside_store`: a requeued rerun shares the folder)."""
    return beside_store(storage_url, FOLDER, study_name)


def path_of(folder: Path, number: int) -> Path:
    return folder / f"{number}.pt"


class TrialCheckpoints:
    """One trial's checkpoint: written at epoch ends (under the cap), taken over from the trial it
    retries, discarded when the trial is done with it."""

    def __init__(
        self,
        folder: Path,
        number: int,
        retry_of: int | None,
        config: dict[str, Any],
        cap_mb: int = CHECKPOINT_MB,
        warn: Callable[[str], None] = print,
        shield: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext,
        every_s: float = 0.0,  # seconds of training between two checkpoints (`--checkpoint-every`)
    ) -> None:
        self.folder, self.number, self.retry_of = folder, number, retry_of
        self.path = path_of(folder, number)
        self.config, self.cap_mb, self.warn, self.shield = _plain(config), cap_mb, warn, shield
        self.saved_epoch: int | None = None  # the epoch the file at `path` holds
        self.every_s, self._since = every_s, time.monotonic()  # since the trial began or last saved
        self._said = False

    def due(self) -> bool:
        """Is a checkpoint due at this epoch end (`every_s` of training since the last)?"""
        return self.cap_mb > 0 and time.monotonic() - self._since >= self.every_s

    def save(self, epoch: int, reported: list[dict[str, float]], state: dict[str, Any]) -> None:
        """Write the state after `epoch` when one is due, unless it is over the cap."""
        if not self.due():
            return
        size = checkpoints.nbytes(state)
        if self.cap_mb <= 0 or size > self.cap_mb * 2**20:
            if self.cap_mb > 0 and not self._said:
                self.warn(
                    f"trial {self.number}: its checkpoint ({size / 2**20:.0f} MB) is over --checkpoint-mb "
                    f"{self.cap_mb}: none is kept, so a killed trial restarts from epoch 1"
                )
                self._said = True
            return
        try:
            with self.shield():  # a signal during the write waits for its rename
                checkpoints.write(
                    self.path, Checkpoint(epoch, self.config, [dict(r) for r in reported], state)
                )
        except (OSError, RuntimeError) as exc:  # a full disk costs the checkpoint, never the trial
            self.warn(f"trial {self.number}: checkpoint after epoch {epoch} not written ({exc})")
            return
        self.saved_epoch, self._since = epoch, time.monotonic()

    def resume(self) -> Checkpoint | None:
        """The checkpoint of the trial this one retries, now this trial's own file (a kill before
        its first epoch end keeps it); None when there is none this config can take."""
        if self.retry_of is None or self.cap_mb <= 0:
            return None
        source = path_of(self.folder, self.retry_of)
        if not source.exists():
            return None
        try:
            found = checkpoints.read(source)
        except CheckpointUnusable as exc:
            self.warn(f"trial {self.number}: checkpoint not resumed: {exc}; training from epoch 1")
            return None
        if _plain(found.config) != self.config:
            self.warn(f"trial {self.number}: {source} holds another config; training from epoch 1")
            return None
        os.replace(source, self.path)
        self.saved_epoch = found.epoch
        return found

    def discard(self) -> None:
        """The trial is done with it (COMPLETE, PRUNED, or FAIL without a retry to resume it)."""
        self.path.unlink(missing_ok=True)
        self.saved_epoch = None
        _remove_empty(self.folder)


def sweep(study: optuna.Study, folder: Path) -> list[int]:
    """Remove the checkpoints no trial will resume from (their trial finished, or its retry did);
    the trials whose files went. A running trial's file, and one a queued retry waits for, stay."""
    if not folder.is_dir():
        return []
    keep = needed(study.get_trials(deepcopy=False))
    removed = []
    for file in folder.iterdir():
        number = _number_of(file.name)
        if number is None or number in keep:
            continue
        file.unlink(missing_ok=True)
        if file.name.endswith(".pt"):
            removed.append(number)
    _remove_empty(folder)
    return sorted(removed)


def needed(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    """Trials whose checkpoint may still be written or resumed: running or waiting ones, the ones a
    running or waiting retry repeats, and the ones a SIGTERM left to resume whose retry is not queued yet."""
    live = [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    keep = {t.number for t in live} | {record(t).retry_of_number for t in live}
    keep |= {t.number for t in awaiting_retry(trials)}
    return {n for n in keep if isinstance(n, int)}


def _number_of(name: str) -> int | None:
    """The trial of `7.pt` or of a write a kill cut short, `7.pt.tmp-1234`."""
    stem = name.split(".", 1)[0]
    return int(stem) if stem.isdigit() and name[len(stem) :].startswith(".pt") else None


def _plain(config: dict[str, Any]) -> dict[str, Any]:
    """A config as JSON values: a file's lists and tuples compare alike."""
    return json.loads(json.dumps(config, default=str))  # type: ignore[no-any-return]


def _remove_empty(folder: Path) -> None:
    """No checkpoint left: no folder either (the study's, then exptrack-checkpoints itself)."""
    for path in (folder, folder.parent):
        with contextlib.suppress(OSError):
            path.rmdir()
