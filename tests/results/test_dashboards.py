"""Dashboards: a dashboard file renders a study's trials to one standalone HTML page."""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from exptrack.errors import UserError
from exptrack.results import dashboards
from tests.conftest import run_exp
from tests.fixtures_search import STUDY, Searched

REPO = Path(__file__).resolve().parents[2]


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
                        "seconds_per_epoch": 1.3 + i,
                    },
                    "config": {"batch_size": [32, 64][i % 2], "freeze_depth": i % 3, "image_size": 16},
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
        "cost vs params",
    ):
        assert f"<h2>{heading}</h2>" in page
    assert "not drawn yet" not in page and "no data yet" not in page
    assert 'src="http' not in page  # plotly.js inlined: opens without a network
    assert "trial 4 (pruned)" in page and "#bbbbbb" in page  # pruned curves greyed
    assert "4 complete, 1 pruned" in page


def test_the_study_run_gets_its_plots_as_a_png_beside_the_page() -> None:
    """MLflow's artifact viewer previews the plotly page blank (issue 19, item 1): a PNG it shows."""
    import io

    from PIL import Image

    files = dashboards.artifacts(study_with_trials(), REPO / "dashboards" / "study.yaml")
    assert set(files) == {"dashboard.html", "dashboard.png"}
    with Image.open(io.BytesIO(files["dashboard.png"])) as image:  # type: ignore[arg-type]
        assert image.size == (1200, 450)
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 100  # drawn
    empty = dashboards.artifacts(optuna.create_study(study_name="empty"), REPO / "dashboards" / "study.yaml")
    assert set(empty) == {"dashboard.html"}  # nothing to plot yet: no image


def test_an_empty_study_renders_with_notes_instead_of_failing() -> None:
    page = dashboards.render(optuna.create_study(study_name="empty"), REPO / "dashboards" / "study.yaml")
    assert "no trials yet" in page and "no data yet" in page


def test_an_unknown_panel_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text("title: x\npanels: [optimisation_history]\n")
    with pytest.raises(UserError, match="unknown panel 'optimisation_history'"):
        dashboards.load(path)


def test_panels_tick_whole_numbers_keep_costs_non_negative_and_make_room_for_labels() -> None:
    study = study_with_trials()
    curves = dashboards._tidy(dashboards.learning_curves(study, {}))
    assert (curves.layout.xaxis.tickmode, curves.layout.xaxis.dtick) == ("linear", 1)  # no epoch 1.5
    assert curves.layout.yaxis.title.text == "val_accuracy"
    history = dashboards._tidy(dashboards.optimization_history(study, {}))
    assert history.layout.xaxis.dtick == 1 and history.layout.yaxis.title.text == "val_accuracy"
    costs = dashboards._tidy(dashboards.profile_breakdown(study, {}))
    assert costs.layout.yaxis.rangemode == costs.layout.yaxis2.rangemode == "tozero"  # no negative samples/s
    for figure in (curves, history, costs):  # long names push the margins out instead of being cut
        assert figure.layout.xaxis.automargin and figure.layout.yaxis.automargin
        assert figure.layout.legend.orientation == "h"  # above the plot, clear of a right-hand axis


def test_cost_against_its_drivers_one_plot_each_pruned_trials_marked_apart() -> None:
    figure = dashboards.cost_vs_params(study_with_trials(), {})
    titles = [figure.layout[f"xaxis{n}"].title.text for n in ("", "2", "3")]
    assert titles == ["batch_size", "freeze_depth", "image_size"]
    assert figure.layout.yaxis.title.text == "seconds_per_epoch" and figure.layout.yaxis.rangemode == "tozero"
    complete = [t for t in figure.data if t.name == "complete"]
    pruned = [t for t in figure.data if t.name == "pruned"]
    assert {t.marker.symbol for t in complete} == {"circle"} and {t.marker.symbol for t in pruned} == {"x"}
    by_batch = complete[0]  # the first plot: seconds per epoch against batch size, trial by trial
    assert list(by_batch.x) == [32, 64, 32, 64] and list(by_batch.y) == [1.3, 2.3, 3.3, 4.3]
    assert list(pruned[1].x) == [1] and list(pruned[1].y) == [5.3]  # trial 4: freeze_depth 4 % 3
    samples = dashboards.cost_vs_params(
        study_with_trials(), {"cost": "train_samples_per_second", "params": ["lr"]}
    )
    assert samples.layout.xaxis.title.text == "lr" and list(samples.data[0].y) == [500.0, 499.0, 498.0, 497.0]


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # the request log is noise here
        pass


