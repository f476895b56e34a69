"""A real `mlflow server` SIGKILLed mid-study (then restarted) or SIGSTOPped (then SIGCONTed):
no record is dropped. What could not be written waits in the journal, the exit code says so in one
final line, and one later command (the same search, `exp trials`, `exp sync`) writes it all:
exactly N finished trials, each with exactly one MLflow run holding its metrics, nothing RUNNING,
the study run FINISHED with the right count. Without the journal (another host's disk) the runs
are rebuilt from Optuna's record, and the command says what could not be restored."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from exptrack import study_store
from tests.conftest import run_exp
from tests.faultkit import MlflowServer, run_search, runs_by_trial, start_search, trials, wait_for
from tests.pgserver import Host, MlflowPgServer, PostgresServer

# A dead server costs each write MLflow's retries (~3 s with exptrack's 2); none keeps the test short.
FAST_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"}


@pytest.fixture
def server(project: Path) -> Iterator[MlflowServer]:
    running = MlflowServer(project / "server")
    running.start()
    yield running
    if running.process is not None and running.process.poll() is None:
        os.killpg(running.process.pid, signal.SIGCONT)
    running.stop()


def _kill(server: MlflowServer) -> None:
    assert server.process is not None
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait()


def _assert_whole(found: list[optuna.trial.FrozenTrial], uri: str, count: int) -> None:
    """Exactly `count` COMPLETE trials, one FINISHED run each holding its value, the study run
    FINISHED with the count, nothing RUNNING."""
    assert [t.state.name for t in found] == ["COMPLETE"] * count
    runs = runs_by_trial(uri)
    assert sorted(runs) == list(range(count)), runs
    for trial in found:
        (run,) = runs[trial.number]
        assert run.info.status == "FINISHED" and run.info.end_time, run
        assert run.data.metrics["val_loss"] == pytest.approx(trial.value)
        assert run.data.params["lr"], run.data.params
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("faulty")
    (study,) = [
        r
        for r in client.search_runs([experiment.experiment_id])
        if r.data.tags.get("exptrack.role") == "study"
    ]
    assert study.info.status == "FINISHED"
    assert study.data.metrics["finished_trials"] == count


def _outage(project: Path, server: MlflowServer) -> str:
    """A 4-trial search whose server is SIGKILLed while trial 1 trains: Optuna gets every trial,
    MLflow only trial 0; exit 3 and one final line. Its stderr."""
    search = start_search(
        project,
        "--trials",
        "4",
        "--tracking-uri",
        server.uri,
        faults="1:gate",
        gate_dir=project,
        env=FAST_HTTP,
    )
    wait_for(lambda: (project / "waiting-1").exists(), "trial 1 to train", process=search)
    _kill(server)
    (project / "go-1").touch()
    _, err = search.communicate(timeout=400)
    assert search.returncode == 3, err
    assert [t.state.name for t in trials(project)] == ["COMPLETE"] * 4
    last = err.strip().splitlines()[-1]
    assert last.startswith("3 trial(s)' records are pending in "), last
    assert "exptrack-journal/faulty; once both stores answer, write them with: exp sync faulty" in last
    assert "Traceback" not in err
    assert list((project / "exptrack-journal" / "faulty").glob("*.jsonl"))
    return err


@pytest.mark.slow
@pytest.mark.parametrize("finisher", ["search", "trials"])
def test_a_server_killed_mid_study_drops_nothing_and_the_next_command_writes_it_all(
    project: Path, server: MlflowServer, finisher: str
) -> None:
    _outage(project, server)
    server.start()  # same port, same store
    if finisher == "search":
        done = run_search(project, "--trials", "4", "--tracking-uri", server.uri)
    else:
        done = run_exp(project, "trials", "faulty", "--tracking-uri", server.uri)
    assert done.returncode == 0, done.stderr
    _assert_whole(trials(project), server.uri, 4)
    runs = runs_by_trial(server.uri)
    # trials 2 and 3 never had a run: created from the journal, saying so; trial 0's is the live one
    assert [runs[n][0].data.tags.get("exptrack.restored") for n in (0, 2, 3)] == [None, "journal", "journal"]
    assert runs[2][0].data.tags["mlflow.parentRunId"] == runs[0][0].data.tags["mlflow.parentRunId"]
    assert [
        m.step for m in MlflowClient(server.uri).get_metric_history(runs[2][0].info.run_id, "val_loss")
    ] == [1]
    assert not (project / "exptrack-journal").exists()


@pytest.mark.slow
def test_without_the_journal_exp_sync_rebuilds_the_runs_from_optuna_and_names_what_is_lost(
    project: Path, server: MlflowServer
) -> None:
    _outage(project, server)
    shutil.rmtree(project / "exptrack-journal")  # the journal was on another host's disk
    server.start()
    done = run_exp(project, "sync", "faulty", "--tracking-uri", server.uri)
    assert done.returncode == 0, done.stderr
    assert "rebuilt the MLflow runs of trial(s) 1, 2, 3 from their Optuna records" in done.stderr
    assert "not restored: per-epoch metrics other than the objective" in done.stderr
    _assert_whole(trials(project), server.uri, 4)
    restored = runs_by_trial(server.uri)[2][0].data.tags["exptrack.restored"]
    assert restored.startswith("optuna: rebuilt from the Optuna trial"), restored
    again = run_exp(project, "sync", "faulty", "--tracking-uri", server.uri)
    assert again.returncode == 0 and "rebuilt" not in again.stderr, again.stderr  # nothing twice
    _assert_whole(trials(project), server.uri, 4)


@pytest.mark.slow
def test_a_server_frozen_mid_study_is_written_as_soon_as_it_answers_and_exits_0(
    project: Path, server: MlflowServer
) -> None:
    search = start_search(
        project,
        "--trials", "4", "--tracking-uri", server.uri,
        faults="1:gate,2:gate", gate_dir=project, env=FAST_HTTP,
    )  # fmt: skip
    assert server.process is not None
    wait_for(lambda: (project / "waiting-1").exists(), "trial 1 to train", process=search)
    os.killpg(server.process.pid, signal.SIGSTOP)
    (project / "go-1").touch()
    wait_for(lambda: (project / "waiting-2").exists(), "trial 2 to train", 300, process=search)
    os.killpg(server.process.pid, signal.SIGCONT)
    (project / "go-2").touch()
    _, err = search.communicate(timeout=400)
    assert search.returncode == 0, err
    _assert_whole(trials(project), server.uri, 4)
    assert "MLflow writes failed" in err and "the journal wrote them once the store answered again" in err


@pytest.fixture
def two_hosts(
    postgres: PostgresServer, tmp_path: Path
) -> Iterator[tuple[MlflowPgServer, dict[str, str], list[Host]]]:
    """Two simulated hosts (own hostname, working directory and $TMPDIR) on one PostgreSQL study
    and one PostgreSQL-backed `mlflow server`: the server, the stores' environment, the hosts."""
    name = f"journal_{next(_DATABASES)}"
    storage = postgres.create_database(name)
    server = MlflowPgServer(postgres.create_database(f"{name}_mlflow"), tmp_path / "mlflow" / "artifacts")
    server.start()
    try:
        stores = {"OPTUNA_STORAGE": storage, "MLFLOW_TRACKING_URI": server.uri, **FAST_HTTP}
        yield server, stores, [Host(host, tmp_path) for host in ("alpha", "beta")]
    finally:
        if server.process is not None and server.process.poll() is None:
            os.killpg(server.process.pid, signal.SIGCONT)
        server.stop()


