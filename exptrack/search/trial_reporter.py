"""The reporter a trial hands its training function (`training.objective.Reporter`): per-epoch
metrics to MLflow and the study's one reported objective to Optuna (what the pruner judges), kept
through a store outage and told at the trial's end. Apart from `trial` so that one trial's flow
reads in one page."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna

from exptrack import records
from exptrack.search.checkpoints import TrialCheckpoints
from exptrack.stores.faults import StoreUnavailable
from exptrack.stores.optuna_storage import set_user_attrs
from exptrack.tracking.tracker import Tracker
from exptrack.tracking.trial_log import TrialLog
from exptrack.training import backbones, fit


class TrialReporter:
    """The training function's reporter for one trial (`objective.Reporter`): Optuna pruning +
    MLflow per-epoch metrics, and what the trial is told at its end (history, figures, pruned).
    Every objective that is reported per epoch must stay finite; a single one is reported to
    Optuna each epoch (its learning curve, and what the pruner judges; Optuna takes no per-epoch
    values for several). The built-in reports only its epoch metrics per epoch; a study's own
    function may report any of its objectives."""

    def __init__(
        self,
        trial: optuna.Trial,
        tracker: Tracker | None,
        run_id: str | None,
        objectives: list[str],
        epochs: int,
        log: TrialLog | None = None,
        custom: bool = False,  # the study's own function: it may report any of its objectives
        warn: Callable[[str], None] = print,
        saved: TrialCheckpoints | None = None,  # its checkpoint (None: checkpoints off)
    ) -> None:
        self.trial, self.tracker, self.run_id, self.epochs = trial, tracker, run_id, epochs
        self.saved = saved
        self.carried: list[dict[str, float]] = []  # a resumed predecessor's reports, sent with the next
        self.log = log or TrialLog(None, None, trial.number)
        self.custom = custom
        self.watched = [name for name in objectives if custom or name in records.EPOCH_METRICS]
        self.reports = len(objectives) == 1 and bool(self.watched)
        self.warn = warn
        self.trace_dir: Path | None = None
        self.history: list[dict[str, float]] = []  # one entry per report, with "epoch"
        self.figures: dict[str, float | str] = {}
        self.pruned = False  # should_prune() said so: the trial ends PRUNED
        self.train_started_at = time.time()  # fit's log_setup resets it right before its first step
        self.attrs: dict[str, Any] = {}  # user attrs the store has not taken yet
        self.kept: dict[int, float] = {}  # epoch -> value the store could not take (an outage)
        self.told_value: float | None = None  # the (first) value Optuna stored at the tell

    def log_setup(self, facts: Mapping[str, Any]) -> None:
        self.train_started_at = time.time()
        self.log.setup(facts)
        if self.tracker:
            self.tracker.log_setup(self.run_id, facts)
        # the end of the search tells a study at chance, and top values within the val split's noise
        for fact, key in (("num_classes", records.CLASSES_ATTR), ("val_samples", records.VAL_SAMPLES_ATTR)):
            if fact in facts:
                self.attrs[key] = int(facts[fact])
        if self.attrs:
            self._store(self._write_attrs)

    def _write_attrs(self) -> None:
        """The attrs not stored yet, in one transaction: stored whole, or kept whole for the tell."""
        set_user_attrs(self.trial, self.attrs)
        self.attrs.clear()

    def checkpoint_due(self) -> bool:
        """Is a checkpoint wanted at this epoch end (`--checkpoint-every` seconds since the last)?"""
        return self.saved is not None and self.saved.due()

    def checkpoint(self, epoch: int, state: Mapping[str, Any]) -> None:
        """The training function's state after `epoch` (`training.checkpoints.Store`), saved with
        what was reported so far; a retry of this trial resumes from it."""
        if self.saved is not None:
            self.saved.save(epoch, self.history, dict(state))

    def resume_state(self) -> Mapping[str, Any] | None:
        """The state a killed predecessor saved (this trial retries it), or None. Its reports are
        sent again (MLflow, Optuna's intermediate values) with the next epoch's: if the function
        starts from epoch 1 instead (it could not use the state), they are dropped."""
        if self.saved is None:
            return None
        found = self.saved.resume()
        if found is None:
            return None
        self.carried = found.reported
        self.warn(f"trial {self.trial.number} resumes trial {self.saved.retry_of} after its epoch {found.epoch}")
        return found.state

    def _send_carried(self, epoch: int) -> None:
        """Report the predecessor's epochs before `epoch`, once, and record that this trial resumed."""
        carried, self.carried = self.carried, []
        if not carried or epoch <= carried[-1]["epoch"]:
            return
        for past in carried:
            self.report(int(past["epoch"]), {k: v for k, v in past.items() if k != "epoch"})
        resumed = int(carried[-1]["epoch"])
        self.log.setup({records.RESUMED_ATTR: resumed})
        if self.tracker:
            self.tracker.log_setup(self.run_id, {records.RESUMED_ATTR: resumed})
        self.attrs[records.RESUMED_ATTR] = resumed
        self._store(self._write_attrs)

    def report(self, epoch: int, metrics: Mapping[str, float]) -> None:
        if self.carried:
            self._send_carried(epoch)
        metrics = {str(k): float(v) for k, v in metrics.items()}  # a 0-d tensor is a number too
        self.log.epoch(epoch, metrics)
        if self.tracker:
            self.tracker.log_epoch(self.run_id, epoch, metrics)
        for name in self.watched:
            if name in metrics and not math.isfinite(metrics[name]):
                raise fit.NonFiniteLossError(f"{name} is {metrics[name]} at epoch {epoch}")
        self.history.append({"epoch": epoch, **metrics})
        if self.reports and self.watched[0] in metrics:
            self.kept[epoch] = metrics[self.watched[0]]
            self._store(self._report_kept)

    def should_prune(self) -> bool:
        # A trial whose training is complete is never pruned: after its last epoch there is
        # nothing left to save, and its value is as final as any complete trial's.
        if not self.reports or not self.history or self.history[-1]["epoch"] >= self.epochs:
            return False
        self.pruned = self.pruned or bool(
            self._store(lambda: self._report_kept() and self.trial.should_prune())
        )
        return self.pruned

    def _report_kept(self) -> bool:
        for step in sorted(self.kept):
            self.trial.report(self.kept[step], step)
            del self.kept[step]
        return True

    def _store(self, write: Callable[[], Any]) -> Any:
        """An Optuna write during training; the store down past its wait (StoreUnavailable) keeps
        what it would have written for the tell, and training goes on: its result is worth more
        than the epoch's report (never pruned then: the pruner could not be asked)."""
        try:
            return write()
        except StoreUnavailable:
            return False

    def flush(self) -> None:
        """What training could not store, before the tell (raises StoreUnavailable if still down)."""
        if self.attrs:
            self._write_attrs()
        self._report_kept()

    def log_figure(self, name: str, value: float | str) -> None:
        self.figures[str(name)] = value if isinstance(value, str) else float(value)

    score_test = False  # a search's trial never scores the held-out test split

    def log_model(self, model: Any, example: Any = None) -> None:
        """A search trial keeps no model (`exp train` of its exported config logs one): the
        built-in's is handed back for the next trial to restore in place (`backbones.recycle`);
        a study's own function may still hold the model it passes, so its own is left alone."""
        if not self.custom:
            backbones.recycle(model)

    def log_test(self, metrics: Mapping[str, float], samples: int) -> None:
        """Never called: `score_test` is False."""

    @property
    def last_report(self) -> dict[str, float]:
        return {k: v for k, v in (self.history[-1] if self.history else {}).items() if k != "epoch"}
