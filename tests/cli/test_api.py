"""The Python API: `exptrack.run_search` runs a study and `exptrack.trials` reads it, in-process, as
`exp search` and `exp trials` do; paths may be `str` or `Path`; importing exptrack stays light."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

import exptrack
from exptrack import Study
from tests.conftest import REPO, run_exp

TINY = {"epochs": 1, "subset": 64, "image_size": 16, "weights": "none"}


@pytest.mark.slow
def test_search_and_trials_from_python_match_the_cli(project: Path) -> None:
    stores = {"storage": project / "optuna.db", "tracking_uri": str(project / "mlflow.db")}  # Path and str
    before = signal.getsignal(signal.SIGINT)
    summary = exptrack.run_search(
        "studies/finetune.py", trials=1, overrides=TINY, seed=0, pruner="none", **stores
    )
    assert (summary.study_name, summary.finished, summary.ran) == ("finetune", 1, 1)
    assert summary.best[0].user_attrs["mlflow_run_id"] and summary.parent_run_id
    assert signal.getsignal(signal.SIGINT) is before  # a notebook's Ctrl-C is its own again
    # nor does a search leave a thread behind: a notebook calling it many times would pile them up
    assert [t.name for t in threading.enumerate() if t.name.startswith("exptrack-")] == []

    # a Study object resumes the same study: its budget is met, nothing runs
    study = Study(name="finetune", search_space=str(project / "search_spaces" / "finetune.yaml"))
    again = exptrack.run_search(study, trials=1, overrides=TINY, **stores)
    assert (again.finished, again.ran) == (1, 0)

    frame = exptrack.trials("finetune", **stores)
    listed = run_exp(project, "trials", "finetune", "--format", "csv", check=True)
    assert list(frame.columns) == list(pd.read_csv(io.StringIO(listed.stdout)).columns)
    assert frame.loc[0, "run_id"] == summary.best[0].user_attrs["mlflow_run_id"]
    assert frame.loc[0, "weights"] == "none"


@pytest.mark.slow
def test_search_from_python_runs_workers_as_exp_search_does(project: Path) -> None:
    stores = {"storage": project / "optuna.db", "tracking_uri": project / "mlflow.db"}
    before = signal.getsignal(signal.SIGINT)
    summary = exptrack.run_search(
        "studies/finetune.py", trials=2, workers=2, overrides=TINY, seed=0, pruner="none", **stores
    )
    assert (summary.finished, summary.parent_run_id is not None) == (2, True)
    assert signal.getsignal(signal.SIGINT) is before
    frame = exptrack.trials("finetune", **stores)
    assert list(frame["state"]) == ["COMPLETE", "COMPLETE"] and frame["run_id"].notna().all()


@pytest.mark.slow
def test_search_names_an_unknown_option_and_the_valid_ones(project: Path) -> None:
    with pytest.raises(exptrack.UserError, match=r"unknown option 'trails'; use .*sampler"):
        exptrack.run_search("studies/finetune.py", trails=3)


@pytest.mark.slow
def test_importing_exptrack_loads_neither_torch_nor_the_stores() -> None:
    code = (
        "import sys, exptrack\n"
        "assert callable(exptrack.run_search) and callable(exptrack.trials)\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert not {"torch", "optuna", "mlflow", "pandas"} & set(done.stdout.split())  # a study file stays fast
