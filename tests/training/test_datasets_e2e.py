"""End to end through the real CLI: studies over an image folder of generated PNGs and over
`synthetic`, and a torchvision set whose files are missing."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from exptrack.errors import UserError
from exptrack.search.loop import open_search
from exptrack.search.options import SearchOptions
from exptrack.study import load_study_file
from tests.conftest import TINY
from tests.imagegen import write_image_folder


def finished_runs(study: str) -> list:
    # an absolute URI: MLflow caches stores by URI, so a relative one would reach an earlier test's
    client = MlflowClient(f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(study)
    runs = client.search_runs([experiment.experiment_id])
    return [r for r in runs if r.data.tags.get("exptrack.role") == "trial" and r.info.status == "FINISHED"]


@pytest.mark.slow
def test_a_study_over_an_image_folder_of_pngs_runs_end_to_end(exp, project: Path) -> None:
    root = write_image_folder(project / "pets", classes=3, per_class=10)
    result = exp(
        "search", "studies/imagefolder.py", "--trials", "2", *TINY, "--set", f"dataset=imagefolder:{root}"
    )
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="imagefolder", storage="sqlite:///optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert all(0.0 <= t.value <= 1.0 for t in study.trials)
    runs = finished_runs("imagefolder")
    assert len(runs) == 2
    assert {r.data.params["dataset"] for r in runs} == {f"imagefolder:{root}"}
    assert {r.data.params["augment"] for r in runs} == {"True"}
    assert all(float(r.data.tags["profile/train_seconds"]) > 0 for r in runs)


@pytest.mark.slow
def test_a_synthetic_study_runs_end_to_end(exp, project: Path) -> None:
    result = exp("search", "studies/synthetic.py", "--trials", "1", *TINY, "--set", "dataset=synthetic:200,4")
    assert result.returncode == 0, result.stderr
    runs = finished_runs("synthetic")
    assert len(runs) == 1 and runs[0].data.params["dataset"] == "synthetic:200,4"
    assert 0.0 <= runs[0].data.metrics["val_accuracy"] <= 1.0


def test_missing_torchvision_files_stop_the_search_before_trial_one(project: Path) -> None:
    root = project / "cifar"
    study = load_study_file(Path("studies/synthetic.py")).with_overrides(
        {"dataset": f"cifar10:{root}", "weights": "none", "image_size": 16}
    )
    with pytest.raises(
        UserError, match=f"no CIFAR10 files under {root}; place them there or add --set download=true"
    ):
        open_search(study, SearchOptions(trials=1).resolved(), tracker=None)
    assert not (project / "optuna.db").exists()  # nothing was recorded
