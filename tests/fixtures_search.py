"""One tiny real `exp search` per test session, shared by the results, export and ui tests."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import optuna
import pytest

STUDY = "finetune"
TRIALS = 2  # enough for an order and a top-2; each costs ~5-10 s on 2 cores
PROFILED = 1  # --profile-trials: the first trial is traced, the second not


@dataclasses.dataclass(frozen=True)
class Searched:
    """A directory where `exp search` ran, with its sqlite stores (optuna.db, mlflow.db) in it, and
    what the search printed. It ran offline with the study's `weights: imagenet`, as a user without
    network would: the trials fell back to random init, and say so."""

    cwd: Path
    stdout: str = ""
    stderr: str = ""

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{self.cwd / 'optuna.db'}")

    def exp(self, *args: str, timeout: float = 300):  # type: ignore[no-untyped-def]
        from tests.conftest import run_exp

        return run_exp(self.cwd, *args, timeout=timeout)


@pytest.fixture(scope="session")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Searched:
    from tests.conftest import OFFLINE, REPO, TINY, run_exp  # here: conftest imports this module

    cwd = tmp_path_factory.mktemp("searched")
    for folder in ("studies", "search_spaces", "dashboards"):
        shutil.copytree(REPO / folder, cwd / folder)
    args = ["search", "studies/finetune.py", "--trials", str(TRIALS), "--pruner", "none", "--seed", "0"]
    args += ["--profile-trials", str(PROFILED)]
    tiny = TINY[: TINY.index("weights=none") - 1]  # keeps the study's weights: imagenet
    done = run_exp(cwd, *args, *tiny, check=True, env=OFFLINE)
    return Searched(cwd, done.stdout, done.stderr)
