"""Tidying studies (`exp studies rm | rename | copy`, `exp trials drop`) on real stores written by a
real tiny search, each command also killed (SIGKILL) after its k-th write and run again: both
stores must then agree, as if it had never been killed."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.exceptions import MlflowException

from exptrack import processes, records
from exptrack.results.manage import KILL_ENV
from exptrack.tracking import journal
from tests.conftest import REPO, TINY, exp_env, run_exp

STUDY = "finetune"
TRIALS = 3
KEPT = ("optuna.db", "mlflow.db", "mlruns")


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 tiny trials and an `exp train` reproduction of the best, in sqlite stores."""
    cwd = tmp_path_factory.mktemp("tidy")
    for folder in ("studies", "search_spaces", "dashboards"):
        shutil.copytree(REPO / folder, cwd / folder)
    run_exp(cwd, "search", "studies/finetune.py", "--trials", str(TRIALS), "--seed", "0", *TINY, check=True)
    run_exp(cwd, "export", STUDY, "--top", "1", "--out", "best", check=True)
    run_exp(cwd, "train", str(next((cwd / "best").glob("*.yaml"))), check=True)
    return cwd


@pytest.fixture
def stores(searched: Path, tmp_path: Path) -> Path:
    """A fresh copy of the searched stores, so each test (and each kill) starts from the same."""
    return fresh(searched, tmp_path / "stores")


def fresh(searched: Path, where: Path) -> Path:
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    for name in KEPT:
        copy = shutil.copytree if (searched / name).is_dir() else shutil.copy2
        copy(searched / name, where / name)
    with sqlite3.connect(where / "mlflow.db") as db:  # artifact paths are absolute: point them here
        for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri")):
            db.execute(f"UPDATE {table} SET {column} = replace({column}, ?, ?)", (str(searched), str(where)))
    return where


def exp(cwd: Path, *args: str, kill_after: int | None = None, env: dict[str, str] | None = None) -> Any:
    extra = {**(env or {}), **({KILL_ENV: str(kill_after)} if kill_after else {})}
    return run_exp(cwd, *args, env=extra, timeout=300)


def client(cwd: Path, uri: str | None = None) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri or f"sqlite:///{cwd / 'mlflow.db'}")


def active_runs(cwd: Path, experiment: str, uri: str | None = None) -> list[Any]:
    mlflow = client(cwd, uri)
    found = mlflow.get_experiment_by_name(experiment)
    return [] if found is None else list(mlflow.search_runs([found.experiment_id], max_results=1000))


def agree(cwd: Path, storage: str | None = None, uri: str | None = None) -> dict[str, list[int]]:
    """Both stores tell one story: every study's kept trials name active runs of its experiment,
    tagged with its name and number, and every active trial run there is one of them; a study's
    experiment has exactly its one parent run. Returns study -> kept trial numbers."""
    storage = storage or f"sqlite:///{cwd / 'optuna.db'}"
    kept = {}
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = [t for t in study.trials if records.DROPPED_ATTR not in t.user_attrs]
        runs = {r.info.run_id: r for r in active_runs(cwd, study.study_name, uri)}
        linked = {t.user_attrs[records.RUN_ID_ATTR]: t.number for t in trials}
        trial_runs = {i for i, r in runs.items() if r.data.tags.get(records.ROLE_TAG) == records.ROLE_TRIAL}
        assert trial_runs == set(linked), (study.study_name, trial_runs, linked)
        for run_id, number in linked.items():
            assert runs[run_id].data.tags[records.STUDY_TAG] == study.study_name
            assert runs[run_id].data.tags[records.TRIAL_TAG] == str(number)
        parents = [r for r in runs.values() if r.data.tags.get(records.ROLE_TAG) == records.ROLE_STUDY]
        assert [p.data.tags[records.STUDY_UID_TAG] for p in parents] == [study.user_attrs["study_uid"]]
        kept[study.study_name] = sorted(linked.values())
    return kept


