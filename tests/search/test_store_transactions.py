"""What a trial costs the Optuna store in transactions (issue 20 item 5), counted on a real sqlite
store: each commit is a round trip, and on a database server a pool checkout with its ping. The
finetune space's six params are written in one transaction (Optuna's suggest API commits each), and
the loop reads the budget once per search, not after each trial (the next ask's read says it):
23 transactions a trial before, 17 now (benchmarks/README.md). A worker killed while it samples
leaves its trial with none of the params, never some."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from exptrack.search import loop
from exptrack.search.options import SearchOptions
from exptrack.study import load_study_file
from tests.conftest import REPO, exp_env

TINY = {"epochs": 1, "subset": 96, "image_size": 16, "weights": "none"}
# measured by call: 3 reads of the trials (the ask's, TPE's, the pruner's), 3 get_trial (the new
# trial's, the tell's two), the new trial, stale trials, heartbeat, the params (1, was 6), 3 single
# user attrs and 1 batch of them, the constraint values, the epoch's report, the state: 17
# (the loop's budget read after each trial was the 23rd)
MOST_A_TRIAL = 17


@pytest.mark.slow
def test_a_finetune_trial_costs_the_optuna_store_at_most_17_transactions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, commits: list[int]
) -> None:
    monkeypatch.delenv("EXPTRACK_FAULTS", raising=False)
    spec = load_study_file(REPO / "studies" / "finetune.py").with_overrides(TINY)
    options = SearchOptions(trials=2, storage=f"sqlite:///{tmp_path}/optuna.db", study_name="tx", seed=0)
    search = loop.open_search(spec, options.resolved(), None, warn=lambda _: None)
    starts: list[int] = []
    plain_run_one = loop.run_one

    def run_one(*args: Any, **kwargs: Any) -> Any:  # the real one, its start marked
        starts.append(commits[0])
        return plain_run_one(*args, **kwargs)

    monkeypatch.setattr(loop, "run_one", run_one)
    summary = loop.run(search)
    # a trial's share: from its ask to the next (the loop's own reads between them included)
    shares = [after - before for before, after in itertools.pairwise(starts)]
    assert summary.finished == 2 and len(shares) == 2, shares  # the third ask found the budget met
    assert max(shares) <= MOST_A_TRIAL, shares
    stored = [t.params for t in search.study.trials]
    assert all(len(params) == 6 for params in stored), stored  # every param of the space written


@pytest.fixture
def commits() -> Iterator[list[int]]:
    """Commits this thread makes on any database while the test runs (the heartbeat's thread beats
    on its own clock: left out, so the count does not depend on how long a trial takes)."""
    count, mine = [0], threading.current_thread()

    def commit(_: Any) -> None:
        if threading.current_thread() is mine:
            count[0] += 1

    event.listen(Engine, "commit", commit)
    yield count
    event.remove(Engine, "commit", commit)


KILLED_WHILE_SAMPLING = textwrap.dedent(
    """
    import os, signal, sys
    import optuna
    from exptrack.stores.optuna_storage import open_storage, params_in_one_write
    study = optuna.load_study(study_name="killed", storage=open_storage(sys.argv[1], grace_period=60))
    trial = study.ask()
    with params_in_one_write(trial):
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        trial.suggest_int("freeze_depth", 0, 4)
        os.kill(os.getpid(), signal.SIGKILL)  # mid-sampling: two params sampled, one to come
        trial.suggest_categorical("loss", ["cross_entropy", "focal"])
    """
)


@pytest.mark.slow
def test_a_worker_killed_while_sampling_leaves_its_trial_with_no_param(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/optuna.db"
    optuna.create_study(study_name="killed", storage=url)
    script = tmp_path / "sample.py"
    script.write_text(KILLED_WHILE_SAMPLING, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script), url], env=exp_env(tmp_path), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    (trial,) = optuna.load_study(study_name="killed", storage=url).trials
    assert trial.state == optuna.trial.TrialState.RUNNING and trial.params == {}  # none, never some
