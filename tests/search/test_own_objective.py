"""A study's own training function (`Study(objective=...)`): its own parameters in the search
space, per-epoch reports in MLflow and to the pruner, a raise as a FAILED trial, and export +
`exp train` of its trial reproducing the value exactly (real processes, real sqlite stores)."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from exptrack import config as cfg
from exptrack import records
from exptrack.errors import UserError
from exptrack.search import space
from exptrack.study import Study
from tests.conftest import REPO, run_exp

OWN = str(REPO / "tests" / "studies" / "own_objective.py")


@pytest.fixture(scope="module")
def own_searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory where `exp search OWN --trials 2` ran once (its three trials are fixed by its
    starting points), shared by the tests that read it: one search process instead of two. `exp
    confirm` adds runs and a study attribute there, never a trial, so the order of the tests is free."""
    cwd = tmp_path_factory.mktemp("own")
    for folder in ("studies", "search_spaces", "dashboards"):  # as the `project` fixture lays out
        shutil.copytree(REPO / folder, cwd / folder)
    run_exp(cwd, "search", OWN, "--trials", "2", check=True)
    return cwd


def test_keys_that_are_not_config_fields_are_the_own_functions_parameters() -> None:
    data = {"lr": {"float": [1e-3, 1e-2]}, "hidden": {"choice": [16, 32]}, "dropout": {"float": [0.0, 0.5]}}
    parsed = space.parse(data, own=True)
    point = parsed.sample(optuna.trial.FixedTrial({"lr": 2e-3, "hidden": 32, "dropout": 0.25}), {})
    config = cfg.from_dict(point)
    assert (config.lr, config.params) == (2e-3, {"dropout": 0.25, "hidden": 32})
    assert config.flat_params()["hidden"] == "32"  # the MLflow param is named as the space names it


def test_a_typo_is_still_one_line_for_the_built_in_fine_tuning() -> None:
    with pytest.raises(UserError, match=r"unknown parameter 'lrr'.*did you mean 'lr'"):
        space.parse({"lrr": {"float": [1e-3, 1e-2]}})


def test_objective_names_a_function_and_a_metric_there_says_which_is_which() -> None:
    with pytest.raises(UserError, match=r"objective='val_accuracy' is not 'module:function'.*metric="):
        Study(name="x", search_space="x.yaml", objective="val_accuracy")
    with pytest.raises(UserError, match="module 'no_such_module' not found"):
        Study(name="x", search_space="x.yaml", objective="no_such_module:train").objective_function()


def test_own_params_round_trip_through_an_exported_file(tmp_path: Path) -> None:
    config = cfg.TrialConfig(params={"hidden": 64, "act": "relu", "bias": True})
    (tmp_path / "c.yaml").write_text(cfg.dump_yaml(config))
    assert cfg.read_yaml(tmp_path / "c.yaml")[0] == config
    assert "\nparams:" not in cfg.dump_yaml(cfg.TrialConfig())  # the built-in's files read as before


@pytest.mark.slow
def test_its_trials_report_per_epoch_are_pruned_and_fail_with_their_traceback(
    own_searched: Path, tmp_path: Path
) -> None:
    project = own_searched
    study = optuna.load_study(study_name="own_objective", storage=f"sqlite:///{project}/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "PRUNED"]  # 2 finished: exact
    assert study.trials[0].value == 0.9
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    runs = [client.get_run(t.user_attrs[records.RUN_ID_ATTR]) for t in study.trials]
    assert [r.info.status for r in runs] == ["FINISHED", "FAILED", "KILLED"]
    steps = [[m.step for m in client.get_metric_history(r.info.run_id, "score")] for r in runs]
    assert steps == [[1, 2, 3], [], [1]]  # the pruned trial stopped after epoch 1
    assert runs[0].data.params["quality"] == "0.9" and runs[0].data.params["epochs"] == "3"
    traceback = Path(client.download_artifacts(runs[1].info.run_id, "traceback.txt", str(tmp_path)))
    assert "ValueError: quality -1.0 is negative" in traceback.read_text()


@pytest.mark.slow
def test_the_own_loop_example_runs_and_exp_train_reproduces_its_best_trial(project: Path, exp) -> None:  # type: ignore[no-untyped-def]
    exp(
        "search",
        "studies/own_loop.py",
        "--trials",
        "2",
        "--set",
        "epochs=2",
        "--set",
        "subset=200",
        check=True,
    )
    study = optuna.load_study(study_name="own_loop", storage=f"sqlite:///{project}/optuna.db")
    assert len(study.trials) == 2 and all(t.state.name == "COMPLETE" for t in study.trials)
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    for trial in study.trials:
        run = client.get_run(trial.user_attrs[records.RUN_ID_ATTR])
        assert {"lr", "hidden", "dropout"} <= set(run.data.params)
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [m.step for m in history] == [1, 2] and history[-1].value == trial.value
    exp("export", "own_loop", "--out", "best", check=True)
    (exported,) = (project / "best").iterdir()
    trained = exp("train", str(exported), check=True)
    assert (
        f"val_accuracy: trial {study.best_value:.6g}, this run {study.best_value:.6g} (identical)"
        in trained.stdout
    )


@pytest.mark.slow
def test_confirm_repeats_an_own_function_with_fresh_seeds_and_a_changed_function_is_refused(
    own_searched: Path, tmp_path: Path
) -> None:
    project = own_searched
    confirmed = run_exp(project, "confirm", "own_objective", "--top", "1", "--seeds", "2", "--format", "csv")
    assert confirmed.returncode == 0, confirmed.stderr
    assert "trial 0 seed 2 (trained): loss=0.1000, score=0.9000" in confirmed.stderr  # its own function
    (row,) = csv.DictReader(io.StringIO(confirmed.stdout))
    assert (row["trial"], row["seeds"], float(row["score_mean"])) == ("0", "2", 0.9)  # its own metric
    assert not [column for column in row if column.startswith("test_")]  # no test split scored: no column
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    (experiment,) = [e.experiment_id for e in client.search_experiments() if e.name == "own_objective"]
    repeats = client.search_runs([experiment], f"tags.`{records.ROLE_TAG}` = '{records.ROLE_CONFIRM}'")
    assert sorted(r.data.tags[records.CONFIRM_SEED_TAG] for r in repeats) == ["1", "2"]  # seed 0 + 1, + 2
    assert all(r.info.status == "FINISHED" and r.data.metrics["score"] == 0.9 for r in repeats)

    changed = tmp_path / "changed"  # the same study, trained by another function
    changed.mkdir()
    source = REPO / "tests" / "studies"
    (changed / "own_objective.yaml").write_text((source / "own_objective.yaml").read_text())
    (changed / "other_train.py").write_text((source / "own_objective_train.py").read_text())
    text = (source / "own_objective.py").read_text()
    (changed / "own_objective.py").write_text(text.replace("own_objective_train:train", "other_train:train"))
    refused = run_exp(project, "search", str(changed / "own_objective.py"), "--trials", "3")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "objective=own_objective_train:train, now other_train:train; use --new-study" in refused.stderr
