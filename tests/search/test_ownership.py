"""Who owns a trial and a parent run, attacked for real: a process killed between asking a trial and
recording itself as its worker, a `--workers` coordinator killed with SIGKILL, and a new Optuna
study under the name of an old one in the same MLflow store."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from exptrack.search.ownership import ORPHAN_REASON
from tests.faultkit import FAULTY, SMALL, run_cli_batch, runs_by_trial, send, start_search, trials, wait_for

# What a worker killed inside its ask left behind: the trial asked, and nothing recorded on it.
_ASK_THEN_DIE = (
    "import os, signal, sys, optuna\n"
    "study = optuna.create_study(study_name='faulty', storage=sys.argv[1], direction='minimize')\n"
    "study.ask()\n"
    "os.kill(os.getpid(), signal.SIGKILL)\n"
)


@pytest.mark.slow
def test_a_trial_whose_asker_died_before_recording_its_worker_is_failed_not_waited_on(
    project: Path,
) -> None:
    killed = subprocess.run([sys.executable, "-c", _ASK_THEN_DIE, f"sqlite:///{project}/optuna.db"])
    assert killed.returncode == -signal.SIGKILL
    (orphan,) = trials(project)
    assert orphan.state.name == "RUNNING" and "worker" not in orphan.user_attrs

    search = start_search(project, "--trials", "1")
    _, err = search.communicate(timeout=300)  # before the fix: polled forever for trial 0
    assert search.returncode == 0, err
    orphan, ran = trials(project)
    assert orphan.state.name == "FAIL" and orphan.user_attrs["fail_reason"] == ORPHAN_REASON
    assert ran.state.name == "COMPLETE"


def _gone(pid: int) -> bool:
    """Exited (a zombie waiting for a reaper counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.slow
def test_a_sigkilled_workers_coordinator_takes_its_workers_down_and_the_next_start_repairs(
    project: Path,
) -> None:
    coordinator = start_search(project, "--trials", "3", "--workers", "2", faults="0:gate", gate_dir=project)

    def both_training() -> bool:
        running = [t for t in trials(project) if t.state.name == "RUNNING" and "config" in t.user_attrs]
        return len(running) == 2

    wait_for(both_training, "both workers to train", process=coordinator)
    workers = [int(t.user_attrs["worker"].split(":")[1]) for t in trials(project)]
    send(coordinator, signal.SIGKILL)
    coordinator.communicate(timeout=30)
    wait_for(lambda: all(_gone(pid) for pid in workers), "the workers to stop", 60)
    states = {t.number: t.state.name for t in trials(project)}
    assert states == {0: "FAIL", 1: "FAIL"}  # closed by the workers, not left RUNNING
    assert {t.user_attrs["fail_reason"] for t in trials(project)} == {"interrupted by SIGTERM"}

    again = start_search(project, "--trials", "3")  # any next start repairs
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    states = {t.number: t.state.name for t in trials(project)}
    assert list(states.values()).count("COMPLETE") == 3 and "RUNNING" not in states.values()
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    (experiment,) = [e for e in client.search_experiments() if e.name == "faulty"]
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("exptrack.role") == "study"]
    assert parent.info.status == "FINISHED"
    assert all(r.info.status != "RUNNING" and r.info.end_time for r in runs)


def _legacy_study(project: Path) -> None:
    """A study and its parent run as an exptrack without study identities wrote them."""
    study = optuna.create_study(
        study_name="faulty", storage=f"sqlite:///{project}/c.db", direction="minimize"
    )
    study.set_user_attr("metric", "val_loss")
    study.add_trial(optuna.trial.create_trial(value=1.0))
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    experiment = client.create_experiment("faulty", tags={"exptrack.study": "faulty"})
    tags = {"exptrack.role": "study", "exptrack.study": "faulty"}
    client.create_run(experiment, run_name="faulty", tags=tags)


@pytest.mark.slow
def test_a_parent_run_belongs_to_one_optuna_study_and_a_new_study_of_the_same_name_gets_its_own(
    project: Path,
) -> None:
    _legacy_study(project)
    tracking = ["--tracking-uri", f"sqlite:///{project}/mlflow.db"]
    search = ["search", FAULTY, *SMALL, *tracking]
    cases = [
        [*search, "--trials", "1", "--storage", "sqlite:///a.db"],
        [*search, "--trials", "1", "--storage", "sqlite:///b.db"],  # e.g. optuna.db reset
        [*search, "--trials", "2", "--storage", "sqlite:///a.db"],  # study a continues
        [*search, "--trials", "2", "--storage", "sqlite:///c.db"],  # the legacy study continues
        ["trials", "faulty", "--storage", "sqlite:///b.db", *tracking, "--format", "json"],
    ]
    results = run_cli_batch([(project, args) for args in cases])
    assert [r.returncode for r in results] == [0] * 5, [r.stderr for r in results]
    said = ["already held parent run" in r.stderr.replace("\n", " ") for r in results[:4]]
    assert said == [True, True, False, False]  # a and b each found an older study's parent run
    (row,) = json.loads(results[4].stdout)  # exp trials shows study b's own run, not a's trial-000
    b_trial = optuna.load_study(study_name="faulty", storage=f"sqlite:///{project}/b.db").trials[0]
    assert row["run_id"] == b_trial.user_attrs["mlflow_run_id"]

    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    (experiment,) = [e for e in client.search_experiments() if e.name == "faulty"]
    runs = client.search_runs([experiment.experiment_id])
    parents = {r.info.run_id: r for r in runs if r.data.tags.get("exptrack.role") == "study"}
    assert len(parents) == 3
    children: dict[str, list[str]] = {}
    for run in runs:
        if run.data.tags.get("exptrack.role") == "trial":
            children.setdefault(run.data.tags["mlflow.parentRunId"], []).append(run.info.run_name)
    for name, expected in (("a", ["trial-000", "trial-001"]), ("b", ["trial-000"]), ("c", ["trial-001"])):
        study = optuna.load_study(study_name="faulty", storage=f"sqlite:///{project}/{name}.db")
        (parent,) = [
            p
            for p in parents.values()
            if p.data.tags.get("exptrack.study_uid") == study.user_attrs["study_uid"]
        ]
        assert sorted(children[parent.info.run_id]) == expected
        for trial in study.trials:
            if "mlflow_run_id" in trial.user_attrs:
                assert (
                    client.get_run(trial.user_attrs["mlflow_run_id"]).data.tags["mlflow.parentRunId"]
                    == parent.info.run_id
                )
    assert runs_by_trial(f"sqlite:///{project}/mlflow.db")  # the experiment reads back
