"""The end of a search says what the whole study shows: every finished trial at chance or at one
value, and the best trial's parameter at the edge of its searched range; the study's MLflow run
carries the same lines as a tag."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from exptrack.search import verdict
from tests.conftest import TINY, run_exp

LR = FloatDistribution(1e-5, 1e-1, log=True)
DEPTH = IntDistribution(0, 5)


def study_of(*trials: tuple[float, dict[str, float], int]) -> optuna.Study:
    """Finished trials as a search stores them: (value, params, class count)."""
    study = optuna.create_study(direction="maximize")
    dists = {"lr": LR, "freeze_depth": DEPTH, "loss": CategoricalDistribution(["focal", "cross_entropy"])}
    for value, params, classes in trials:
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE,
                value=value,
                params=params,
                distributions={name: dists[name] for name in params},
                user_attrs={"class_count": classes},
            )
        )
    return study


@pytest.mark.slow
def test_a_search_at_chance_is_warned_at_its_end_and_tagged_on_the_study_run(tmp_path: Path) -> None:
    """lr of 1e-9 learns nothing: both trials score a digits val set's chance level."""
    (tmp_path / "flat.yaml").write_text("lr: {float: [1.0e-9, 2.0e-9], log: true}\n")
    (tmp_path / "flat.py").write_text(
        "from exptrack import Study\nstudy = Study(name='flat', search_space='flat.yaml', pruner='none', dashboard=None)\n"
    )
    done = run_exp(tmp_path, "search", "flat.py", "--trials", "2", *TINY)
    assert done.returncode == 0, done.stderr
    line = "all 2 finished trials score val_accuracy at chance (1/10 = 0.100; best "
    assert line in done.stderr and "nothing was learned" in done.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("flat")
    (run,) = client.search_runs([experiment.experiment_id], "tags.`exptrack.role` = 'study'")
    assert run.data.tags["exptrack.search_warnings"].startswith(line)


def test_one_value_and_a_best_at_the_edge_of_its_range_are_told() -> None:
    same = study_of((0.5, {"lr": 1e-3}, 10), (0.5, {"lr": 1e-2}, 10), (0.5, {"lr": 3e-4}, 10))
    assert verdict.findings(same, "val_accuracy") == [
        "all 3 finished trials score val_accuracy=0.5: the searched parameters change nothing"
    ]
    edge = study_of(
        (0.9, {"lr": 1.1e-5, "freeze_depth": 5, "loss": "focal"}, 10),
        (0.6, {"lr": 1e-3, "freeze_depth": 2, "loss": "focal"}, 10),
    )
    assert verdict.findings(edge, "val_accuracy") == [
        "best trial 0's lr=1.1e-05 sits at the low end of its range [1e-05, 0.1]: the optimum may lie "
        "outside it; widen the range",
        "best trial 0's freeze_depth=5 sits at the high end of its range [0, 5]: the optimum may lie "
        "outside it; widen the range",
    ]
    inside = study_of((0.9, {"lr": 1e-3, "freeze_depth": 3}, 10), (0.6, {"lr": 1e-2, "freeze_depth": 0}, 10))
    assert verdict.findings(inside, "val_accuracy") == []
