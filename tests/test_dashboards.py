"""Dashboards: a dashboard file renders a study's trials to one standalone HTML page."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from exptrack.errors import UserError
from exptrack.results import dashboards

REPO = Path(__file__).resolve().parent.parent


def study_with_trials() -> optuna.Study:
    """Five finished trials as a search records them: params, per-epoch values, profile."""
    study = optuna.create_study(study_name="digits", direction="maximize")
    study.set_user_attr("metric", "val_accuracy")
    dists = {
        "lr": FloatDistribution(1e-4, 1e-1, log=True),
        "loss": CategoricalDistribution(["cross_entropy", "focal"]),
    }
    for i, lr in enumerate([1e-3, 3e-3, 1e-2, 3e-2, 1e-4]):
        pruned = i == 4
        curve = {1: 0.3 + 0.1 * i, 2: 0.4 + 0.1 * i} if not pruned else {1: 0.1}
        study.add_trial(
            create_trial(
                state=TrialState.PRUNED if pruned else TrialState.COMPLETE,
                value=None if pruned else curve[2],
                params={"lr": lr, "loss": ["cross_entropy", "focal"][i % 2]},
                distributions=dists,
                intermediate_values=curve,
                user_attrs={
                    "profile": {
                        "data_seconds": 0.1,
                        "compute_seconds": 1.0 + i,
                        "eval_seconds": 0.2,
                        "train_samples_per_second": 500.0 - i,
                    }
                },
            )
        )
    return study


def test_the_shipped_dashboard_draws_every_panel_offline() -> None:
    page = dashboards.render(study_with_trials(), REPO / "dashboards" / "study.yaml")
    assert page.startswith("<!doctype html>") and "digits: search overview" in page
    for heading in (
        "optimization history",
        "param importances",
        "parallel coordinate",
        "learning curves",
        "profile breakdown",
    ):
        assert f"<h2>{heading}</h2>" in page
    assert "not drawn yet" not in page and "no data yet" not in page
    assert 'src="http' not in page  # plotly.js inlined: opens without a network
    assert "trial 4 (pruned)" in page and "#bbbbbb" in page  # pruned curves greyed
    assert "4 complete, 1 pruned" in page


def test_an_empty_study_renders_with_notes_instead_of_failing() -> None:
    page = dashboards.render(optuna.create_study(study_name="empty"), REPO / "dashboards" / "study.yaml")
    assert "no trials yet" in page and "no data yet" in page


def test_an_unknown_panel_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text("title: x\npanels: [optimisation_history]\n")
    with pytest.raises(UserError, match="unknown panel 'optimisation_history'"):
        dashboards.load(path)
