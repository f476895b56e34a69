"""The tracking journal: every record of a trial (its run's opening with tags and params, setup,
per-epoch metrics with steps and times, traced files, its close with status and end time, and an
Optuna tell the store could not take) appended to a local file beside the study's files before it
is sent, so that an outage of either store never drops one. The write reaches the kernel at once (a
killed process keeps it); a background thread fsyncs it moments later, one fsync for every record
written meanwhile, so the trial's thread never waits on the disk (an fsync took 5-15 ms on the 2
shared cores here, 7 of them a 3-epoch trial: 2.5 % of a 3-second trial, benchmarks/README.md). One file per worker process,
held under an exclusive `flock` while it lives: a later command on this host (or any host sharing
the folder) takes over the files whose writer is gone and writes what is pending (`tracking.restore`,
`search.sync`). A trial's records are dropped (`done`) once both stores hold them.

Layout: `<folder of the sqlite Optuna store, else the working directory>/exptrack-journal/<study>/
<host>-<pid>.jsonl`, one JSON object a line: {"k": kind, "n": trial number, ...}.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from exptrack.stores.faults import RESUME
from exptrack.stores.locks import StoreFull
from exptrack.stores.url import beside_store

FOLDER = "exptrack-journal"
# Compaction rewrites the file with only the trials still pending once it grows past this: a
# record is ~200 B (an epoch's 6 metrics), so 4 MiB is ~20k records, far above a live study's few
# pending trials; the file stays bounded by what has not been written yet.
COMPACT_AT_BYTES = 4 << 20
MLFLOW_DONE, OPTUNA_DONE = "done", "told"  # the kinds that settle a trial's records in one store


def folder_for(storage_url: str, study_name: str) -> Path:
    """Where a study's journals live (`stores.url.beside_store`)."""
    return beside_store(storage_url, FOLDER, study_name)


def now_ms() -> int:
    return int(time.time() * 1000)


class Journal:
    """This process's journal of one study: `append` writes and fsyncs one record (thread-safe);
    `settled(n)` tells whether trial n's records reached both stores."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.path = folder / f"{os.uname().nodename}-{os.getpid()}.jsonl"
        self.lock = threading.Lock()
        self.file = _open_locked(self.path)
        self.open_trials: dict[int, set[str]] = {}  # trial -> stores still owed ("mlflow", "optuna")
        self._dirty, self._closing = threading.Event(), False
        self._syncer = threading.Thread(target=self._sync_loop, name="exptrack-journal-fsync", daemon=True)
        self._syncer.start()

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record: once this returns, a killed process keeps it; the background fsync
        makes it survive a power cut moments later (`sync` waits for that)."""
        line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
        with self.lock:
            try:
                self.file.write(line)
            except OSError as exc:
                raise _fault(exc, self.folder) from exc
            self._track(record)
            if record["k"] in (MLFLOW_DONE, OPTUNA_DONE) and self.file.tell() > COMPACT_AT_BYTES:
                self._compact()
        self._dirty.set()

    def sync(self) -> None:
        """fsync what was written so far, without holding appends back meanwhile (a duplicate of
        the descriptor: a compaction may replace the file during the fsync)."""
        with self.lock:
            if self.file.closed:
                return
            fd = os.dup(self.file.fileno())
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _sync_loop(self) -> None:
        """The background fsync: one for every burst of records (group commit). Its failure (a
        full disk) is the next append's to say, in one line."""
        while not self._closing:
            self._dirty.wait()
            self._dirty.clear()
            with contextlib.suppress(OSError):
                self.sync()

    def _track(self, record: Mapping[str, Any]) -> None:
        owed = self.open_trials.setdefault(int(record["n"]), set())
        kind = record["k"]
        if kind == MLFLOW_DONE:
            owed.discard("mlflow")
        elif kind == OPTUNA_DONE:
            owed.discard("optuna")
        elif kind == "tell":
            owed.add("optuna")
        else:
            owed.add("mlflow")
        if not owed:
            del self.open_trials[int(record["n"])]

    def pending(self, store: str | None = None) -> list[int]:
        """Trials whose records have not all reached their store ('mlflow', 'optuna'; None: either)."""
        with self.lock:
            return sorted(n for n, owed in self.open_trials.items() if store is None or store in owed)

    def records(self) -> list[dict[str, Any]]:
        with self.lock:
            return read(self.path)

    def files_dir(self, number: int) -> Path:
        """Where a trial's traced files are kept until its run holds them."""
        return self.folder / f"{self.path.stem}.files" / str(number)

    def _compact(self) -> None:
        """Rewrite the file with the pending trials' records only (under `self.lock`)."""
        keep = [r for r in read(self.path) if int(r["n"]) in self.open_trials]
        temporary = self.path.with_suffix(".compact")
        new = _open_locked(temporary)
        new.write(b"".join((json.dumps(r, separators=(",", ":")) + "\n").encode() for r in keep))
        new.flush()
        os.fsync(new.fileno())
        os.replace(temporary, self.path)
        self.file.close()
        self.file = new

    def close(self) -> None:
        """Remove the file when nothing is pending (else leave it fsynced for a later command)."""
        self._closing = True
        self._dirty.set()
        self._syncer.join()
        self.sync()
        with self.lock:
            if not self.open_trials:
                self.path.unlink(missing_ok=True)
                shutil.rmtree(self.folder / f"{self.path.stem}.files", ignore_errors=True)
            self.file.close()
        remove_empty(self.folder)


