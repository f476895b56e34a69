"""One trial's records in this process's journal (`tracking.journal`), each appended before it is
sent to its store: the run's opening (tags, params, config), setup facts, per-epoch metrics with
their step and time, traced files, the close (status, figures, tags, end time), and an Optuna tell
the store could not take. Once the run is closed, `settle` marks the trial written or, when a
tracking write failed, writes what the run lacks now if the store answers (`tracking.restore`),
else leaves it pending for the next replay.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from exptrack import records as keys
from exptrack.errors import first_line
from exptrack.tracking import restore, runs
from exptrack.tracking.journal import MLFLOW_DONE, OPTUNA_DONE, Journal, now_ms
from exptrack.tracking.tracker import Tracker


class TrialLog:
    """The journal of one trial; every method is a no-op without a journal (or without tracking,
    for the MLflow records)."""

    def __init__(self, journal: Journal | None, tracker: Tracker | None, number: int) -> None:
        self.journal, self.tracker, self.number = journal, tracker, number
        self.failures_at = len(tracker.failures) if tracker else 0
        self.run_id: str | None = None
        self.opened = False

    def _append(self, kind: str, **fields: Any) -> None:
        if self.journal is not None:
            self.journal.append({"k": kind, "n": self.number, **fields})

    def _tracked(self) -> bool:
        return self.tracker is not None and self.opened

    def open(self, study: runs.OpenedRun, facts: runs.TrialFacts, run_id: str | None) -> None:
        """The run's creation (with `run_id`, None when MLflow refused it) and what follows it."""
        self.run_id, self.opened = run_id, True
        name, tags = keys.trial_run_name(facts.number), runs.trial_tags(study, facts)
        self._append(
            "open", run=run_id, exp=study.experiment_id, name=name, tags=tags,
            params=dict(facts.params), config=facts.config_yaml, start=now_ms(),
        )  # fmt: skip

    def setup(self, facts: Mapping[str, Any]) -> None:
        if self._tracked():
            self._append("setup", facts=dict(facts))

    def epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        if self._tracked():
            self._append("epoch", step=epoch, metrics=dict(metrics), ts=now_ms())

    def files(self, folder: Path, under: str) -> None:
        """Keep a traced trial's files (the temporary folder goes when training ends)."""
        if self._tracked() and self.journal is not None and any(folder.iterdir()):
            kept = self.journal.files_dir(self.number) / under
            shutil.copytree(folder, kept, dirs_exist_ok=True)
            self._append("files", dir=str(kept), under=under)

    def close(self, state: str, figures: Mapping[str, float], tags: Mapping[str, str], **texts: str) -> None:
        """The close, before the run is closed: status (from `state`), figures, tags, texts."""
        if self._tracked():
            self._append(
                "close", state=state, metrics=dict(figures), tags=dict(tags), texts=texts, end=now_ms()
            )

    def tell(
        self,
        state: str,
        values: list[float] | None,
        intermediate: Mapping[int, float],
        attrs: Mapping[str, Any],
    ) -> None:
        """An Optuna tell the store could not take: the next command that opens the study tells it."""
        self._append("tell", state=state, values=values, steps=dict(intermediate), attrs=dict(attrs))

    def settle(self, warn: Any = print) -> bool:
        """After the run's close: True when MLflow holds every record (marked done in the journal).
        A failed write is retried at once from the journal if the store answers again."""
        if self.journal is None or not self._tracked() or self.tracker is None:
            return True
        if self.run_id is not None and len(self.tracker.failures) == self.failures_at:
            self._append(MLFLOW_DONE)
            return True
        return replay(self.journal, self.tracker, [self.number], warn) == []

    def where(self) -> str:
        return str(self.journal.path) if self.journal is not None else "(no journal)"

    def told(self) -> None:
        self._append(OPTUNA_DONE)


def replay(journal: Journal, tracker: Tracker, numbers: list[int], warn: Any = print) -> list[int]:
    """Write these pending trials of this process's journal into MLflow, in order; the trials still
    pending (the store still down: tried once, never waited for)."""
    grouped: dict[int, list[dict[str, Any]]] = {}
    for record in journal.records():
        grouped.setdefault(int(record["n"]), []).append(record)
    left = []
    for number in numbers:
        trial = grouped.get(number, [])
        try:
            restore.write_trial(tracker, trial, "journal")
        except Exception as exc:  # the store is still down (or refuses): kept for the next try
            left.append(number)
            where = f"{journal.path} ({type(exc).__name__}: {first_line(exc, 200)})"
            warn_once(
                tracker,
                warn,
                f"MLflow records of trial(s) {', '.join(map(str, numbers[numbers.index(number) :]))} kept in {where}",
            )
            return left + numbers[numbers.index(number) + 1 :]  # the store is down: the rest wait too
        journal.append({"k": MLFLOW_DONE, "n": number})
    return left


def warn_once(tracker: Tracker, warn: Any, message: str) -> None:
    """Say it once per process: an outage would repeat it after every trial."""
    if not getattr(tracker, "_journal_warned", False):
        tracker._journal_warned = True  # type: ignore[attr-defined]
        warn(message)
