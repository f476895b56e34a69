"""A search killed with SIGKILL while trial 7 of 20 runs, then re-run: exactly 20 finished trials,
the killed trial FAIL with a reason, its run not RUNNING, no duplicated numbers, a linked retry."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.faultkit import runs_by_trial, send, start_search, trials, wait_for, wait_running


@pytest.mark.slow
def test_sigkill_during_trial_7_then_rerun_ends_with_20_finished_trials(project: Path) -> None:
    search = start_search(project, "--trials", "20", faults="7:gate", gate_dir=project)
    wait_running(project, 7, search)
    wait_for(lambda: (project / "waiting-7").exists(), "trial 7 to train", process=search)
    send(search, signal.SIGKILL)
    search.communicate(timeout=30)
    assert search.returncode == -signal.SIGKILL
    assert [t.state.name for t in trials(project)][7] == "RUNNING"  # what a kill leaves behind

    again = start_search(project, "--trials", "20")
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "trial(s) 7 were left RUNNING by a dead process" in err

    found = trials(project)
    numbers = [t.number for t in found]
    assert numbers == list(range(len(numbers)))  # no number duplicated or skipped
    states = [t.state.name for t in found]
    assert states.count("COMPLETE") + states.count("PRUNED") == 20
    assert states == ["COMPLETE"] * 7 + ["FAIL"] + ["COMPLETE"] * 13
    killed = found[7]
    assert "died while the trial ran" in killed.user_attrs["fail_reason"]
    retry = found[8]
    assert retry.user_attrs["retry_of"] == 7 and retry.params == killed.params

    runs = runs_by_trial(f"sqlite:///{project}/mlflow.db")
    assert sorted(runs) == list(range(21)) and all(len(group) == 1 for group in runs.values())
    (killed_run,) = runs[7]
    assert killed_run.info.status == "FAILED" and killed_run.info.end_time is not None
    assert "died while the trial ran" in killed_run.data.tags["exptrack.fail_reason"]
    assert runs[8][0].data.tags["exptrack.retry_of"] == "7"
    assert all(group[0].info.status == "FINISHED" for n, group in runs.items() if n != 7)


@pytest.mark.slow
def test_a_trial_owner_is_dead_only_when_its_exact_process_is_gone() -> None:
    import os
    import subprocess
    import sys

    from exptrack.processes import owner_is_dead, worker_id

    host = os.uname().nodename
    assert not owner_is_dead(worker_id())  # this very process
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    assert owner_is_dead(f"{host}:{gone.stdout.strip()}:12345")  # exited (and reaped)
    recycled = worker_id().rsplit(":", 1)[0] + ":1"  # our pid, another start time: a recycled pid
    assert owner_is_dead(recycled)
    assert not owner_is_dead(f"other-host:{os.getpid()}:1")  # another machine: not ours to judge
    assert not owner_is_dead(f"{host}:{os.getpid()}")  # an older record without start time, pid alive
