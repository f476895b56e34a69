"""SIGTERM / Ctrl-C during a trial: the trial ends FAIL with the reason, its run FAILED with an end
time and the metrics logged before the signal; exit 143 / 130; a second signal exits at once and
the next start repairs what it left."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.faultkit import runs_by_trial, send, start_search, trial_state, trials, wait_for

TWO_EPOCHS = ("--trials", "2", "--set", "epochs=2")


def _wait_in_epoch_2(project: Path, number: int, process) -> None:  # type: ignore[no-untyped-def]
    """Until trial `number` has reported epoch 1 to Optuna and MLflow holds that epoch's metrics
    (the faulty loss then hangs in epoch 2)."""
    wait_for(
        lambda: 1 in {t.number: t for t in trials(project)}[number].intermediate_values,
        f"epoch 1 of trial {number}",
        process=process,
    )

    def epoch_1_in_mlflow() -> bool:
        runs = runs_by_trial(f"sqlite:///{project}/mlflow.db").get(number, [])
        return bool(runs) and "val_loss" in runs[0].data.metrics

    wait_for(epoch_1_in_mlflow, f"epoch 1 metrics of trial {number} in MLflow", process=process)


@pytest.mark.slow
def test_sigterm_fails_the_running_trial_keeps_its_metrics_and_exits_143(project: Path) -> None:
    search = start_search(project, *TWO_EPOCHS, faults="0:hang")
    _wait_in_epoch_2(project, 0, search)
    send(search, signal.SIGTERM)
    _, err = search.communicate(timeout=60)
    assert search.returncode == 143, err

    (trial,) = trials(project)
    assert trial.state.name == "FAIL"
    assert trial.user_attrs["fail_reason"] == "interrupted by SIGTERM"
    (run,) = runs_by_trial(f"sqlite:///{project}/mlflow.db")[0]
    assert run.info.status == "FAILED" and run.info.end_time is not None
    assert run.data.tags["exptrack.fail_reason"] == "interrupted by SIGTERM"
    assert run.data.metrics["val_loss"] == trial.intermediate_values[1]  # epoch 1, logged before the signal


@pytest.mark.slow
def test_second_sigint_exits_at_once_and_the_next_start_repairs(project: Path) -> None:
    # The trial swallows the first SIGINT (a stuck native call would), so only the second can end
    # the process: it must exit at once, leaving the trial for the next start to repair.
    search = start_search(project, *TWO_EPOCHS, faults="0:stuck", gate_dir=project)
    _wait_in_epoch_2(project, 0, search)
    send(search, signal.SIGINT)
    wait_for(
        lambda: (project / "interrupted-0").exists(), "the first SIGINT to reach training", process=search
    )
    send(search, signal.SIGINT)
    search.communicate(timeout=60)
    assert search.returncode == 130
    assert trial_state(project, 0) == "RUNNING"  # no clean-up ran: the process ended at once

    again = start_search(project, *TWO_EPOCHS)
    _, err = again.communicate(timeout=180)
    assert again.returncode == 0, err
    found = {t.number: t for t in trials(project)}
    assert found[0].state.name == "FAIL" and found[0].user_attrs["fail_reason"]
    assert [t.state.name for t in found.values()].count("COMPLETE") == 2
    assert "RUNNING" not in {t.state.name for t in found.values()}
    runs = runs_by_trial(f"sqlite:///{project}/mlflow.db")
    assert all(r.info.status != "RUNNING" and r.info.end_time for group in runs.values() for r in group)
    assert runs[0][0].info.status == "FAILED"
