"""End to end: `exp search` as a user runs it, then both stores read back."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from tests.conftest import TINY
from tests.faultkit import run_cli_batch, runs_by_trial


@pytest.mark.slow
def test_three_trials_twice_leave_three_finished_trials_under_one_parent(exp, project: Path) -> None:
    first = exp("search", "studies/finetune.py", "--trials", "3", "--seed", "1", *TINY)
    assert first.returncode == 0, first.stderr
    again = exp("search", "studies/finetune.py", "--trials", "3", "--seed", "1", *TINY)
    assert again.returncode == 0, again.stderr

    study = optuna.load_study(study_name="finetune", storage="sqlite:///optuna.db")
    states = [t.state.name for t in study.trials]
    assert len(states) == 3 and set(states) <= {"COMPLETE", "PRUNED"}

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")  # absolute: MLflow caches a store per URI
    experiment = client.get_experiment_by_name("finetune")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("exptrack.role") == "study"]
    children = [r for r in runs if r.data.tags.get("exptrack.role") == "trial"]
    assert len(parents) == 1 and len(children) == 3
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    # where the study lives, readable from any directory: the absolute file, not sqlite:///optuna.db
    assert parent.data.tags["storage"] == f"sqlite:///{project.resolve() / 'optuna.db'}"
    parent_files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"dashboard.html", "study"} <= parent_files
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "study")} == {
        "study/finetune.py",
        "study/finetune.yaml",
    }

    by_number = {int(r.data.tags["exptrack.trial"]): r for r in children}
    for trial in study.trials:
        run = by_number[trial.number]
        # links both ways, nesting and naming
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["exptrack.study"] == "finetune"
        assert run.info.run_name == f"trial-{trial.number:03d}"
        # status follows the trial's state
        assert run.info.status == {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}[trial.state.name]
        assert run.info.end_time is not None
        # every config field as a param; only the chosen loss's own params
        params = run.data.params
        assert params["lr"] == str(trial.params["lr"])
        assert params["backbone"] == "resnet18" and params["epochs"] == "1" and params["subset"] == "96"
        loss = trial.params["loss"]
        assert params["loss"] == loss
        # a loss parameter has one name, Optuna's, in MLflow too
        loss_keys = {k for k in params if k.startswith("loss")} - {"loss"}
        assert loss_keys == {k for k in trial.params if k.startswith("loss.")}
        assert all(params[k] == str(trial.params[k]) for k in loss_keys)
        assert run.data.tags["state"] == trial.state.name
        # per-epoch metrics with step = epoch, plus profiling figures
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [m.step for m in history] == [1]
        assert history[0].value == trial.intermediate_values[1]
        # the learning curves are the run's only metrics, so MLflow's metrics tab opens on them;
        # single figures are tags (a table on the run's Overview): the best epoch's, the costs
        assert set(run.data.metrics) - {k for k in run.data.metrics if k.startswith("system/")} == {
            "train_loss", "val_loss", "val_accuracy"
        }
        assert float(run.data.tags["best_val_accuracy"]) == max(trial.intermediate_values.values())
        for key in (
            "seconds_per_epoch",
            "train_samples_per_second",
            "data_seconds",
            "compute_seconds",
            "eval_seconds",
            "trainable_params",
            "frozen_params",
            "flops_per_sample",
            "peak_rss_mb",
        ):
            assert float(run.data.tags[f"profile/{key}"]) >= 0 and key not in run.data.tags, key
        assert "config.yaml" in [a.path for a in client.list_artifacts(run.info.run_id)]
    assert "3 finished" in again.stdout and "0 run now" in again.stdout


# A study whose pruner stops trial 0 at its first epoch and would stop every trial at its last one.
PRUNING_STUDY = """
from optuna.pruners import BasePruner
from exptrack import Study
from exptrack.search.samplers import PRUNERS, register_pruner

class FirstTrialAndLastEpoch(BasePruner):
    def prune(self, study, trial):
        return trial.number == 0 or trial.last_step >= 2

if "first_and_last" not in PRUNERS:
    register_pruner("first_and_last")(lambda setup, options: FirstTrialAndLastEpoch())
study = Study(name="pinned", search_space="search_spaces/finetune.yaml", pruner="first_and_last",
              fixed={"weights": "none", "epochs": 2, "subset": 96, "image_size": 16}, dashboard=None)
"""


@pytest.mark.slow
def test_pruning_stops_trials_early_but_never_after_their_last_epoch_and_set_pins(project: Path) -> None:
    (project / "studies" / "pinned.py").write_text(PRUNING_STUDY)
    search = ["search", "studies/pinned.py", "--trials", "2", "--seed", "0"]
    pins = ["--set", "lr=0.01", "--set", "loss=focal"]
    first, unpinned, again = run_cli_batch(
        [(project, [*search, *pins]), (project, search), (project, [*search, *pins])]
    )

    assert first.returncode == 0, first.stderr
    assert "--set lr=0.01, loss=focal: pinned for this study" in first.stderr
    study = optuna.load_study(study_name="pinned", storage="sqlite:///optuna.db")
    pruned, complete = study.trials
    assert (pruned.state.name, sorted(pruned.intermediate_values)) == ("PRUNED", [1])
    # its pruner wanted it stopped after epoch 2, its last: a finished training is never pruned
    assert (complete.state.name, sorted(complete.intermediate_values)) == ("COMPLETE", [1, 2])
    for trial in study.trials:  # pinned: not sampled, used as given; the focal branch still searched
        assert trial.user_attrs["config"]["lr"] == 0.01 and trial.user_attrs["config"]["loss"] == "focal"
        assert set(trial.params) == {"batch_size", "weight_decay", "freeze_depth", "loss.focal.gamma"}

    runs = runs_by_trial(f"sqlite:///{project / 'mlflow.db'}", "pinned")
    (pruned_run,), (complete_run,) = runs[0], runs[1]
    assert pruned_run.info.status == "KILLED" and pruned_run.data.tags["state"] == "PRUNED"
    assert pruned_run.data.tags["pruned_at_epoch"] == "1"
    assert complete_run.data.tags["state"] == "COMPLETE" and "pruned_at_epoch" not in complete_run.data.tags
    gamma = complete.params["loss.focal.gamma"]
    assert complete_run.data.params["loss.focal.gamma"] == str(gamma)
    assert complete_run.data.params["lr"] == "0.01"

    # a pinned space is a changed space: resuming without the pin is refused, with it resumes
    assert unpinned.returncode == 2
    assert unpinned.stderr.strip().startswith("error: study 'pinned' was created with search space loss")
    assert unpinned.stderr.strip().endswith("use --new-study or --study-name NEW")
    assert again.returncode == 0 and "2 finished, 0 run now" in again.stdout
