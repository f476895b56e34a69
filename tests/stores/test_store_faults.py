"""A store that cannot serve a call ends the command in one line and exit 2, never a traceback, and
the same command re-run afterwards finishes the study exactly (issue 25, item 3): a full disk
(a real tmpfs in a private mount namespace, filled for real) recognised at once, a damaged sqlite
file, and a PostgreSQL server stopped past a short EXPTRACK_STORE_WAIT.

What a fault leaves, proved below: the trial whose record could not be written stays RUNNING and
the study run stays RUNNING (the store that would close them cannot be written); the next run of
the same command repairs both (the trial FAIL, the study run closed FINISHED with its count)."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
import pytest
from mlflow import MlflowClient

from exptrack.errors import UserError
from exptrack.stores import locks
from tests.conftest import exp_env, run_exp
from tests.faultkit import FAULTY, SMALL, run_search, runs_by_trial, start_search, wait_for

if TYPE_CHECKING:
    from tests.pgserver import PostgresServer

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare for a private tmpfs"
)

# In a private mount namespace: a tmpfs of $SIZE at $DISK, the command run in it twice (the second
# time once the test has freed space), the disk's files copied out after each run.
ON_SMALL_DISK = """
mount -t tmpfs -o size="$SIZE" tmpfs "$DISK" || exit 97
cd "$DISK"
"$@" >"$OUT/out1" 2>"$OUT/err1"; echo $? >"$OUT/rc1"
while [ ! -e "$OUT/freed" ]; do sleep 0.1; done
cp -a "$DISK"/. "$OUT/after1"
"$@" >"$OUT/out2" 2>"$OUT/err2"; echo $? >"$OUT/rc2"
cp -a "$DISK"/. "$OUT/after2"
"""


def _on_small_disk(out: Path, size: str, *args: str, faults: str = "") -> subprocess.Popen[str]:
    """`exp search FAULTY ARGS` with both stores on a fresh tmpfs of `size` (this process's view of
    it: /proc/PID/root + disk)."""
    disk = out / "disk"
    disk.mkdir()
    env = exp_env(out)
    env.update(SIZE=size, DISK=str(disk), OUT=str(out), OMP_NUM_THREADS="1", EXPTRACK_FAULTS=faults)
    env["EXPTRACK_GATE_DIR"] = str(out)
    command = [sys.executable, "-m", "exptrack", "search", FAULTY, *SMALL, *args]
    return subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", ON_SMALL_DISK, "sh", *command],
        env=env,
        text=True,
    )


def _fill(path: Path) -> None:
    """Write zeros to `path` until the file system says it is full."""
    chunk = b"\0" * 65536
    with path.open("wb") as file:
        try:
            while True:
                file.write(chunk)
                file.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


def _one_line_exit_2(out: Path, run: int) -> str:
    err = (out / f"err{run}").read_text().strip()
    assert (out / f"rc{run}").read_text().strip() == "2", err
    assert "Traceback" not in err, err
    return err.splitlines()[-1]


def _ended(out: Path, run: int, timeout: float = 300) -> None:
    wait_for(lambda: (out / f"rc{run}").exists(), f"run {run} to end", timeout)


@pytest.mark.slow
def test_a_disk_that_fills_mid_study_ends_at_once_in_one_line_and_the_rerun_finishes_exactly_3(
    tmp_path: Path,
) -> None:
    process = _on_small_disk(tmp_path, "16m", "--trials", "3", faults="1:gate")
    wait_for(lambda: (tmp_path / "waiting-1").exists(), "trial 1 to train", 300)  # trial 0 is COMPLETE
    disk = Path(f"/proc/{process.pid}/root") / tmp_path.relative_to("/") / "disk"
    _fill(disk / "filler")
    started = time.monotonic()
    (tmp_path / "go-1").touch()
    _ended(tmp_path, 1)
    assert time.monotonic() - started < 60  # never the 120 s wait of a database restart
    last = _one_line_exit_2(tmp_path, 1)
    # the first write to meet the full disk: the tracking journal's (written before either store),
    # or, when the journal's last block still had room for its record, the Optuna store's (seen
    # on CI): the user sees one line naming the full disk either way
    first = ("error: tracking journal ", "error: Optuna storage ", "error: MLflow tracking store ")
    assert last.startswith(first) and ": the disk is full (" in last, last
    assert "not waited out" in last and "re-run the same command" in last, last
    if last.startswith(first[0]):
        assert "No space left on device" in last, last
    (disk / "filler").unlink()
    (tmp_path / "freed").touch()
    assert process.wait(timeout=400) == 0

    # Left by the fault: trial 1 and the study run RUNNING, for the next run to repair.
    after1 = tmp_path / "after1"
    states = [t.state.name for t in _trials(after1)]
    assert states == ["COMPLETE", "RUNNING"], states
    assert _study_run(after1).info.status == "RUNNING"

    # The same command once there is room: exactly 3 COMPLETE, trial 1 FAIL, nothing RUNNING.
    assert (tmp_path / "rc2").read_text().strip() == "0", (tmp_path / "err2").read_text()
    after2 = tmp_path / "after2"
    states = [t.state.name for t in _trials(after2)]
    assert states.count("COMPLETE") == 3 and states[1] == "FAIL" and "RUNNING" not in states, states
    runs = runs_by_trial(f"sqlite:///{after2}/mlflow.db")
    assert all(len(found) == 1 and found[0].info.status != "RUNNING" for found in runs.values()), runs
    parent = _study_run(after2)
    assert parent.info.status == "FINISHED"


@pytest.mark.slow
def test_a_disk_that_fills_while_the_mlflow_store_is_created_is_one_line_and_leaves_no_store(
    tmp_path: Path,
) -> None:
    # MLflow's ~100 migrations take ~1 MB of sqlite pages: 256 KiB runs out half-way through them
    process = _on_small_disk(tmp_path, "256k", "--trials", "1")
    _ended(tmp_path, 1)
    last = _one_line_exit_2(tmp_path, 1)
    assert "MLflow tracking store sqlite:///mlflow.db" in last and "disk is full" in last, last
    assert "INSERT" not in (tmp_path / "err1").read_text() and "ALTER" not in (tmp_path / "err1").read_text()
    (tmp_path / "freed").touch()
    assert process.wait(timeout=400) == 0
    # created whole or not at all: no half-made store was left behind to be taken for a store
    assert sorted(p.name for p in (tmp_path / "after1").iterdir()) == []
    assert (tmp_path / "rc2").read_text().strip() == "2"  # still too small for the store: said again


@pytest.mark.slow
def test_a_sqlite_store_with_damaged_pages_behind_an_intact_header_is_one_line_naming_it(
    tmp_path: Path,
) -> None:
    store = tmp_path / "optuna.db"
    optuna.create_study(study_name="faulty", storage=f"sqlite:///{store}")
    with sqlite3.connect(store) as db:  # the tables' own pages; the schema's pages stay readable
        roots = [row[0] for row in db.execute("SELECT rootpage FROM sqlite_master WHERE type = 'table'")]
    data = bytearray(store.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for root in roots:  # page numbers count from 1; page 1 holds the header
        data[(root - 1) * page : (root - 1) * page + 8] = b"\xff" * 8  # an invalid b-tree page type
    store.write_bytes(bytes(data))
    assert data.startswith(b"SQLite format 3\x00")  # the header is intact

    for args in (["search", FAULTY, *SMALL, "--trials", "1"], ["trials", "faulty"]):
        result = run_exp(tmp_path, *args)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert "sqlite:///optuna.db" in line and "damaged" in line and "malformed" in line, line
        assert "restore a backup" in line and ".recover" in line, line


def _trials(folder: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="faulty", storage=f"sqlite:///{folder}/optuna.db").get_trials()


def _study_run(folder: Path):  # type: ignore[no-untyped-def]
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    experiment = client.get_experiment_by_name("faulty")
    (parent,) = [
        r
        for r in client.search_runs([experiment.experiment_id])
        if r.data.tags.get("exptrack.role") == "study"
    ]
    return parent


@pytest.mark.slow
def test_postgres_down_past_the_wait_ends_in_one_line_and_the_rerun_finishes_exactly_3(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    storage = postgres.create_database("down_past_the_wait")
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    args = ("--trials", "3", "--storage", storage, "--tracking-uri", tracking)
    wait = {"EXPTRACK_STORE_WAIT": "4"}  # the default 120 s, cut short for the test
    process = start_search(tmp_path, *args, faults="1:gate", gate_dir=tmp_path, env=wait)
    wait_for(lambda: (tmp_path / "waiting-1").exists(), "trial 1 to train", 300, process=process)
    postgres.halt()
    try:
        (tmp_path / "go-1").touch()  # trial 1 ends its epoch and reports to a database that is gone
        _, err = process.communicate(timeout=300)
        left = [t.state.name for t in _pg_trials_after(postgres, storage)]
    finally:
        postgres.start()
    assert process.returncode == 2, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: Optuna storage {storage} unreachable; waited "), last
    assert (
        "start it and re-run the same command: the study resumes" in last and "EXPTRACK_STORE_WAIT=4" in last
    )
    # Left by the outage: trial 1 RUNNING (its report never reached the database) but trained: its
    # result kept in the journal, its MLflow run closed as trained; the study run RUNNING.
    assert left == ["COMPLETE", "RUNNING"], left
    assert "trial 1 trained (COMPLETE); the Optuna store is down, so its result is kept" in err
    assert _study_run(tmp_path).info.status == "RUNNING"

    again = run_search(tmp_path, *args, env=wait)
    assert again.returncode == 0, again.stderr
    assert "told Optuna the results of 1 trial(s) kept in" in again.stderr
    found = optuna.load_study(study_name="faulty", storage=storage).get_trials()
    # the outage is not the trial's failure: trial 1 keeps the result it trained to
    assert [t.state.name for t in found] == ["COMPLETE"] * 3, found
    assert runs_by_trial(tracking)[1][0].data.metrics["val_loss"] == found[1].value
    runs = runs_by_trial(tracking)
    assert all(len(found) == 1 and found[0].info.status != "RUNNING" for found in runs.values()), runs
    assert _study_run(tmp_path).info.status == "FINISHED"


def _pg_trials_after(postgres: PostgresServer, storage: str) -> list[optuna.trial.FrozenTrial]:
    """The trials as the database kept them, read once it is back (then stopped again)."""
    postgres.start()
    try:
        return optuna.load_study(study_name="faulty", storage=storage).get_trials()
    finally:
        postgres.halt()


@pytest.mark.slow
def test_a_store_wait_that_is_not_seconds_is_one_line_before_any_store(tmp_path: Path) -> None:
    for args in (["search", FAULTY, *SMALL, "--trials", "1"], ["trials", "faulty"]):
        result = run_exp(tmp_path, *args, env={"EXPTRACK_STORE_WAIT": "soon"})
        assert result.returncode == 2, result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert (
            line
            == "error: EXPTRACK_STORE_WAIT='soon' is not a number of seconds (0 or more); fix or unset it"
        )
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".db") == []


def test_the_store_wait_is_seconds_from_the_environment_else_120(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXPTRACK_STORE_WAIT", raising=False)
    assert locks.outage_s() == 120
    for text, seconds in (("4", 4.0), (" 0.5 ", 0.5), ("0", 0.0), ("", 120.0)):
        monkeypatch.setenv("EXPTRACK_STORE_WAIT", text)
        assert locks.outage_s() == seconds
    for text in ("-1", "nan", "inf", "2 min"):
        monkeypatch.setenv("EXPTRACK_STORE_WAIT", text)
        with pytest.raises(UserError, match="is not a number of seconds"):
            locks.outage_s()
