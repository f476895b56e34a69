"""A long trial survives its worker: killed (SIGKILL) or told to stop (SIGTERM, what Slurm and
Kubernetes send before preemption) after epoch 2 of 3, its retry resumes from the epoch 2
checkpoint, trains epoch 3 only, and ends exactly where an uninterrupted trial of the same config
ends; the checkpoints are gone once the study no longer needs them."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from mlflow import MlflowClient

from exptrack.training import checkpoints
from tests.conftest import run_exp
from tests.faultkit import run_search, runs_by_trial, send, start_search, trials, wait_for

# seeded: a second study samples the same trial 0; a checkpoint at every epoch end (sub-second here)
THREE_EPOCHS = ("--set", "epochs=3", "--seed", "5", "--checkpoint-every", "0")


def _wait_for_epoch_2_checkpoint(project: Path, process) -> Path:  # type: ignore[no-untyped-def]
    """Until trial 0's checkpoint holds epoch 2 (its hang3 fault then blocks epoch 3's training)."""
    path = project / "exptrack-checkpoints" / "faulty" / "0.pt"
    wait_for(lambda: checkpoints.read(path).epoch == 2, "trial 0's epoch 2 checkpoint", process=process)
    return path


def _samples_trained(trial) -> float:  # type: ignore[no-untyped-def]
    """Images this trial's own process trained on, from its profile (samples/s x seconds)."""
    costs = trial.user_attrs["profile"]
    return float(costs["train_samples_per_second"] * costs["train_seconds"])


@pytest.mark.slow
def test_a_sigkilled_trial_resumes_from_its_epoch_2_checkpoint_and_ends_exactly_as_an_uninterrupted_one(
    project: Path,
) -> None:
    killed = start_search(project, "--trials", "1", *THREE_EPOCHS, faults="0:hang3")
    _wait_for_epoch_2_checkpoint(project, killed)
    send(killed, signal.SIGKILL)
    killed.communicate(timeout=30)

    again = run_search(project, "--trials", "1", *THREE_EPOCHS)
    assert again.returncode == 0, again.stderr
    assert "trial 1 resumes trial 0 after its epoch 2" in again.stderr
    reference = run_search(project, "--trials", "1", *THREE_EPOCHS, "--study-name", "reference")
    assert reference.returncode == 0, reference.stderr

    dead, retry = trials(project)
    (whole,) = trials(project, "reference")
    assert dead.state.name == "FAIL" and retry.state.name == "COMPLETE"
    assert retry.user_attrs["retry_of"] == 0 and retry.user_attrs["resumed_from_epoch"] == 2
    assert retry.params == whole.params == dead.params
    # Exact: the same batches, weights, AdamW moments and RNGs; equal to 1e-9 relative on the
    # same CPU and thread count (the in-process test holds it to 1e-12)
    assert retry.value == pytest.approx(whole.value, rel=1e-9)
    assert retry.intermediate_values == pytest.approx(whole.intermediate_values, rel=1e-9)
    assert sorted(retry.intermediate_values) == [1, 2, 3]  # epochs 1-2 reported again: the pruner sees them
    # ...but trained once: the retry's process trained one epoch's images, the reference three
    assert _samples_trained(retry) == pytest.approx(_samples_trained(whole) / 3, rel=1e-6)

    (run,) = runs_by_trial(f"sqlite:///{project}/mlflow.db")[1]
    assert run.data.tags["exptrack.retry_of"] == "0" and run.data.tags["exptrack.resumed_from_epoch"] == "2"
    history = MlflowClient(f"sqlite:///{project}/mlflow.db").get_metric_history(run.info.run_id, "val_loss")
    assert sorted(m.step for m in history) == [1, 2, 3]  # the run holds the whole curve
    assert not (project / "exptrack-checkpoints").exists()  # nothing left once both trials ended

    listed = run_exp(project, "trials", "faulty", "--format", "json", check=True)
    shown = {row["number"]: row for row in json.loads(listed.stdout)}
    assert shown[1]["resumed"] == "trial 0 after epoch 2" and shown[0]["resumed"] is None


@pytest.mark.slow
def test_sigterm_keeps_the_checkpoint_exits_143_and_the_rerun_resumes_it_with_exactly_the_trials_asked(
    project: Path,
) -> None:
    stopped = start_search(project, "--trials", "2", *THREE_EPOCHS, faults="0:hang3")
    path = _wait_for_epoch_2_checkpoint(project, stopped)
    send(stopped, signal.SIGTERM)
    _, err = stopped.communicate(timeout=60)
    assert stopped.returncode == 143, err
    assert f"trial 0: its checkpoint after epoch 2 is kept ({path})" in err
    (interrupted,) = trials(project)
    assert (
        interrupted.state.name == "FAIL" and interrupted.user_attrs["fail_reason"] == "interrupted by SIGTERM"
    )
    assert interrupted.user_attrs["checkpoint_epoch"] == 2 and checkpoints.read(path).epoch == 2

    again = run_search(project, "--trials", "2", *THREE_EPOCHS)  # a requeued job runs the same command
    assert again.returncode == 0, again.stderr
    assert "trial 1 resumes trial 0 after its epoch 2" in again.stderr
    found = trials(project)
    assert [t.state.name for t in found] == ["FAIL", "COMPLETE", "COMPLETE"]  # exactly --trials 2 finished
    assert found[1].user_attrs["retry_of"] == 0 and found[1].user_attrs["resumed_from_epoch"] == 2
    assert "retry_of" not in found[2].user_attrs
    assert not (project / "exptrack-checkpoints").exists()
