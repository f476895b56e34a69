"""Creating the stores survives what a user does to it: a kill (SIGKILL, or SIGTERM) in the
seconds MLflow spends creating its tables, a store a kill left half-made by an older version, and
two searches on two Optuna stores creating one new MLflow store at once. No lock file is left in
$TMPDIR."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from optuna.storages._rdb import models
from sqlalchemy import create_engine

from tests.faultkit import SMALL, run_cli_batch, runs_by_trial, send, start_search, trials, wait_for

FAULTY_ONE = ["search", str(Path(__file__).parents[1] / "studies" / "faulty.py"), *SMALL, "--trials", "1"]


def _building(folder: Path) -> bool:
    """MLflow's store is being built under its temporary name beside mlflow.db."""
    return any(folder.glob(".mlflow.db.*.new"))


def _one_finished_trial(folder: Path) -> None:
    assert [t.state.name for t in trials(folder)] == ["COMPLETE"]
    (run,) = runs_by_trial(f"sqlite:///{folder}/mlflow.db")[0]
    assert run.info.status == "FINISHED"


_CREATE_MLFLOW_STORE = (
    "import sys; from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore; "
    "SqlAlchemyStore(sys.argv[1], sys.argv[2])"
)
_OPEN_MLFLOW_STORE = (
    "import sys; from mlflow import MlflowClient; MlflowClient(sys.argv[1]).search_experiments()"
)


def _kill_mlflow_mid_migration(path: Path) -> None:
    """The attack on an older exptrack: MLflow creating a new store at `path`, SIGKILLed while it
    migrates, leaves a file that MLflow itself can no longer open (`duplicate column name: step`,
    `table ... already exists`). Repeated with another timing until the kill lands that way."""
    for delay in (0.3, 1.5, 0.8, 2.5, 0.5, 1.0, 2.0, 3.0):
        path.unlink(missing_ok=True)
        create = subprocess.Popen(
            [sys.executable, "-c", _CREATE_MLFLOW_STORE, f"sqlite:///{path}", str(path.parent / "mlruns")],
            stderr=subprocess.DEVNULL,
        )
        wait_for(path.exists, "MLflow to start creating its store", 120)
        time.sleep(delay)
        create.kill()
        create.wait()
        # MLflow alone on a copy (it keeps one engine per URL, and would write to what it opens)
        copy = path.with_name(f"copy-{delay}.db")
        shutil.copy(path, copy)
        try:
            MlflowClient(f"sqlite:///{copy}").search_experiments()
        except Exception:
            return  # broken for MLflow alone
    raise AssertionError("no kill left the MLflow store unusable")


def _whole_or_absent(path: Path) -> None:
    if path.exists():
        copy = path.with_name("whole-check.db")  # MLflow alone on a copy: it must open as it is
        shutil.copy(path, copy)
        MlflowClient(f"sqlite:///{copy}").search_experiments()
        copy.unlink()


@pytest.mark.slow
def test_kills_while_the_stores_are_created_leave_nothing_half_made_and_the_same_command_works(
    project: Path,
) -> None:
    temp = project / "tmp"
    temp.mkdir()
    (project / "no-cache").write_text("")  # a cache that cannot be made: MLflow migrates each store
    uncached = {"TMPDIR": str(temp), "EXPTRACK_CACHE_DIR": str(project / "no-cache" / "exptrack")}
    # SIGINT takes the same handler as SIGTERM (130 instead of 143)
    folders = {sig: project / sig.name for sig in (signal.SIGKILL, signal.SIGTERM)}
    started = {}
    for signum, folder in folders.items():
        folder.mkdir()
        started[signum] = start_search(folder, "--trials", "1", env=uncached)
    for signum, search in started.items():
        wait_for(lambda: _building(folders[signum]), "MLflow's store to be built", process=search)  # noqa: B023
        send(search, signum)
    for signum, search in started.items():
        _, err = search.communicate(timeout=60)
        assert search.returncode in (-signal.SIGKILL, 128 + signum), err
        # never a half-made store in place: none, or (the signal landed as the whole store was
        # linked into place) one MLflow opens as it is
        _whole_or_absent(folders[signum] / "mlflow.db")
        if signum != signal.SIGKILL:  # a handled signal says what happened, and no traceback
            assert f"{signum.name}: stopping while the stores are created" in err
            assert "Traceback" not in err
    # And a store a kill left half-made before this version (Optuna's too): rebuilt or completed.
    half = project / "half"
    half.mkdir()
    _kill_mlflow_mid_migration(half / "mlflow.db")
    engine = create_engine(f"sqlite:///{half}/optuna.db")  # Optuna's first tables, not the rest
    models.BaseModel.metadata.create_all(engine, tables=models.BaseModel.metadata.sorted_tables[:4])
    engine.dispose()

    # absolute store URLs: MLflow keeps one store per URL string within a process
    rerun = [*folders.values(), half]
    batch = [(f, [*FAULTY_ONE, "--tracking-uri", f"sqlite:///{f}/mlflow.db"]) for f in rerun]
    results = run_cli_batch(batch, env={"TMPDIR": str(temp)})
    assert [r.returncode for r in results] == [0] * 3, [r.stderr for r in results]
    for folder in rerun:
        _one_finished_trial(folder)
        assert not _building(folder)  # a killed build's file is removed by the next start
    assert [p.name for p in temp.rglob("*") if "lock" in p.name] == []  # none piles up in $TMPDIR


@pytest.mark.slow
def test_two_searches_on_two_optuna_stores_create_one_new_mlflow_store_at_once(project: Path) -> None:
    shared = f"sqlite:///{project}/shared.db"
    searches = [
        start_search(project, "--trials", "1", "--storage", f"sqlite:///{name}.db", "--tracking-uri", shared)
        for name in ("a", "b")
    ]
    errors = []
    for search in searches:
        _, err = search.communicate(timeout=300)
        assert search.returncode == 0, err
        assert "Traceback" not in err
        errors.append(err)
    client = MlflowClient(shared)
    (experiment,) = [e for e in client.search_experiments() if e.name == "faulty"]
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("exptrack.role") == "study"]
    children = [r for r in runs if r.data.tags.get("exptrack.role") == "trial"]
    # Two Optuna studies of one name: a parent run each, each with its own trial-000.
    assert len(parents) == 2 and len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {p.info.run_id for p in parents}
    assert sum("already held parent run" in err for err in errors) == 1  # the later one says so
