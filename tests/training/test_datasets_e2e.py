"""End to end through the real CLI: studies over an image folder of generated PNGs and over
`synthetic`, and a torchvision set whose files are missing."""

from __future__ import annotations

import shutil
from pathlib import Path
from subprocess import CompletedProcess

import optuna
import pytest
from mlflow import MlflowClient

from exptrack.errors import UserError
from exptrack.search.loop import open_search
from exptrack.search.options import SearchOptions
from exptrack.study import load_study_file
from tests.conftest import REPO, TINY
from tests.faultkit import run_cli_batch
from tests.imagegen import write_image_folder

Searches = tuple[Path, dict[str, CompletedProcess[str]]]


@pytest.fixture(scope="module")
def both_searched(tmp_path_factory: pytest.TempPathFactory) -> Searches:
    """Both searches through `exp`'s real entry point, one after the other in one process
    (run_cli_batch: torch, torchvision and MLflow imported once, not per search), in one project:
    the studies have their own names, so their trials and runs stay apart in the shared stores."""
    project = tmp_path_factory.mktemp("datasets")
    for folder in ("studies", "search_spaces", "dashboards"):  # as the `project` fixture lays out
        shutil.copytree(REPO / folder, project / folder)
    root = write_image_folder(project / "pets", classes=3, per_class=10)
    imagefolder = [
        "search",
        "studies/imagefolder.py",
        "--trials",
        "2",
        *TINY,
        "--set",
        f"dataset=imagefolder:{root}",
    ]
    synthetic = ["search", "studies/synthetic.py", "--trials", "1", *TINY, "--set", "dataset=synthetic:200,4"]
    done = run_cli_batch([(project, imagefolder), (project, synthetic)])
    return project, {"imagefolder": done[0], "synthetic": done[1]}


def finished_runs(project: Path, study: str) -> list:
    # an absolute URI: MLflow caches stores by URI, so a relative one would reach an earlier test's
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(study)
    runs = client.search_runs([experiment.experiment_id])
    return [r for r in runs if r.data.tags.get("exptrack.role") == "trial" and r.info.status == "FINISHED"]


@pytest.mark.slow
def test_a_study_over_an_image_folder_of_pngs_runs_end_to_end(both_searched: Searches) -> None:
    project, results = both_searched
    root = project / "pets"
    result = results["imagefolder"]
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="imagefolder", storage=f"sqlite:///{project / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert all(0.0 <= t.value <= 1.0 for t in study.trials)
    runs = finished_runs(project, "imagefolder")
    assert len(runs) == 2
    assert {r.data.params["dataset"] for r in runs} == {f"imagefolder:{root}"}
    assert {r.data.params["augment"] for r in runs} == {"True"}
    assert all(float(r.data.tags["profile/train_seconds"]) > 0 for r in runs)


@pytest.mark.slow
def test_a_synthetic_study_runs_end_to_end(both_searched: Searches) -> None:
    project, results = both_searched
    result = results["synthetic"]
    assert result.returncode == 0, result.stderr
    runs = finished_runs(project, "synthetic")
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
