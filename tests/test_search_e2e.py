"""End to end: `exp search` as a user runs it, then both stores read back."""

from __future__ import annotations

from pathlib import Path

import optuna
from mlflow import MlflowClient

from tests.conftest import TINY


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
    assert parent.data.tags["storage"] == "sqlite:///optuna.db"
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
        loss_keys = {k for k in params if k.startswith("loss_params.")}
        expected = {"focal": {"loss_params.gamma"}, "label_smoothing": {"loss_params.smoothing"}}.get(
            loss, set()
        )
        assert loss_keys == expected
        # per-epoch metrics with step = epoch, plus profiling figures
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [m.step for m in history] == [1]
        assert history[0].value == trial.intermediate_values[1]
        for key in ("train_loss", "val_loss", "final_val_accuracy", "best_val_accuracy"):
            assert key in run.data.metrics, key
        # cost figures grouped under profile/, apart from the learning curves
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
            assert f"profile/{key}" in run.data.metrics and key not in run.data.metrics, key
        assert "config.yaml" in [a.path for a in client.list_artifacts(run.info.run_id)]
    assert "3 finished" in again.stdout and "0 run now" in again.stdout