_DATABASES = itertools.count()


def _at_gate(hosts: list[Host], searches: list[subprocess.Popen[str]], gate: int) -> None:
    for host, search in zip(hosts, searches, strict=True):
        wait_for(
            lambda host=host: (host.cwd / f"waiting-{gate}").exists(),
            f"{host.name}'s gate {gate}",
            300,
            search,
        )


def _open_gate(hosts: list[Host], gate: int) -> None:
    for host in hosts:
        (host.cwd / f"go-{gate}").touch()


@pytest.mark.slow
def test_two_hosts_through_a_killed_server_one_rerun_leaves_one_run_per_trial(
    two_hosts: tuple[MlflowPgServer, dict[str, str], list[Host]],
) -> None:
    """The server SIGKILLed while each host trains its 2nd trial: both finish the budget (exit 3).
    One re-run on one host: its own journal is replayed, the other host's trials (whose journal it
    cannot see) are rebuilt from Optuna."""
    server, stores, hosts = two_hosts
    searches = [host.search("--trials", "6", faults="1:gate", env=stores) for host in hosts]
    _at_gate(hosts, searches, 1)
    _kill(server)
    _open_gate(hosts, 1)
    for search in searches:
        _, err = search.communicate(timeout=400)
        assert search.returncode == 3, err
        assert "records are pending in " in err.strip().splitlines()[-1]
    server.start()
    again = hosts[0].search("--trials", "6", env=stores)
    _, err = again.communicate(timeout=400)
    assert again.returncode == 0, err
    assert "from their Optuna records" in err  # beta's trials: its journal is on its own disk
    found = optuna.load_study(study_name="faulty", storage=stores["OPTUNA_STORAGE"]).get_trials()
    _assert_whole(found, server.uri, 6)


