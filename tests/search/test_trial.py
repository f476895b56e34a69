"""One trial: what its reporter tells Optuna after each epoch (and when it lets the pruner stop
it), and, on real tiny stores, the outcome `run_trial` hands back and what each store records."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient
from optuna.pruners import BasePruner
from optuna.trial import TrialState

from exptrack import records
from exptrack.search import loop
from exptrack.search.loop import Search
from exptrack.search.options import SearchOptions
from exptrack.search.study_run import StudyRun
from exptrack.search.trial import run_trial
from exptrack.search.trial_reporter import TrialReporter
from exptrack.study import load_study_file
from exptrack.tracking.tracker import Tracker
from tests.conftest import REPO


class AlwaysPrune(BasePruner):
    """A pruner that wants every trial stopped at every epoch it is asked about."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


def test_a_trial_whose_training_is_complete_is_never_pruned() -> None:
    study = optuna.create_study(direction="maximize", pruner=AlwaysPrune())
    trial = study.ask()
    reporter = TrialReporter(trial, None, None, ["val_accuracy"], epochs=2)
    reporter.report(1, {"val_accuracy": 0.5})
    assert reporter.should_prune() is True  # epoch 1 of 2: the pruner is asked
    reporter.report(2, {"val_accuracy": 0.9526})
    assert reporter.should_prune() is False  # the last: nothing left to save
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {1: 0.5, 2: 0.9526}


# --- one whole trial on real tiny stores: the outcome it hands back and what each store records ---

FAULTY = REPO / "tests" / "studies" / "faulty.py"
SMALL = {"subset": 96, "image_size": 16}  # digits at 16 px: a trial takes seconds on a CPU


def opened(tmp_path: Path, tracking: bool = True, epochs: int = 1) -> tuple[Search, StudyRun]:
    """The faulty test study (its loss misbehaves as EXPTRACK_FAULTS says) on sqlite stores in
    `tmp_path`, its parent run open when tracking."""
    spec = load_study_file(FAULTY).with_overrides({**SMALL, "epochs": epochs})
    options = SearchOptions(trials=5, storage=f"sqlite:///{tmp_path}/optuna.db", seed=0).resolved()
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", warn=lambda _: None) if tracking else None
    search = loop.open_search(spec, options, tracker, warn=lambda _: None)
    return search, loop.open_tracking(search)


def mlflow_run(tmp_path: Path, run_id: str) -> Any:
    return MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(run_id)


def test_a_complete_trial_hands_back_its_value_and_both_stores_agree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EXPTRACK_FAULTS", raising=False)
    search, tracking = opened(tmp_path)
    outcome = run_trial(loop.trial_context(search, tracking), search.study.ask())
    frozen = search.study.trials[0]
    assert (outcome.number, outcome.state, outcome.recorded, outcome.traced) == (0, "COMPLETE", True, False)
    assert outcome.value == frozen.value and outcome.value > 0  # val_loss of the trained trial
    run = mlflow_run(tmp_path, frozen.user_attrs[records.RUN_ID_ATTR])
    assert run.info.status == "FINISHED" and run.info.run_name == "trial-000"
    assert run.data.tags[records.TRIAL_TAG] == "0" and run.data.tags[records.STATE_TAG] == "COMPLETE"
    assert run.data.tags["mlflow.parentRunId"] == tracking.parent_run_id
    assert float(run.data.params["lr"]) == frozen.params["lr"]
    assert run.data.metrics["val_loss"] == frozen.value


def test_a_trial_whose_training_raises_fails_in_both_stores_with_its_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXPTRACK_FAULTS", "*:nan")  # the training loss goes NaN
    search, tracking = opened(tmp_path)
    outcome = run_trial(loop.trial_context(search, tracking), search.study.ask())
    frozen = search.study.trials[0]
    assert (outcome.state, outcome.value, outcome.recorded) == ("FAIL", None, True)
    assert (
        frozen.state == TrialState.FAIL
        and "NonFiniteLossError" in frozen.user_attrs[records.FAIL_REASON_ATTR]
    )
    run = mlflow_run(tmp_path, frozen.user_attrs[records.RUN_ID_ATTR])
    assert run.info.status == "FAILED" and run.data.tags[records.STATE_TAG] == "FAIL"
    assert run.data.tags[records.FAIL_REASON_TAG] == frozen.user_attrs[records.FAIL_REASON_ATTR]


def test_a_pruned_trial_hands_back_its_last_reported_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EXPTRACK_FAULTS", raising=False)
    search, tracking = opened(tmp_path, epochs=2)
    search.study.pruner = AlwaysPrune()  # stops it after epoch 1 of 2
    outcome = run_trial(loop.trial_context(search, tracking), search.study.ask())
    frozen = search.study.trials[0]
    assert outcome.state == "PRUNED" and frozen.state == TrialState.PRUNED
    assert outcome.value == frozen.intermediate_values[1]
    run = mlflow_run(tmp_path, frozen.user_attrs[records.RUN_ID_ATTR])
    assert run.info.status == "KILLED" and run.data.tags[records.PRUNED_EPOCH_TAG] == "1"
    # readable at a glance: the run's description (a column of the saved view) says pruned
    assert run.data.tags["mlflow.note.content"].startswith("PRUNED after epoch 1: ")


def test_a_trial_whose_run_cannot_be_opened_trains_and_says_it_is_unrecorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EXPTRACK_FAULTS", raising=False)
    search, tracking = opened(tmp_path)
    # an experiment the tracking store does not hold: MLflow refuses the run, as it would when down
    context = dataclasses.replace(loop.trial_context(search, tracking), experiment_id="424242")
    outcome = run_trial(context, search.study.ask())
    assert (outcome.state, outcome.recorded) == ("COMPLETE", False)
    assert records.RUN_ID_ATTR not in search.study.trials[0].user_attrs
    assert search.tracker is not None and search.tracker.failures  # counted for the summary


def test_without_tracking_a_trial_is_complete_and_counts_as_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EXPTRACK_FAULTS", raising=False)
    search, tracking = opened(tmp_path, tracking=False)
    outcome = run_trial(loop.trial_context(search, tracking, traced=True), search.study.ask())
    assert (outcome.state, outcome.recorded, outcome.traced) == (
        "COMPLETE",
        True,
        False,
    )  # no run to trace onto
    assert not (tmp_path / "mlflow.db").exists()


def test_a_trial_failed_by_another_worker_before_sampling_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EXPTRACK_FAULTS", raising=False)
    search, tracking = opened(tmp_path)
    asked = search.study.ask()
    other = optuna.load_study(study_name=search.name, storage=f"sqlite:///{tmp_path}/optuna.db")
    other.tell(asked.number, state=TrialState.FAIL)  # what a worker that found it owner-less does
    outcome = run_trial(loop.trial_context(search, tracking), asked)
    assert (outcome.state, outcome.value) == ("FAIL", None)
    assert records.RUN_ID_ATTR not in search.study.trials[0].user_attrs  # it never trained
    runs = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_runs([tracking.experiment_id])
    assert [r.info.run_id for r in runs] == [tracking.parent_run_id]


def test_a_traced_trial_logs_its_trace_on_its_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXPTRACK_FAULTS", raising=False)
    search, tracking = opened(tmp_path)
    outcome = run_trial(loop.trial_context(search, tracking, traced=True), search.study.ask())
    assert (outcome.state, outcome.traced) == ("COMPLETE", True)
    run_id = search.study.trials[0].user_attrs[records.RUN_ID_ATTR]
    listed = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").list_artifacts(run_id, records.PROFILE_DIR)
    assert listed  # the torch.profiler files
