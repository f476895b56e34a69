"""The dashboard on the study's run: a search that ends within DASHBOARD_EVERY_S of its start
renders it once, at its end, and a render of trials the page already shows is skipped (each
render costs 1-2.6 s of a short command: issue 20)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import create_trial

from exptrack.results import dashboards
from exptrack.search.study_run import Dashboard, StudyRun
from exptrack.tracking.tracker import Tracker

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def tracked(tmp_path: Path) -> tuple[Tracker, StudyRun]:
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", warn=lambda _: None)
    experiment = tracker.client.create_experiment("dash", artifact_location=(tmp_path / "art").as_uri())
    run = tracker.client.create_run(experiment)
    return tracker, StudyRun(experiment, run.info.run_id)


def _trial(value: float) -> optuna.trial.FrozenTrial:
    return create_trial(
        params={"lr": 0.01}, distributions={"lr": FloatDistribution(1e-4, 1.0, log=True)}, value=value
    )


def test_a_short_search_renders_its_dashboard_once_and_again_only_when_trials_changed(
    tracked: tuple[Tracker, StudyRun],
) -> None:
    tracker, run = tracked
    rendered: list[int] = []

    def render(study: optuna.Study) -> dict[str, str | bytes]:
        rendered.append(len(study.trials))
        return dashboards.artifacts(study, REPO / "dashboards" / "study.yaml")

    study = optuna.create_study(study_name="dash", direction="maximize")
    dashboard = Dashboard(tracker, run, render)
    study.add_trial(_trial(0.5))
    dashboard.refresh(study)  # a trial ended seconds after the start: not drawn yet
    assert rendered == []
    dashboard.refresh(study, force=True)  # the search's end
    dashboard.refresh(study, force=True)  # nothing new: the page already shows it
    assert rendered == [1]
    files = {f.path for f in tracker.client.list_artifacts(str(run.parent_run_id))}
    assert {"dashboard.html", "dashboard.png"} <= files
    study.add_trial(_trial(0.7))
    dashboard.refresh(study, force=True)
    assert rendered == [1, 2]
