"""The Tracker's background writes: a trial's params, config.yaml and tags are queued behind the
run's creation, and `runs.finish_run` waits for them before it closes the run with its status."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from exptrack import records
from exptrack.tracking import runs
from exptrack.tracking.tracker import Tracker

PARAMS = {"lr": "0.01", "loss": "focal", "loss_params.gamma": "2.0"}


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> Tracker:
    """One sqlite store for the module: creating MLflow's tables takes seconds."""
    return Tracker(f"sqlite:///{tmp_path_factory.mktemp('tracker')}/mlflow.db", warn=lambda m: None)


def open_trial(tracker: Tracker, params: dict[str, str]) -> str:
    study = runs.StudyFacts(
        "study", "study-uid", "x.db", "TPESampler", "NopPruner", {"val_accuracy": "maximize"}, {}, []
    )
    config = yaml.safe_dump({"lr": 0.01, "loss": "focal", "loss_params": {"gamma": 2.0}})
    run_id = runs.open_trial_run(
        tracker, runs.open_study_run(tracker, study), runs.TrialFacts("study", "x.db", 3, params, config)
    )
    assert run_id is not None
    return run_id


def test_a_run_closed_right_after_it_opened_has_every_queued_write(tracker: Tracker, tmp_path: Path) -> None:
    run_id = open_trial(tracker, PARAMS)
    tracker.log_later(run_id, tags=records.setup_tags({"device": "cpu"}))
    tracker.log_epoch(run_id, 1, {"val_accuracy": 0.5})
    runs.finish_run(tracker, run_id, "PRUNED", {"best_val_accuracy": 0.5})

    run = tracker.client.get_run(run_id)
    assert run.info.status == "KILLED" and run.info.end_time is not None
    assert run.data.params == PARAMS
    tags = run.data.tags
    assert tags[records.TRIAL_TAG] == "3" and tags[records.TRIAL_STORAGE_TAG] == "x.db"
    assert tags["exptrack.device"] == "cpu"
    # the curves are its only metrics (the UI's metrics tab opens on them); single figures are tags
    assert run.data.metrics == {"val_accuracy": 0.5} and tags["best_val_accuracy"] == "0.5"
    config = Path(tracker.client.download_artifacts(run_id, records.CONFIG_ARTIFACT, str(tmp_path)))
    assert yaml.safe_load(config.read_text())["loss_params"] == {"gamma": 2.0}
    assert tracker.failures == []


def test_a_background_write_the_store_refuses_is_reported_and_the_run_still_closes(tracker: Tracker) -> None:
    warnings: list[str] = []
    tracker.warn, tracker.failures = warnings.append, []
    run_id = open_trial(tracker, {"x" * 300: "1"})  # MLflow refuses param keys over 250 characters
    runs.finish_run(tracker, run_id, "COMPLETE", {"best_val_accuracy": 0.9})

    run = tracker.client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["best_val_accuracy"] == "0.9"
    assert run.data.params == {}
    assert len(tracker.failures) == 1 and tracker.failures[0].startswith("log to run: MlflowException")
    assert warnings and "the search goes on" in warnings[0]


def test_a_server_that_stops_answering_before_the_study_run_opens_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A `--workers` worker can start after the preflight's check into an outage (seen on CI):
    the study's runs cannot be opened, and the user reads one line, not an unexpected error."""
    import socket

    from exptrack.errors import UserError

    with socket.socket() as probe:  # a loopback port nobody listens on: a server that is down
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    down = Tracker(f"http://user:secret@127.0.0.1:{port}", warn=lambda m: None, create=False)
    study = runs.StudyFacts("study", "uid", "x.db", "TPESampler", "NopPruner", {"val_accuracy": "maximize"}, {}, [])
    with pytest.raises(UserError) as raised:
        runs.open_study_run(down, study)
    message = str(raised.value)
    assert "\n" not in message and "could not open the study's runs" in message
    assert f"127.0.0.1:{port}" in message and "secret" not in message and "re-run the same command" in message