@pytest.mark.slow
def test_two_hosts_through_a_frozen_server_write_every_record_once_it_answers_and_exit_0(
    two_hosts: tuple[MlflowPgServer, dict[str, str], list[Host]],
) -> None:
    """The server SIGSTOPped while each host trains its 2nd trial and SIGCONTed while each trains
    its 3rd: each host's journal writes what the frozen server could not take as soon as it
    answers, so both exit 0 with every record in place and no re-run."""
    server, stores, hosts = two_hosts
    assert server.process is not None
    searches = [host.search("--trials", "6", faults="1:gate,2:gate", env=stores) for host in hosts]
    _at_gate(hosts, searches, 1)
    os.killpg(server.process.pid, signal.SIGSTOP)
    _open_gate(hosts, 1)
    _at_gate(hosts, searches, 2)
    os.killpg(server.process.pid, signal.SIGCONT)
    _open_gate(hosts, 2)
    for search in searches:
        _, err = search.communicate(timeout=400)
        assert search.returncode == 0, err
        assert "the journal wrote them once the store answered again" in err
    found = optuna.load_study(study_name="faulty", storage=stores["OPTUNA_STORAGE"]).get_trials()
    _assert_whole(found, server.uri, 6)


def _gated_with_both_workers_up(project: Path) -> bool:
    """A trial waits at gate 1 and each of the two workers has asked a trial (after opening tracking)."""
    workers = {study_store.record(t).worker for t in trials(project)} - {None}
    return (project / "waiting-1").exists() and len(workers) >= 2


@pytest.mark.slow
def test_workers_through_a_killed_server_exit_3_from_the_coordinator_and_exp_sync_writes_it_all(
    project: Path, server: MlflowServer
) -> None:
    """`--workers 2`: each worker keeps its own journal and exits 3 silently; the coordinator's
    last line counts every worker's pending trials, and `exp sync` writes them all."""
    search = start_search(
        project, "--trials", "4", "--workers", "2", "--tracking-uri", server.uri,
        faults="1:gate", gate_dir=project, env=FAST_HTTP,
    )  # fmt: skip
    # Both workers must be past their start (each opens the study's MLflow run first) before the
    # server dies: on loaded cores one worker can still be importing when the other's second
    # trial waits at the gate (seen on CI), and a worker that starts into a dead server has no
    # study run to journal under.
    wait_for(lambda: _gated_with_both_workers_up(project), "trial 1 to train, both workers asking", 300, search)
    _kill(server)
    (project / "go-1").touch()
    _, err = search.communicate(timeout=400)
    assert search.returncode == 3, err
    last = err.strip().splitlines()[-1]
    assert " trial(s)' records are pending in " in last and "exp sync faulty" in last, last
    assert len(list((project / "exptrack-journal" / "faulty").glob("*.jsonl"))) >= 1
    server.start()
    done = run_exp(project, "sync", "faulty", "--tracking-uri", server.uri)
    assert done.returncode == 0, done.stderr
    _assert_whole(trials(project), server.uri, 4)
    assert not (project / "exptrack-journal").exists()  # every journal written and removed
