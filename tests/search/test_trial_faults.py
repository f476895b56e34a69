"""Trial faults end only their trial: an exception, out of memory, a NaN loss, a non-finite
objective; a run of failures stops the search with a clear message. Faults come from the faulty study."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import run_exp
from tests.faultkit import run_search, runs_by_trial, trials


@pytest.mark.slow
def test_faulty_trials_fail_with_reasons_and_the_search_goes_on(project: Path) -> None:
    result = run_search(project, "--trials", "2", faults="1:raise,2:oom,3:nan,4:nan_eval")
    assert result.returncode == 0, result.stderr

    by_number = {t.number: t for t in trials(project)}
    states = {n: t.state.name for n, t in by_number.items()}
    assert states == {0: "COMPLETE", 1: "FAIL", 2: "FAIL", 3: "FAIL", 4: "FAIL", 5: "COMPLETE"}
    reasons = {n: by_number[n].user_attrs["fail_reason"] for n in (1, 2, 3, 4)}
    assert reasons[1].startswith("RuntimeError: injected fault")
    assert reasons[2].startswith("OutOfMemoryError: CUDA out of memory")
    assert "NonFiniteLossError" in reasons[3] and "training loss" in reasons[3]
    assert "NonFiniteLossError" in reasons[4] and "val_loss is nan" in reasons[4]
    assert all(math.isfinite(by_number[n].value) for n in (0, 5))  # a COMPLETE value is a real number

    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    runs = runs_by_trial(f"sqlite:///{project}/mlflow.db")
    for number in (1, 2, 3, 4):
        (run,) = runs[number]
        assert run.info.status == "FAILED" and run.info.end_time is not None
        assert run.data.tags["exptrack.fail_reason"] == reasons[number]
        traceback = client.download_artifacts(run.info.run_id, "traceback.txt", str(project))
        assert "Traceback" in Path(traceback).read_text()
    assert {runs[n][0].info.status for n in (0, 5)} == {"FINISHED"}
    assert "2 finished" in result.stdout


@pytest.mark.slow
def test_consecutive_failures_stop_the_search_with_exit_code_2(project: Path) -> None:
    result = run_search(project, "--trials", "5", "--max-failures", "3", "--no-tracking", faults="*:raise")
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: 3 trials failed in a row (last: RuntimeError: injected fault")
    assert "--max-failures" in message
    assert [t.state.name for t in trials(project)] == ["FAIL"] * 3


@pytest.mark.gpu
@pytest.mark.slow
def test_a_real_cuda_oom_fails_one_trial_and_the_next_trial_runs(project: Path) -> None:
    result = run_search(project, "--trials", "2", "--device", "cuda", faults="0:oom_real")
    assert result.returncode == 0, result.stderr
    states = [t.state.name for t in trials(project)]
    assert states == ["FAIL", "COMPLETE", "COMPLETE"]
    assert trials(project)[0].user_attrs["fail_reason"].startswith("OutOfMemoryError")


@pytest.mark.slow
def test_an_out_of_memory_trial_teaches_the_sampler_its_run_fails_and_the_search_goes_on(
    project: Path,
) -> None:
    # TPE steers by constraints: the out-of-memory trial is told to Optuna as infeasible
    result = run_search(project, "--trials", "2", "--sampler", "tpe", faults="1:oom")
    assert result.returncode == 0, result.stderr
    assert "2 finished" in result.stdout  # the out-of-memory trial does not use up --trials

    first, oom, last = trials(project)
    assert first.state.name == last.state.name == "COMPLETE"
    assert oom.state.name == "COMPLETE" and oom.constraints["out_of_memory"] == 1.0  # infeasible
    assert oom.values == first.values  # a placeholder: the worst real value so far
    assert oom.user_attrs["fail_reason"].startswith("OutOfMemoryError: CUDA out of memory")
    assert first.constraints == {"out_of_memory": 0.0}

    runs = runs_by_trial(f"sqlite:///{project}/mlflow.db")
    (run,) = runs[1]
    assert run.info.status == "FAILED" and run.info.end_time is not None
    assert run.data.tags["exptrack.fail_reason"] == oom.user_attrs["fail_reason"]
    assert run.data.tags["exptrack.infeasible"] == "out_of_memory"

    listed = run_exp(project, "trials", "faulty", "--format", "json", "--sort", "number")
    row = json.loads(listed.stdout)[1]
    assert (row["state"], row["feasible"], row["value"], row["run_status"]) == ("FAIL", False, None, "FAILED")
