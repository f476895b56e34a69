"""Several objectives end to end: the shipped tradeoff study (accuracy against seconds per epoch,
with a constraint and a starting point) on tiny settings, a hand-written config queued on top;
then `exp trials`, `exp export` and MLflow read back."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import TINY
from tests.faultkit import run_cli_batch

# freeze_depth 0 trains all 11.2M weights of resnet18: it breaks `trainable_params <= 10500000`
TOO_MANY_WEIGHTS = {"lr": 0.002, "batch_size": 32, "freeze_depth": 0}


@pytest.mark.slow
def test_a_two_objective_study_marks_exports_and_records_its_pareto_front(exp, project: Path) -> None:
    (project / "by-hand.yaml").write_text(yaml.safe_dump(TOO_MANY_WEIGHTS))
    searched = exp("search", "studies/tradeoff.py", "--trials", "3", "--enqueue", "by-hand.yaml", *TINY)
    assert searched.returncode == 0, searched.stderr
    assert "Pareto front" in searched.stdout

    study = optuna.load_study(study_name="tradeoff", storage="sqlite:///optuna.db")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["val_accuracy", "seconds_per_epoch"]
    first, queued = study.trials[0], study.trials[1]
    assert first.params == {"lr": 1.0e-3, "batch_size": 64, "freeze_depth": 3}  # the study's starting point
    assert first.user_attrs["enqueued_from"] == "starting point 1"
    assert queued.params == TOO_MANY_WEIGHTS and queued.user_attrs["enqueued_from"] == "by-hand.yaml"
    assert queued.constraints["trainable_params <= 10500000"] > 0  # stored on the trial
    pareto = {t.number for t in study.best_trials}
    assert pareto and 1 not in pareto  # an infeasible trial is never on the front

    # read back in one process (both only read the stores): the trials, then the front exported
    listed, exported = run_cli_batch(
        [
            (project, ["trials", "tradeoff", "--format", "json"]),
            (project, ["export", "tradeoff", "--out", "front"]),
        ]
    )
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert {r["number"] for r in rows if r["pareto"]} == pareto
    assert {r["number"]: r["feasible"] for r in rows}[1] is False
    for row in rows:  # both objectives as columns, named
        values = study.trials[row["number"]].values
        assert [row["val_accuracy"], row["seconds_per_epoch"]] == values

    assert exported.returncode == 0, exported.stderr
    files = sorted((project / "front").glob("*.yaml"))
    assert [f.name for f in files] == [f"trial-{n:03d}.yaml" for n in sorted(pareto)]
    provenance = yaml.safe_load(files[0].read_text())["provenance"]
    assert provenance["metric"] == ["val_accuracy", "seconds_per_epoch"]
    assert provenance["value"] == study.trials[min(pareto)].values

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tradeoff")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`exptrack.role` = 'study'")
    assert parent.data.tags["metric"] == "val_accuracy,seconds_per_epoch"
    assert parent.data.tags["direction"] == "maximize,minimize"
    assert parent.data.tags["constraints"] == "trainable_params <= 10500000"
    front = [study.trials[n].values for n in pareto]
    assert parent.data.metrics["best_val_accuracy"] == max(v[0] for v in front)
    assert parent.data.metrics["best_seconds_per_epoch"] == min(v[1] for v in front)
    assert parent.data.metrics["pareto_front_size"] == len(pareto)
    view = json.loads(
        json.loads(experiment.tags["mlflow.sharedViewState.exptrack"])["state"]
    )  # what `exp ui` opens
    assert view["selectedColumns"][:2] == ["metrics.`val_accuracy`", "tags.`profile/seconds_per_epoch`"]
    page = Path(client.download_artifacts(parent.info.run_id, "dashboard.html", str(project))).read_text()
    assert "<h2>pareto front</h2>" in page and "not drawn yet" not in page
    (infeasible_run,) = client.search_runs([experiment.experiment_id], "tags.`exptrack.trial` = '1'")
    assert infeasible_run.data.tags["exptrack.infeasible"] == "trainable_params <= 10500000"