def killed_then_finished(cwd: Path, args: list[str], writes: int) -> None:
    """Killed after its `writes`-th write, then run again to the end."""
    assert exp(cwd, *args, kill_after=writes).returncode == -9
    done = exp(cwd, *args)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_rm_asks_first_then_deletes_the_study_and_its_runs_so_mlflow_gc_reclaims_them(stores: Path) -> None:
    every = active_runs(stores, STUDY)
    assert len(every) == TRIALS + 2  # parent, 3 trials, the exp train run
    refused = exp(stores, "studies", "rm", STUDY)  # stdin is not a terminal
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "--yes" in refused.stderr
    assert agree(stores) == {STUDY: [0, 1, 2]}
    done = exp(stores, "studies", "rm", STUDY, "--yes")
    assert done.returncode == 0 and f"{TRIALS + 2} MLflow run(s)" in done.stdout, done.stderr
    assert agree(stores) == {} and active_runs(stores, STUDY) == []
    mlflow = client(stores)
    assert {mlflow.get_run(r.info.run_id).info.lifecycle_stage for r in every} == {"deleted"}
    store = f"sqlite:///{stores / 'mlflow.db'}"
    gc = subprocess.run(
        [sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", store, "--tracking-uri", store],
        cwd=stores, env=exp_env(stores), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert gc.returncode == 0, gc.stderr
    assert list((stores / "mlruns").glob("*/*/artifacts")) == []  # every run's files went with it
    with pytest.raises(MlflowException):
        mlflow.get_run(every[0].info.run_id)
    missing = exp(stores, "studies", "rm", STUDY, "--yes")
    assert missing.returncode == 2 and "no study named 'finetune'" in missing.stderr


@pytest.mark.slow
@pytest.mark.parametrize("writes", [1, 3, TRIALS + 2])  # a reproduction, a trial run, the parent run
def test_rm_killed_after_a_write_is_finished_by_running_it_again(
    searched: Path, tmp_path: Path, writes: int
) -> None:
    stores = fresh(searched, tmp_path / "stores")
    killed_then_finished(stores, ["studies", "rm", STUDY, "--yes"], writes)
    assert agree(stores) == {} and active_runs(stores, STUDY) == []


@pytest.mark.slow
def test_rename_moves_the_experiment_and_tags_and_refuses_a_taken_or_missing_name(stores: Path) -> None:
    copied = exp(stores, "studies", "copy", STUDY, "other", "--where", "number==0")
    assert copied.returncode == 0, copied.stderr
    taken = exp(stores, "studies", "rename", STUDY, "other")
    assert taken.returncode == 2 and "a study named 'other' already exists" in taken.stderr
    missing = exp(stores, "studies", "rename", "nope", "x")
    assert missing.returncode == 2 and "no study named 'nope'" in missing.stderr
    killed_then_finished(stores, ["studies", "rename", STUDY, "tidy"], 3)
    assert agree(stores) == {"tidy": [0, 1, 2], "other": [0]}
    assert client(stores).get_experiment_by_name(STUDY) is None
    reproduction = [
        r for r in active_runs(stores, "tidy") if r.data.tags[records.ROLE_TAG] == records.ROLE_TRAIN
    ]
    assert reproduction[0].data.tags[records.REPRODUCES_TAG].startswith("tidy/trial-")
    listed = exp(stores, "trials", "tidy", "--format", "csv")
    assert listed.returncode == 0 and listed.stdout.count("COMPLETE") == TRIALS


@pytest.mark.slow
@pytest.mark.parametrize("writes", [2, 5])  # the parent copied, a trial copied; then Optuna's copy
def test_copy_with_where_copies_the_chosen_trials_and_their_runs_once_even_when_killed(
    searched: Path, tmp_path: Path, writes: int
) -> None:
    stores = fresh(searched, tmp_path / "stores")
    killed_then_finished(
        stores, ["studies", "copy", STUDY, "small", "--where", "number >= 1 and epochs==1"], writes
    )
    assert agree(stores) == {STUDY: [0, 1, 2], "small": [0, 1]}
    originals = {r.info.run_id for r in active_runs(stores, STUDY)}
    copies = [r for r in active_runs(stores, "small") if r.data.tags[records.ROLE_TAG] == records.ROLE_TRIAL]
    assert {r.data.tags[records.COPY_OF_TAG] for r in copies} <= originals
    assert all(r.data.metrics.get("val_accuracy") is not None for r in copies)
    assert exp(stores, "studies", "rm", STUDY, "--yes").returncode == 0
    assert agree(stores) == {"small": [0, 1]}  # the copy stands on its own


@pytest.mark.slow
def test_drop_hides_trials_from_results_deletes_their_runs_and_frees_their_budget(stores: Path) -> None:
    bad = exp(stores, "trials", "drop", STUDY, "7")
    assert bad.returncode == 2 and "has no trial 7" in bad.stderr
    killed_then_finished(stores, ["trials", "drop", STUDY, "0", "--where", "number==2"], 1)
    assert agree(stores) == {STUDY: [1]}
    listed = exp(stores, "trials", STUDY, "--format", "csv").stdout.splitlines()
    assert [line.split(",")[0] for line in listed[1:]] == ["1"]
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{stores / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE", "FAIL"]  # numbers kept


@pytest.mark.slow
def test_a_study_with_a_live_search_is_refused_unless_forced(stores: Path) -> None:
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{stores / 'optuna.db'}")
    trial = study.ask()  # RUNNING, owned by this (live) test process: a search in progress
    trial.set_user_attr(records.WORKER_ATTR, processes.worker_id())
    for args in (
        ["studies", "rm", STUDY, "--yes"],
        ["studies", "rename", STUDY, "x"],
        ["trials", "drop", STUDY, "0"],
    ):
        refused = exp(stores, *args)
        assert refused.returncode == 2 and "has a live search (trial 3" in refused.stderr, refused.stderr
        assert "--force" in refused.stderr
    assert exp(stores, "studies", "rm", STUDY, "--yes", "--force").returncode == 0
    assert agree(stores) == {}


@pytest.mark.slow
def test_tidying_on_postgresql_keeps_both_stores_in_step(postgres: Any, tmp_path: Path) -> None:
    storage, uri = postgres.create_database("tidy_optuna"), postgres.create_database("tidy_mlflow")
    flags = ["--storage", storage, "--tracking-uri", uri]
    for folder in ("studies", "search_spaces", "dashboards"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    run_exp(tmp_path, "search", "studies/finetune.py", "--trials", "2", *TINY, *flags, check=True)
    assert exp(tmp_path, "studies", "rename", STUDY, "pg", *flags).returncode == 0
    assert exp(tmp_path, "studies", "copy", "pg", "pg2", *flags).returncode == 0
    assert exp(tmp_path, "trials", "drop", "pg", "1", *flags).returncode == 0
    assert agree(tmp_path, storage, uri) == {"pg": [0], "pg2": [0, 1]}
    killed_then_finished(tmp_path, ["studies", "rm", "pg", "--yes", *flags], 1)
    assert agree(tmp_path, storage, uri) == {"pg2": [0, 1]}
    assert os.environ.get(KILL_ENV) is None


@pytest.mark.slow
def test_a_where_copy_carries_its_own_finished_trials_and_best_not_its_sources(stores: Path) -> None:
    copied = exp(stores, "studies", "copy", STUDY, "first", "--where", "number==0")
    assert copied.returncode == 0, copied.stderr
    storage = f"sqlite:///{stores / 'optuna.db'}"
    only = optuna.load_study(study_name="first", storage=storage).trials[0]
    (parent,) = [
        r for r in active_runs(stores, "first") if r.data.tags[records.ROLE_TAG] == records.ROLE_STUDY
    ]
    assert parent.data.metrics[records.FINISHED_TRIALS_METRIC] == 1  # the source's parent says 3
    assert parent.data.metrics["best_val_accuracy"] == only.value
    history = client(stores).get_metric_history(parent.info.run_id, records.FINISHED_TRIALS_METRIC)
    assert [m.value for m in history] == [1]  # none of the source's figures came with it
    (source,) = [r for r in active_runs(stores, STUDY) if r.data.tags[records.ROLE_TAG] == records.ROLE_STUDY]
    assert source.data.metrics[records.FINISHED_TRIALS_METRIC] == TRIALS


@pytest.mark.slow
def test_rm_drops_the_studys_journal_so_sync_cannot_bring_its_runs_back(stores: Path) -> None:
    folder = journal.folder_for(f"sqlite:///{stores / 'optuna.db'}", STUDY)
    left = journal.Journal(folder)  # what an outage left: trial 0's run never reached MLflow
    left.append({"k": "open", "n": 0, "run": None, "exp": "0", "name": "trial-000", "tags": {}, "params": {}})
    left.close()
    assert any(folder.iterdir())
    done = exp(stores, "studies", "rm", STUDY, "--yes")
    assert done.returncode == 0, done.stderr
    assert not folder.exists() and agree(stores) == {}