def remove_empty(folder: Path) -> None:
    """No journal left: no folder either (the study's, then exptrack-journal itself)."""
    for empty in (folder, folder.parent):
        with contextlib.suppress(OSError):
            empty.rmdir()


def _fault(exc: OSError, folder: Path) -> Exception:
    """A full disk as the stores say it (one line, exit 2: `StoreFull`); any other error as it is."""
    if exc.errno != errno.ENOSPC:
        return exc
    return StoreFull(
        f"tracking journal {folder}: the disk is full ({exc.strerror}); not waited out: free space "
        f"on the disk of {folder} and {RESUME}"
    )


def _open_locked(path: Path) -> IO[bytes]:
    """Open `path` for appending under an exclusive flock held while this process lives; unbuffered,
    so a write the disk refuses leaves nothing behind to fail again at close."""
    file = open(path, "ab", buffering=0)  # noqa: SIM115 - the journal keeps it open for the process's life
    fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    return file


def read(path: Path) -> list[dict[str, Any]]:
    """A journal's records; a last line cut short by a crash is skipped."""
    found = []
    with contextlib.suppress(FileNotFoundError), open(path, "rb") as file:
        for line in file:
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
    return found


def by_trial(records: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Each trial's records, in the order they were written, without settled ones."""
    grouped: dict[int, list[dict[str, Any]]] = {}
    for record in records:
        grouped.setdefault(int(record["n"]), []).append(record)
    return grouped


def owed(records: list[dict[str, Any]]) -> set[str]:
    """The stores one trial's records still owe: 'mlflow', 'optuna' or both."""
    left: set[str] = set()
    for record in records:
        kind = record["k"]
        if kind == MLFLOW_DONE:
            left.discard("mlflow")
        elif kind == OPTUNA_DONE:
            left.discard("optuna")
        else:
            left.add("optuna" if kind == "tell" else "mlflow")
    return left


@contextlib.contextmanager
def orphans(folder: Path, mine: Journal | None = None) -> Iterator[list[Path]]:
    """The journal files in `folder` whose writer is gone (their flock is free), held locked for
    the block, so that two commands never write one orphan's records at once. `mine` is left out."""
    held: list[tuple[Path, IO[bytes]]] = []
    try:
        for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
            if mine is not None and path == mine.path:
                continue
            file = open(path, "ab")  # noqa: SIM115 - closed in the finally below
            try:
                fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # its writer lives
                file.close()
                continue
            held.append((path, file))
        yield [path for path, _ in held]
    finally:
        for _, handle in held:
            handle.close()


def pending_elsewhere(folder: Path, mine: Journal | None = None) -> dict[int, set[str]]:
    """Trial -> stores owed, over every journal in `folder` but `mine` and those another live
    process still writes: its trials in flight are its own to finish and report (another search of
    the same study name on another storage in this folder, another worker still training)."""
    owing: dict[int, set[str]] = {}
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        if (mine is not None and path == mine.path) or _written_by_another_live_process(path):
            continue
        for number, records in by_trial(read(path)).items():
            left = owed(records)
            if left:
                owing.setdefault(number, set()).update(left)
    return owing


def _written_by_another_live_process(path: Path) -> bool:
    """Another process holds the journal's flock (this process's own file is never skipped)."""
    if path.name == f"{os.uname().nodename}-{os.getpid()}.jsonl":
        return False
    try:
        with open(path, "rb") as file:
            fcntl.flock(file.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except FileNotFoundError:  # written and removed meanwhile
        return False
    return False


def append_to(path: Path, record: Mapping[str, Any]) -> None:
    """One record onto an orphan journal (held locked by `orphans`), fsynced."""
    with open(path, "ab") as file:
        file.write((json.dumps(record, separators=(",", ":")) + "\n").encode())
        file.flush()
        os.fsync(file.fileno())


def retire(path: Path, settled: set[int]) -> None:
    """Drop the settled trials of an orphan journal (held locked by `orphans`); the file and its
    kept files go when nothing is left."""
    keep = [r for r in read(path) if int(r["n"]) not in settled]
    files = path.with_suffix(".files")
    if not keep:
        path.unlink(missing_ok=True)
        shutil.rmtree(files, ignore_errors=True)
        remove_empty(path.parent)
        return
    temporary = path.with_suffix(".compact")
    with open(temporary, "wb") as file:
        file.write(b"".join((json.dumps(r, separators=(",", ":")) + "\n").encode() for r in keep))
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    for number in settled:
        shutil.rmtree(files / str(number), ignore_errors=True)