@pytest.mark.slow
def test_optuna_dashboard_reads_the_study_with_its_objective_named_and_readable_attrs(
    searched: Searched,
) -> None:
    optuna_dashboard = pytest.importorskip("optuna_dashboard")  # the dev extra installs it
    app = optuna_dashboard.wsgi(f"sqlite:///{searched.cwd / 'optuna.db'}")
    server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)  # a real server on loopback
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        (summary,) = get_json(f"{base}/api/studies")["study_summaries"]
        detail = get_json(f"{base}/api/studies/{summary['study_id']}")
    finally:
        server.shutdown()
        server.server_close()
    assert detail["objective_names"] == ["val_accuracy"]  # not "Objective 0"
    study = searched.study()
    for trial in detail["trials"]:
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        # the config whole, as a mapping the dashboard shows as JSON (not cut at its 1024 characters)
        assert json.loads(attrs["config"]) == study.trials[trial["number"]].user_attrs["config"]
        assert attrs["mlflow_run_id"] == study.trials[trial["number"]].user_attrs["mlflow_run_id"]
        # a numeric choice in numeric order: the slice and parallel-coordinate plots place a
        # choice by its index (internal value), so they show 32 < 64 < 128 < 256
        batch = next(p for p in trial["params"] if p["name"] == "batch_size")
        assert [c["value"] for c in batch["distribution"]["choices"]] == ["32", "64", "128", "256"]
        assert batch["param_internal_value"] == [32, 64, 128, 256].index(int(batch["param_external_value"]))


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=60) as reply:
        return json.load(reply)


@pytest.mark.slow
def test_report_draws_the_dashboard_the_study_was_searched_with_from_any_directory(
    searched: Searched, tmp_path: Path
) -> None:
    recorded = searched.study().user_attrs["dashboard"]
    # what rebuilds it on any host: the text and the name the study file gives, no machine path
    assert recorded == {"name": "dashboards/study.yaml", "text": (searched.cwd / "dashboards" / "study.yaml").read_text()}
    assert str(searched.cwd) not in json.dumps(recorded)
    stores = ["--storage", f"sqlite:///{searched.cwd / 'optuna.db'}"]
    stores += ["--tracking-uri", f"sqlite:///{searched.cwd / 'mlflow.db'}"]
    done = run_exp(tmp_path, "report", STUDY, *stores)  # a directory without dashboards/
    assert done.returncode == 0, done.stderr
    page = (tmp_path / f"{STUDY}-dashboard.html").read_text()
    assert f"{STUDY}: search overview" in page and "<h2>learning curves</h2>" in page
    assert "on MLflow run" in done.stdout  # logged on the study's run as well


def test_the_default_dashboard_ships_in_the_package_and_matches_the_repo_copy() -> None:
    from exptrack.study import PACKAGED_DASHBOARD

    assert PACKAGED_DASHBOARD.read_text() == (REPO / "dashboards" / "study.yaml").read_text()


@pytest.mark.slow
def test_a_study_searched_outside_the_repo_gets_the_default_dashboard(tmp_path: Path) -> None:
    """No dashboards/ where the study is searched, nor where `exp report` runs: the package's own
    dashboard is drawn (and an older study with no dashboard recorded gets it too)."""
    from tests.conftest import TINY

    outside, elsewhere = tmp_path / "own", tmp_path / "elsewhere"
    outside.mkdir(), elsewhere.mkdir()
    (outside / "space.yaml").write_text("lr: {float: [1.0e-3, 1.0e-2], log: true}\n")
    (outside / "own.py").write_text(
        "from exptrack import Study\nstudy = Study(name='own', search_space='space.yaml')\n"
    )
    searched = run_exp(outside, "search", "own.py", "--trials", "1", *TINY)
    assert searched.returncode == 0, searched.stderr
    stores = [
        "--storage",
        f"sqlite:///{outside / 'optuna.db'}",
        "--tracking-uri",
        f"sqlite:///{outside / 'mlflow.db'}",
    ]
    done = run_exp(elsewhere, "report", "own", *stores)
    assert done.returncode == 0, done.stderr
    assert "own: search overview" in (elsewhere / "own-dashboard.html").read_text()
    optuna.load_study(study_name="own", storage=stores[1]).set_user_attr("dashboard", None)  # an older study
    again = run_exp(elsewhere, "report", "own", *stores, "--out", "older.html")
    assert again.returncode == 0, again.stderr
    assert "<h2>learning curves</h2>" in (elsewhere / "older.html").read_text()
