"""Dashboards: a dashboard file (which panels to draw for a study) rendered to one standalone HTML
page, plotly.js inlined so it opens offline and inside the MLflow UI's artifact viewer. `exp
report` publishes one on demand; the search gets a renderer from `renderer_for` and republishes
it on the study's run as trials end."""

from __future__ import annotations

import functools
import html
import math
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from exptrack import config as cfg
from exptrack import records, registry, study_store, yaml_files
from exptrack.errors import UserError, did_you_mean
from exptrack.results import output, overview
from exptrack.stores import optuna_storage
from exptrack.study import DEFAULT_DASHBOARD, PACKAGED_DASHBOARD, Study
from exptrack.study_store import record
from exptrack.tracking import queries

PanelFn = Callable[[optuna.Study, Mapping[str, Any]], Any]
PANELS: dict[str, PanelFn] = {}


# `@register_panel(name)` on a builder `(study, options) -> plotly Figure`; a duplicate name is refused.
register_panel = registry.registrar(PANELS, "panel")


Dashboard = tuple[str, list[tuple[str, dict[str, Any]]]]  # (title template, [(panel, options)])
DEFAULT_FILE = Path(DEFAULT_DASHBOARD)


def load(path: Path) -> Dashboard:
    """(title template, [(panel, options)]) from a dashboard file, validated."""
    if not path.is_file():
        raise UserError(f"dashboard file {path} not found; pass --dashboard or create it")
    return parse(yaml_files.read_text(path), str(path))


def parse(text: str, source: str) -> Dashboard:
    """A dashboard from its YAML text (a file's, or the copy recorded on a study), validated."""
    data = yaml_files.load_yaml(text, source) or {}
    if not isinstance(data, dict) or not isinstance(data.get("panels"), list) or not data["panels"]:
        raise UserError(f"{source}: expected `title:` and a non-empty `panels:` list")
    panels = [_panel_entry(entry, source) for entry in data["panels"]]
    return str(data.get("title", "{study}")), panels


def recorded(study: optuna.Study) -> Dashboard:
    """The dashboard the study was searched with (recorded on it by the search), else
    `dashboards/study.yaml` in the working directory, else the package's own copy of it."""
    copy = study.user_attrs.get(records.STUDY_DASHBOARD_ATTR)
    if isinstance(copy, dict) and isinstance(copy.get("text"), str):
        name = copy.get("name", copy.get("path"))  # `path`: recorded by exptrack before names
        return parse(copy["text"], f"{name} (as recorded on study {study.study_name!r})")
    return load(DEFAULT_FILE if DEFAULT_FILE.is_file() else PACKAGED_DASHBOARD)


def _panel_entry(entry: Any, path: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(entry, str | dict) or (isinstance(entry, dict) and len(entry) != 1):
        raise UserError(f"{path}: a panel is a name or `name: {{options}}`, got {cfg.shown(entry)}")
    name, options = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
    if name not in PANELS:
        raise UserError(f"{path}: unknown panel {name!r}{did_you_mean(name, PANELS)}; choose from {', '.join(PANELS)}")
    if not isinstance(options or {}, dict):
        raise UserError(f"{path}: panel {name!r} takes `{{option: value}}`, got {cfg.shown(options)}")
    return str(name), dict(options or {})


def renderer_for(spec: Study) -> Callable[[optuna.Study], dict[str, str | bytes]] | None:
    """The study's dashboard as a renderer, its file validated now (before any store is created);
    None when the study names no dashboard or its default file is absent."""
    path = spec.dashboard_path()
    if path is None:
        return None
    return functools.partial(artifacts, dashboard=load(path))


def artifacts(study: optuna.Study, dashboard: Path | Dashboard) -> dict[str, str | bytes]:
    """What the study run carries: the interactive page, and its main plots as a PNG, which
    MLflow's artifact viewer shows (it previews the plotly page as a blank pane)."""
    files: dict[str, str | bytes] = {records.DASHBOARD_ARTIFACT: render(study, dashboard)}
    image = overview.overview_png(study)
    if image is not None:
        files[records.DASHBOARD_IMAGE] = image
    return files


def publish(
    study_name: str,
    dashboard: Path | None,
    target: Path,
    storage: str | None,
    tracking_uri: str | None,
    warn: Callable[[str], None] = print,
) -> str | None:
    """`exp report`: write the page to `target` and log it on the study's MLflow run; returns
    that run's id, or None when MLflow has no record of the study or the write failed.
    Without `dashboard`, the one the study was searched with."""
    output.check_file(target, "--out", f"{study_name}-dashboard.html")  # before any store is read
    study = optuna_storage.load_existing_study(study_name, storage)
    tracker = queries.existing_store(
        tracking_uri, warn
    )  # adds to a store, never creates one; a wrong one ends here
    files = artifacts(study, load(dashboard) if dashboard else recorded(study))
    output.write_file(target, str(files[records.DASHBOARD_ARTIFACT]), "--out")
    if tracker is None:
        return None
    run_id = queries.study_run_id(tracker, study_name, study.user_attrs.get(records.STUDY_UID_ATTR))
    for name, content in files.items():
        tracker.artifacts.content(run_id, content, name)
    return run_id if run_id and not tracker.failures else None


def render(study: optuna.Study, dashboard: Path | Dashboard) -> str:
    """The whole page. A panel that cannot be drawn yet (too few trials) says so in its place."""
    import plotly.offline

    title, panels = load(dashboard) if isinstance(dashboard, Path) else dashboard
    title = title.replace("{study}", study.study_name)  # not str.format: `{x}` in a title is text
    sections = [f"<h1>{html.escape(title)}</h1>", f"<p>{_counts(study)}</p>"]
    for name, options in panels:
        sections.append(f"<h2>{html.escape(name.replace('_', ' '))}</h2>")
        sections.append(_panel_html(study, name, options))
    script = f"<script>{plotly.offline.get_plotlyjs()}</script>"
    style = "body{font-family:sans-serif;margin:2em;max-width:1200px} .note{color:#666}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style>{script}</head><body>{''.join(sections)}</body></html>"


def _panel_html(study: optuna.Study, name: str, options: Mapping[str, Any]) -> str:
    try:
        with (
            warnings.catch_warnings()
        ):  # importance estimators warn about small samples; the page says enough
            warnings.simplefilter("ignore")
            figure = PANELS[name](study, options)
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # e.g. importances need 2+ complete trials
        return f"<p class='note'>not drawn yet: {html.escape(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)}</p>"
    if figure is None:
        return "<p class='note'>no data yet</p>"
    return str(_tidy(figure).to_html(full_html=False, include_plotlyjs=False))


def _tidy(figure: Any) -> Any:
    """Room for every label: axes grow their margins to fit long names (`loss.focal.gamma`), and
    the legend sits above the plot, where it cannot cover a second axis on the right."""
    figure.update_xaxes(automargin=True)
    figure.update_yaxes(automargin=True)
    figure.update_layout(legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0})
    return figure


