"""One study shared by several machines through PostgreSQL and an MLflow tracking server, the way
the cluster recipes of docs/scaling.md run it: each "host" is `exp search` processes under `unshare --uts`
with a hostname, a working directory and a $TMPDIR of their own, so only the database and the
tracking server are shared. Exact totals, a worker SIGKILLed on another host, every worker asking
at once on an empty database, the database restarted mid-search, a new MLflow database raced on."""

from __future__ import annotations

import ast
import json
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from tests.conftest import REPO
from tests.faultkit import run_cli_batch, start_search, wait_for
from tests.pgserver import Host, MlflowPgServer, PostgresServer


def _finish(processes: list[subprocess.Popen[str]], timeout: float = 400) -> list[str]:
    """Wait for every process; each must exit 0 without a traceback, every MLflow write made. The
    tracking server's own database restarting answers 503 for a while, and on loaded cores that
    can outlast MLflow's short retry (seen on CI): such a write is kept in the journal and must be
    said to be written once the store answered. Their stderr, in order."""
    errors = []
    for process in processes:
        out, err = process.communicate(timeout=timeout)
        assert process.returncode == 0, err
        assert "Traceback" not in err, err
        if "MLflow writes failed" in err:
            assert "the journal wrote them once the store answered again" in err, err
        assert "View run" not in out  # MLflow's line per closed run, kept out of the progress display
        errors.append(err)
    return errors


def _study(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def _runs(tracking: str, name: str) -> tuple[object, list]:  # type: ignore[type-arg]
    """(the study's one parent run, its trial runs)."""
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("exptrack.role") == "study"]
    children = [r for r in runs if r.data.tags.get("exptrack.role") == "trial"]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    return parent, children


@pytest.mark.slow
def test_three_hosts_two_workers_asking_at_once_on_an_empty_database_finish_exactly_12_through_a_restart(
    postgres: PostgresServer, tracking_server: MlflowPgServer, tmp_path: Path
) -> None:
    storage = postgres.create_database("three_hosts")
    # docs/scaling.md's recipe: the stores in the environment, the same command on every machine
    stores = {"OPTUNA_STORAGE": storage, "MLFLOW_TRACKING_URI": tracking_server.uri}
    hosts = [Host(name, tmp_path) for name in ("host-a", "host-b", "host-c")]
    workers = [
        host.search("--trials", "12", "--study-name", "three-hosts", env=stores)
        for host in hosts
        for _ in range(2)
    ]

    def two_done() -> bool:
        return [t.state.name for t in _study(storage, "three-hosts")].count("COMPLETE") >= 2

    wait_for(two_done, "two trials to finish", 300, process=workers[0])
    postgres.restart()  # mid-search: every connection of the workers and of the tracking server is cut
    _finish(workers)  # they waited it out: no traceback, no write left unmade

    found = _study(storage, "three-hosts")
    assert [t.number for t in found] == list(range(12))  # none over budget, no number twice
    assert [t.state.name for t in found] == ["COMPLETE"] * 12
    assert {t.user_attrs["worker"].split(":")[0] for t in found} <= {h.name for h in hosts}
    parent, children = _runs(tracking_server.uri, "three-hosts")
    assert parent.info.status == "FINISHED"  # closed by whichever worker finished last
    assert sorted(r.info.run_name for r in children) == [f"trial-{n:03d}" for n in range(12)]
    assert all(r.info.status == "FINISHED" and "val_loss" in r.data.metrics for r in children)
    client = MlflowClient(tracking_server.uri)
    assert "config.yaml" in [a.path for a in client.list_artifacts(children[0].info.run_id)]
    served = tracking_server.artifacts
    assert len(list(served.rglob("config.yaml"))) >= 12  # artifacts went over HTTP to the server
    for host in hosts:  # nothing written where only that machine could read it
        assert not (host.cwd / "mlruns").exists() and not (host.cwd / "mlflow.db").exists()
        assert [p.name for p in (host.cwd / "tmp").rglob("*") if "lock" in p.name] == []

    # The results commands and `exp ui` read the same two stores from any machine.
    cases = [["trials", "three-hosts", "--format", "json"], ["studies", "--format", "json"], ["ui"]]
    trials_out, studies_out, ui_out = run_cli_batch([(tmp_path, args) for args in cases], env=stores)
    assert [r.returncode for r in (trials_out, studies_out, ui_out)] == [0, 0, 0], ui_out.stderr
    rows = json.loads(trials_out.stdout)
    assert sorted(r["run_id"] for r in rows) == sorted(r.info.run_id for r in children)
    assert "three-hosts" in studies_out.stdout
    experiment = MlflowClient(tracking_server.uri).get_experiment_by_name("three-hosts")
    assert f"{tracking_server.uri}/#/experiments/{experiment.experiment_id}" in ui_out.stdout + ui_out.stderr


