"""A real `mlflow server` stopped mid-search and started again on the same port: trials keep
completing in Optuna, and what could not be recorded is written from the journal once it is back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faultkit import MlflowServer, runs_by_trial, start_search, trials, wait_for


@pytest.fixture
def server(project: Path) -> Iterator[MlflowServer]:
    (project / "server").mkdir()
    running = MlflowServer(project / "server")
    running.start()
    yield running
    running.stop()


@pytest.mark.slow
def test_search_survives_a_tracking_outage_and_writes_what_was_not_recorded_once_it_is_back(
    project: Path, server: MlflowServer
) -> None:
    search = start_search(
        project, "--trials", "6", "--tracking-uri", server.uri, faults="2:gate,3:gate", gate_dir=project
    )
    wait_for(lambda: (project / "waiting-2").exists(), "trial 2 to train", process=search)
    server.stop()  # trial 2's run is open; its close and trial 3's run will fail
    (project / "go-2").touch()
    wait_for(lambda: (project / "waiting-3").exists(), "trial 3 to train", process=search)
    server.start()  # same port, same store
    (project / "go-3").touch()
    _, err = search.communicate(timeout=240)
    assert search.returncode == 0, err

    assert [t.state.name for t in trials(project)] == ["COMPLETE"] * 6
    assert "MLflow tracking failed" in err
    assert "the journal wrote them once the store answered again" in err
    runs = runs_by_trial(server.uri)
    # trial 3's run could not be opened (the server was down): written from the journal once it was back
    assert sorted(runs) == [0, 1, 2, 3, 4, 5] and all(len(group) == 1 for group in runs.values())
    assert all(group[0].info.status == "FINISHED" for group in runs.values())
    assert runs[3][0].data.tags["exptrack.restored"] == "journal"
    assert runs[3][0].data.metrics["val_loss"] == trials(project)[3].value
    assert "mlflow_run_id" not in trials(project)[3].user_attrs  # told before its run existed: linked by tags
    for number in (4, 5):  # recorded again once the server was back
        assert runs[number][0].data.metrics["val_loss"] == trials(project)[number].value
    # on a tracking server, each trial links to its run page (optuna-dashboard shows the link)
    link = trials(project)[4].user_attrs["mlflow_run_url"]
    assert link.startswith(f"{server.uri}/#/experiments/") and link.endswith("?workflowType=machine_learning")
    assert runs[4][0].info.run_id in link
