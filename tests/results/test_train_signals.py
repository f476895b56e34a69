"""`exp train` killed: SIGTERM closes its run as FAILED (reason, end time, the epochs logged so far)
and exits 143; a run that SIGKILL left RUNNING is closed by the next `exp train`, which finds its
process gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import exp_env
from tests.faultkit import wait_for

# Long enough never to finish on its own (a 32-image epoch at 8 px takes a fraction of a second)
ENDLESS = "epochs: 10000\nsubset: 32\nimage_size: 8\nweights: none\nbatch_size: 16\nnum_workers: 0\n"


def start_train(cwd: Path) -> subprocess.Popen[str]:
    env = {**exp_env(cwd), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "exptrack", "train", "endless.yaml"],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def train_runs(cwd: Path) -> list:
    client = MlflowClient(f"sqlite:///{cwd}/mlflow.db")  # absolute: MLflow caches a store per URI
    experiment = client.get_experiment_by_name("exptrack-train")
    return client.search_runs([experiment.experiment_id]) if experiment else []


def run_of(cwd: Path, process: subprocess.Popen[str]):  # type: ignore[no-untyped-def]
    """The run `process` trains, once it has logged an epoch (so the signal hits training)."""
    owner = f"{os.uname().nodename}:{process.pid}:"
    found = []

    def logged_an_epoch() -> bool:
        found[:] = [r for r in train_runs(cwd) if r.data.tags.get("exptrack.owner", "").startswith(owner)]
        return bool(found) and "val_loss" in found[0].data.metrics

    wait_for(logged_an_epoch, f"exp train (pid {process.pid}) to log an epoch", 180, process)
    return found[0]


@pytest.mark.slow
def test_sigterm_fails_the_run_and_a_sigkilled_run_is_closed_by_the_next_train(project: Path) -> None:
    (project / "endless.yaml").write_text(ENDLESS)
    killed = start_train(project)
    killed_run = run_of(project, killed)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=30)
    (left,) = [r for r in train_runs(project) if r.info.run_id == killed_run.info.run_id]
    assert left.info.status == "RUNNING"  # what a kill leaves behind

    termed = start_train(project)
    termed_run = run_of(project, termed)
    termed.send_signal(signal.SIGTERM)
    _, err = termed.communicate(timeout=60)
    assert termed.returncode == 143, err
    said = " ".join(err.split())  # rich wraps at 80 columns without a terminal
    assert f"closed 1 exp train run(s) left RUNNING by a process that died: {killed_run.info.run_id}" in said

    runs = {r.info.run_id: r for r in train_runs(project)}
    closed = runs[killed_run.info.run_id]
    assert closed.info.status == "FAILED" and closed.info.end_time is not None
    reason = closed.data.tags["exptrack.fail_reason"]
    assert f":{killed.pid}:" in reason and "died while the run trained" in reason
    interrupted = runs[termed_run.info.run_id]
    assert interrupted.info.status == "FAILED" and interrupted.info.end_time is not None
    assert interrupted.data.tags["exptrack.fail_reason"] == "interrupted by SIGTERM"
    assert "val_loss" in interrupted.data.metrics  # the epochs logged before the signal stay