@pytest.mark.slow
def test_a_worker_sigkilled_on_another_host_is_failed_and_retried_after_the_grace_period(
    postgres: PostgresServer, tracking_server: MlflowPgServer, tmp_path: Path
) -> None:
    storage = postgres.create_database("killed_host")
    args = ["--trials", "3", "--storage", storage, "--tracking-uri", tracking_server.uri]
    args += ["--study-name", "killed-host", "--grace-period", "4"]
    host_a, host_b = Host("host-a", tmp_path), Host("host-b", tmp_path)
    doomed = host_b.search(*args, faults="0:gate")  # its first trial waits on a gate, mid-training
    wait_for(lambda: (host_b.cwd / "waiting-0").exists(), "host B's trial to train", process=doomed)
    survivor = host_a.search(*args)
    doomed.send_signal(signal.SIGKILL)  # its pid is the exptrack process (unshare execs it)
    doomed.communicate(timeout=30)
    (err,) = _finish([survivor])
    assert "were left RUNNING by a dead process" in err

    found = _study(storage, "killed-host")
    (killed,) = [t for t in found if t.state.name == "FAIL"]
    assert killed.user_attrs["worker"].startswith("host-b:")
    assert "sent no heartbeat for 4 s" in killed.user_attrs["fail_reason"]
    (retry,) = [t for t in found if t.user_attrs.get("retry_of") == killed.number]
    assert retry.params == killed.params and retry.state.name == "COMPLETE"
    assert [t.state.name for t in found].count("COMPLETE") == 3 and len(found) == 4
    parent, children = _runs(tracking_server.uri, "killed-host")
    assert parent.info.status == "FINISHED"
    by_id = {r.info.run_id: r for r in children}
    killed_run = by_id[killed.user_attrs["mlflow_run_id"]]
    assert killed_run.info.status == "FAILED" and killed_run.info.end_time
    assert "sent no heartbeat" in killed_run.data.tags["exptrack.fail_reason"]
    assert by_id[retry.user_attrs["mlflow_run_id"]].data.tags["exptrack.retry_of"] == str(killed.number)


@pytest.mark.slow
def test_two_searches_on_two_optuna_stores_race_on_one_new_postgres_mlflow_store(
    postgres: PostgresServer, project: Path
) -> None:
    tracking = postgres.create_database("new_mlflow")  # empty: both searches find no table
    searches = [
        start_search(
            project, "--trials", "1", "--storage", f"sqlite:///{name}.db", "--tracking-uri", tracking
        )
        for name in ("a", "b")
    ]
    _finish(searches)
    client = MlflowClient(tracking)
    (experiment,) = [e for e in client.search_experiments() if e.name == "faulty"]
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["exptrack.role"] for r in runs) == ["study", "study", "trial", "trial"]


# Each flag in turn, with psycopg unimportable, as if the `postgres` extra were not installed.
_WITHOUT_PSYCOPG = """
import contextlib, io, sys
sys.modules["psycopg"] = None
from exptrack import cli
study = sys.argv[1]
for flag in ("--storage", "--tracking-uri"):
    sys.argv = ["exp", "search", study, flag, "postgresql://user:secret@127.0.0.1:1/db"]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.suppress(SystemExit):
        cli.main()
    print(repr(err.getvalue()))
"""


@pytest.mark.slow
def test_a_postgres_url_without_the_driver_is_one_line_naming_the_extra(project: Path) -> None:
    from tests.conftest import exp_env

    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_PSYCOPG, str(REPO / "studies" / "finetune.py")],
        cwd=project,
        env={**exp_env(project), "COLUMNS": "400"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    printed = done.stdout.strip().splitlines()
    assert len(printed) == 2
    for text in printed:
        (line,) = ast.literal_eval(text).strip().splitlines()  # one line for each flag
        assert line.startswith("error: ") and "pip install -e '.[postgres]'" in line and "secret" not in line
    assert not (project / "optuna.db").exists() and not (project / "mlflow.db").exists()
