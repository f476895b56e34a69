"""One trial's reporter: what it tells Optuna after each epoch, and when it lets the pruner stop it."""

from __future__ import annotations

import optuna
from optuna.pruners import BasePruner

from exptrack.search.trial import TrialReporter


class AlwaysPrune(BasePruner):
    """A pruner that wants every trial stopped at every epoch it is asked about."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


def test_a_trial_whose_training_is_complete_is_never_pruned() -> None:
    study = optuna.create_study(direction="maximize", pruner=AlwaysPrune())
    trial = study.ask()
    reporter = TrialReporter(trial, None, None, ["val_accuracy"], epochs=2)
    assert reporter.on_epoch(1, {"val_accuracy": 0.5}) is True  # epoch 1 of 2: the pruner is asked
    assert reporter.on_epoch(2, {"val_accuracy": 0.9526}) is False  # the last: nothing left to save
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {1: 0.5, 2: 0.9526}
