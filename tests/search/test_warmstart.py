"""Warm starts: configs (exported files, hand-written YAML, a study file's starting points, an
earlier study's best trials) become the next trials' parameters, checked against the space
first; an exported config runs exactly as the next trial of another study."""

from __future__ import annotations

import shutil
from pathlib import Path

import optuna
import pytest
import yaml

from exptrack.config import TrialConfig
from exptrack.errors import UserError
from exptrack.search import space as spaces
from exptrack.search import warmstart
from tests.conftest import TINY, run_exp
from tests.fixtures_search import STUDY, Searched

SPACE = spaces.parse(
    yaml.safe_load(
        """
lr:           {float: [1.0e-4, 3.0e-2], log: true}
batch_size:   {choice: [32, 64, 128]}
freeze_depth: {int: [0, max]}
weight_decay: {float: [0.0, 0.01], step: 0.001}
loss:
  choice:
    cross_entropy: {}
    focal: {gamma: {float: [0.5, 5.0]}}
"""
    )
)


def test_a_config_becomes_the_parameters_of_its_searched_keys() -> None:
    config = TrialConfig(lr=0.01, batch_size=64, freeze_depth=5, weight_decay=0.003, loss="focal",
                         loss_params={"gamma": 2.0}, epochs=7)  # fmt: skip
    start = warmstart.from_values(SPACE, config.to_dict(), "exported.yaml")
    assert start.params == {
        "lr": 0.01,
        "batch_size": 64,
        "freeze_depth": 5,  # max = resnet18's 5 stages
        "weight_decay": 0.003,
        "loss": "focal",
        "loss.focal.gamma": 2.0,
    }
    # a hand-written file may set only some searched keys: the sampler picks the others
    partial = warmstart.from_values(SPACE, {"lr": "1e-3", "loss": "cross_entropy"}, "mine.yaml")
    assert partial.params == {"lr": 1e-3, "loss": "cross_entropy"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"lr": 0.5}, "lr=0.5 is outside the search space (float in [0.0001, 0.03])"),
        ({"batch_size": 48}, "batch_size=48 is outside the search space (one of [32, 64, 128])"),
        ({"freeze_depth": 6}, "freeze_depth=6 is outside the search space (int in [0, 5])"),
        ({"weight_decay": 0.0025}, "weight_decay=0.0025 is outside the search space (float in [0.0, 0.01] step 0.001)"),
        ({"loss": "label_smoothing"}, "loss='label_smoothing' is outside the search space (one of ['cross_entropy', 'focal'])"),
        ({"loss": "focal", "loss_params": {"gamma": 9.0}}, "loss.focal.gamma=9.0 is outside the search space"),
        ({"epochs": 3}, "sets none of the searched keys (batch_size, freeze_depth, loss, loss_params, lr, weight_decay)"),
        ({"learning_rate": 0.1}, "unknown config key 'learning_rate'"),
    ],
)  # fmt: skip
def test_a_value_outside_the_space_is_a_one_line_error(values: dict[str, object], message: str) -> None:
    with pytest.raises(UserError, match=r"^mine\.yaml: ") as caught:
        warmstart.from_values(SPACE, values, "mine.yaml")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_queueing_twice_queues_once(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    start = warmstart.Start({"lr": 0.01}, "a.yaml")
    said: list[str] = []
    assert warmstart.enqueue(study, [start, start], said.append) == 1
    assert said == ["a.yaml: already a trial of study '" + study.study_name + "'; not queued again"]


def copy_stores(searched: Searched, project: Path) -> None:
    for name in ("optuna.db", "mlflow.db"):
        shutil.copy(searched.cwd / name, project / name)


@pytest.fixture(scope="module")
def exported(searched: Searched, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`exp export STUDY --top 1 --out best` run once, on a copy of the searched stores: the tests
    that queue its file copy the folder (an export only reads the stores, and what it writes names
    no directory), one `exp` process instead of one per test."""
    cwd = tmp_path_factory.mktemp("exported")
    copy_stores(searched, cwd)
    done = run_exp(cwd, "export", STUDY, "--top", "1", "--out", "best")
    assert done.returncode == 0, done.stderr
    return cwd / "best"


@pytest.mark.slow
def test_an_exported_config_runs_exactly_as_the_next_trial(
    searched: Searched, exported: Path, exp, project: Path
) -> None:
    copy_stores(searched, project)
    best = searched.study().best_trial
    shutil.copytree(exported, project / "best")  # as `exp export STUDY --top 1 --out best` wrote it
    again = exp("search", "studies/finetune.py", "--study-name", "again", "--enqueue", "best", "--trials", "1",
                "--no-tracking", *TINY)  # fmt: skip
    assert again.returncode == 0, again.stderr
    (trial,) = optuna.load_study(study_name="again", storage="sqlite:///optuna.db").trials
    assert trial.params == best.params
    assert trial.user_attrs["config"] == best.user_attrs["config"]  # same settings: the same config
    assert trial.user_attrs["enqueued_from"] == f"best/trial-{best.number:03d}.yaml"


@pytest.mark.slow
def test_from_study_seeds_a_new_study_with_the_best_trials_of_an_earlier_one(
    searched: Searched, exp, project: Path
) -> None:
    copy_stores(searched, project)
    earlier = searched.study()
    ranked = sorted(earlier.trials, key=lambda t: t.value, reverse=True)
    seeded = exp("search", "studies/finetune.py", "--study-name", "seeded", "--from-study", STUDY,
                 "--from-top", "2", "--trials", "2", "--no-tracking", *TINY)  # fmt: skip
    assert seeded.returncode == 0, seeded.stderr
    trials = optuna.load_study(study_name="seeded", storage="sqlite:///optuna.db").trials
    assert [t.params for t in trials] == [t.params for t in ranked[:2]]
    assert [t.user_attrs["enqueued_from"] for t in trials] == [
        f"{STUDY} trial {t.number}" for t in ranked[:2]
    ]


def test_an_earlier_study_outside_this_space_is_refused_in_one_line(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    earlier = optuna.create_study(study_name="wide", storage=storage, direction="maximize")
    trial = earlier.ask()
    trial.set_user_attr("config", TrialConfig(lr=0.09).to_dict())
    earlier.tell(trial, 0.5)
    with pytest.raises(UserError) as caught:
        warmstart.best_of_study(SPACE, "wide", 3, storage, "narrow")
    assert str(caught.value) == (
        "--from-study 'wide': its space is not compatible with this one: wide trial 0: lr=0.09 is "
        "outside the search space (float in [0.0001, 0.03]); change the value or widen the space"
    )
    with pytest.raises(UserError, match="is this study itself"):
        warmstart.best_of_study(SPACE, "wide", 3, storage, "wide")


@pytest.mark.slow
def test_an_offline_export_enqueued_in_its_own_study_reports_no_weights_difference(
    searched: Searched, exported: Path, exp, project: Path
) -> None:
    """The searched study ran offline: its exports say `weights: none`, asked as imagenet. Queued
    into a study of weights imagenet that is no difference to report; the offline warning and the
    summary name the fix (the checkpoint's folder under TORCH_HOME, or --set weights=PATH.pt)."""
    from tests.conftest import OFFLINE

    copy_stores(searched, project)
    shutil.copytree(exported, project / "best")  # as `exp export STUDY --top 1 --out best` wrote it
    tiny = TINY[: TINY.index("weights=none") - 1]  # the study's own weights: imagenet
    again = exp("search", "studies/finetune.py", "--study-name", "again", "--enqueue", "best", "--trials", "1",
                "--no-tracking", *tiny, env=OFFLINE)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "(study: 'imagenet')" not in again.stderr and "only searched keys are queued" not in again.stderr
    checkpoints = searched.cwd / "torch-home" / "hub" / "checkpoints"
    assert (
        f"training from scratch (random init). To fine-tune, copy resnet18-f37072fd.pth into {checkpoints}"
        in (searched.stderr)
    )
    assert "(set TORCH_HOME) or --set weights=PATH.pt" in searched.stderr
    assert "trained from scratch (random init)" in again.stderr and "--set weights=PATH.pt" in again.stderr