def _counts(study: optuna.Study) -> str:
    states = [t.state for t in study.get_trials(deepcopy=False)]
    parts = [f"{states.count(s)} {s.name.lower()}" for s in TrialState if states.count(s)]
    return html.escape(", ".join(parts) or "no trials yet")


def _completed(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Complete trials with real values (not the placeholders of trials that ran out of memory)."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return [t for t in done if not study_store.out_of_memory(t)]


def _objective_names(study: optuna.Study) -> list[str]:
    return study_store.objective_names(study) or [
        str(study.user_attrs.get(records.STUDY_METRIC_ATTR, "value"))
    ] + [f"objective {i}" for i in range(1, len(study.directions))]


def _target(study: optuna.Study, options: Mapping[str, Any]) -> dict[str, Any]:
    """Optuna's plots of one value, named: for several objectives, the one named by the panel's
    `objective:` option (default: the first)."""
    if len(study.directions) == 1:
        return {"target_name": _metric(study)}
    names = _objective_names(study)
    name = str(options.get("objective", names[0]))
    if name not in names:
        raise ValueError(f"objective {name!r} is not one of {', '.join(names)}")
    index = names.index(name)
    return {"target": lambda t: t.values[index], "target_name": name}


def _metric(study: optuna.Study) -> str:
    """The objective's name (`val_accuracy`), for axis titles instead of "Objective Value"."""
    return str(study.user_attrs.get(records.STUDY_METRIC_ATTR, "Objective Value"))


def _whole_number_ticks(last: int) -> dict[str, Any]:
    """Ticks on whole numbers only (epochs, trial numbers; plotly would put one at 1.5), ten at most."""
    return {"tickmode": "linear", "tick0": 0, "dtick": max(1, math.ceil(last / 10))}


@register_panel("optimization_history")
def optimization_history(study: optuna.Study, options: Mapping[str, Any]) -> Any:
    if not _completed(study):
        return None
    figure = optuna.visualization.plot_optimization_history(study, **_target(study, options))
    last = max(t.number for t in study.get_trials(deepcopy=False))
    return figure.update_xaxes(**_whole_number_ticks(last))


@register_panel("param_importances")
def param_importances(study: optuna.Study, options: Mapping[str, Any]) -> Any:
    if len(_completed(study)) < 2:
        raise ValueError("parameter importances need at least 2 complete trials")
    return optuna.visualization.plot_param_importances(
        study, params=options.get("params"), **_target(study, options)
    )


@register_panel("parallel_coordinate")
def parallel_coordinate(study: optuna.Study, options: Mapping[str, Any]) -> Any:
    completed = _completed(study)
    if not completed:
        return None
    seen = {p for t in completed for p in t.params}
    params = [p for p in options.get("params", sorted(seen)) if p in seen]
    return optuna.visualization.plot_parallel_coordinate(
        study, params=params or None, **_target(study, options)
    )


@register_panel("pareto_front")
def pareto_front(study: optuna.Study, options: Mapping[str, Any]) -> Any:
    """Every complete trial in objective space, the Pareto front highlighted; infeasible trials
    (broken constraints, out of memory) drawn apart, from the constraint values Optuna stored."""
    if len(study.directions) == 1:
        raise ValueError(
            "a study with one objective has no Pareto front; declare objectives= in the study file"
        )
    if not _completed(study):
        return None
    names = _objective_names(study)
    shown = [names.index(n) for n in options.get("objectives", names[:3])]
    return optuna.visualization.plot_pareto_front(
        study,
        targets=lambda t: tuple(t.values[i] for i in shown),
        target_names=[names[i] for i in shown],
        include_dominated_trials=True,
    )


@register_panel("learning_curves")
def learning_curves(study: optuna.Study, options: Mapping[str, Any]) -> Any:
    """Per-epoch value of the study's metric for every trial; pruned and failed trials greyed."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for trial in study.get_trials(deepcopy=False):
        if not trial.intermediate_values:
            continue
        steps = sorted(trial.intermediate_values)
        grey = trial.state != TrialState.COMPLETE
        figure.add_trace(
            go.Scatter(
                x=steps,
                y=[trial.intermediate_values[s] for s in steps],
                mode="lines+markers",
                name=f"trial {trial.number} ({trial.state.name.lower()})",
                line={"color": "#bbbbbb"} if grey else {},
                opacity=0.6 if grey else 1.0,
            )
        )
    if not figure.data:
        return None
    last = max(max(t.intermediate_values) for t in study.get_trials(deepcopy=False) if t.intermediate_values)
    figure.update_layout(xaxis={"title": "epoch", **_whole_number_ticks(last)}, yaxis_title=_metric(study))
    return figure.update_layout(height=450)


@register_panel("profile_breakdown")
def profile_breakdown(study: optuna.Study, options: Mapping[str, Any]) -> Any:
    """Stacked data / compute / eval seconds per trial, with training samples/s on a second axis."""
    import plotly.graph_objects as go

    trials = [t for t in study.get_trials(deepcopy=False) if record(t).has_costs]
    if not trials:
        return None
    labels = [f"trial {t.number}" for t in trials]
    figure = go.Figure()
    for phase in ("data", "compute", "eval"):
        figure.add_trace(
            go.Bar(
                x=labels,
                y=[record(t).costs.get(f"{phase}_seconds", 0.0) for t in trials],
                name=f"{phase} s",
            )
        )
    figure.add_trace(
        go.Scatter(
            x=labels,
            y=[record(t).costs.get("train_samples_per_second", 0.0) for t in trials],
            name="train samples/s",
            yaxis="y2",
            mode="markers+lines",
        )
    )
    figure.update_layout(  # from zero: neither seconds nor samples/s can be negative
        barmode="stack",
        height=450,
        yaxis={"title": "seconds", "rangemode": "tozero"},
        yaxis2={"title": "samples/s", "overlaying": "y", "side": "right", "rangemode": "tozero"},
    )
    return figure


COST_DRIVERS = ("batch_size", "freeze_depth", "image_size")  # the parameters that set a trial's cost


@register_panel("cost_vs_params")
def cost_vs_params(study: optuna.Study, options: Mapping[str, Any]) -> Any:
    """One cost figure (option `cost`, default `seconds_per_epoch`; any profile figure) against each
    parameter that drives it (option `params`, default batch size, freezing depth, image size), one
    plot each; complete trials as dots, pruned ones as crosses, since they paid for fewer epochs."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    cost = str(options.get("cost", "seconds_per_epoch"))
    trials = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        if cost in record(t).costs
    ]
    drivers = [
        p for p in options.get("params", COST_DRIVERS) if any(_setting(t, p) is not None for t in trials)
    ]
    if not trials or not drivers:
        return None
    figure = make_subplots(rows=1, cols=len(drivers), shared_yaxes=True, horizontal_spacing=0.04)
    for state, symbol in ((TrialState.COMPLETE, "circle"), (TrialState.PRUNED, "x")):
        chosen = [t for t in trials if t.state == state]
        for column, name in enumerate(drivers, start=1):
            shown = [t for t in chosen if _setting(t, name) is not None]
            figure.add_trace(
                go.Scatter(
                    x=[_setting(t, name) for t in shown],
                    y=[record(t).costs[cost] for t in shown],
                    text=[f"trial {t.number}" for t in shown],
                    mode="markers",
                    marker={"symbol": symbol, "size": 9},
                    name=state.name.lower(),
                    legendgroup=state.name,
                    showlegend=column == 1 and bool(chosen),
                ),
                row=1,
                col=column,
            )
            figure.update_xaxes(title_text=name, row=1, col=column)
    figure.update_yaxes(title_text=cost, rangemode="tozero", row=1, col=1)  # a cost is never negative
    return figure.update_layout(height=420)


def _setting(trial: optuna.trial.FrozenTrial, name: str) -> Any:
    """A parameter as the trial ran it: searched (its param) or fixed (its stored config)."""
    if name in trial.params:
        return trial.params[name]
    return record(trial).config.get(name)
