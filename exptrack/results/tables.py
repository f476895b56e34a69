"""Tables of results: a study's trials (Optuna joined to MLflow) and the studies in a storage,
as pandas DataFrames, rendered as a rich table, CSV, JSON or markdown. No torch is loaded here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from exptrack import config as cfg
from exptrack import records, study_store
from exptrack.errors import UserError
from exptrack.stores import optuna_storage
from exptrack.tracking.queries import by_trial_number, read_experiment_ids, read_trial_runs

STATES = ("complete", "pruned", "fail", "running", "waiting", "all")
FORMATS = ("table", "csv", "json", "markdown")
BEST = "best"  # --sort best: the objective, best first for the study's direction
PROFILE_METRICS = ("seconds_per_epoch", "train_samples_per_second")  # shown beside each trial
# `--costs`: what each trial cost, beside its value(s): speed, time, peak memory (the GPU's when the
# trial ran on one, else the process's) and MFU; a column no trial has (MFU on a CPU) is left out
COST_COLUMNS = (
    "train_samples_per_second",
    "seconds_per_epoch",
    "peak_cuda_allocated_mb",
    "peak_rss_mb",
    "mfu",
)


def value_columns(study: optuna.Study) -> list[str]:
    """`value` for one objective; for several, each objective's name (`value_0`, `value_1`, ...
    for a study that did not record them)."""
    n = len(study.directions)
    if n == 1:
        return ["value"]
    return study_store.objective_names(study) or [f"value_{i}" for i in range(n)]


RESUMED_COLUMN = "resumed"  # a retry that resumed from a checkpoint: whose, and after which epoch


def trials_frame(study: optuna.Study, runs: list[Any], costs: bool = False) -> pd.DataFrame:
    """One row per trial: number, state, value(s), `pareto` (on the Pareto front, for several
    objectives), `feasible` (for a study with constraints), every sampled parameter (dotted
    names), duration, MLflow run id and status, profile figures. `runs` is the study's trial runs.
    With `costs`, the cost figures (`COST_COLUMNS`) come right after the value(s), to compare."""
    by_trial = by_trial_number(runs)
    values = value_columns(study)
    shown_costs = [m for m in COST_COLUMNS if m not in values] if costs else []
    profile = [m for m in PROFILE_METRICS if m not in values and m not in shown_costs]
    trials = study_store.kept(study.get_trials(deepcopy=False))
    rows = [_trial_row(t, values, by_trial.get(t.number), [*shown_costs, *profile]) for t in trials]
    mixed = [key for key in mixed_fixed(trials) if key != "weights"]  # weights: a column of its own
    for row, trial in zip(rows, trials, strict=True):  # a mixed study shows what differs
        row.update({key: study_store.record(trial).config.get(key) for key in mixed})
    marks = _marks(study, trials)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=["number", "state", *values, *marks, "duration_s", "run_id"])
    for column, flags in marks.items():
        frame[column] = flags
    shown_costs = [c for c in shown_costs if frame[c].notna().any()]
    fixed = ["number", "state", *values, *marks, *shown_costs]
    resumed = [RESUMED_COLUMN] if RESUMED_COLUMN in frame.columns else []  # only where a trial resumed
    tail = ["weights", *resumed, "duration_s", "run_id", "run_status", *profile]
    params = sorted(c for c in frame.columns if c not in fixed and c not in tail and c not in COST_COLUMNS)
    return frame.reindex(columns=[*fixed, *params, *tail])


def _marks(study: optuna.Study, trials: list[FrozenTrial]) -> dict[str, list[bool | None]]:
    """`pareto` for several objectives; `feasible` for a study with constraints or a trial that
    ran out of memory (None for a trial without constraint values: running, failed)."""
    marks: dict[str, list[bool | None]] = {}
    if len(study.directions) > 1:
        front = {t.number for t in study_store.pareto_front(study)}
        marks["pareto"] = [t.number in front for t in trials]
    declared = study.user_attrs.get(records.STUDY_CONSTRAINTS_ATTR)
    if declared or any(not study_store.is_feasible(t) for t in trials):
        marks["feasible"] = [
            study_store.is_feasible(t) if study_store.violations(t) else None for t in trials
        ]
    return marks


def trials_table(
    study_name: str,
    storage: str | None,
    tracking_uri: str | None,
    state: str = "all",
    sort: str = "best",
    top: int | None = None,
    warn: Callable[[str], None] = print,
    costs: bool = False,
) -> pd.DataFrame:
    """`exp trials`: the study's trials from Optuna joined to their MLflow runs (one query), then
    filtered, sorted and cut. MLflow being unreadable only costs the run columns."""
    study = optuna_storage.load_existing_study(study_name, storage)
    runs = read_trial_runs(study_name, tracking_uri, warn, study.user_attrs.get(records.STUDY_UID_ATTR))
    mixed = mixed_fixed(study.get_trials(deepcopy=False))
    if mixed:
        warn(
            f"trials of study {study_name!r} differ in fixed config ({', '.join(mixed)}; shown as "
            "columns): compare only trials alike"
        )
    return select(trials_frame(study, runs, costs), study, state, sort, top)


def mixed_fixed(trials: list[FrozenTrial]) -> list[str]:
    """The fixed-config keys (not searched, not how a trial runs) whose values differ between a
    study's trials: an exptrack that did not refuse a changed fixed config let a `--set epochs=1`
    quick look into the study. Weights compare as asked for (an offline fallback is no change)."""
    seen: dict[str, set[str]] = {}
    for trial in trials:
        stored = study_store.record(trial)
        config = stored.config
        if not config:
            continue
        config = cfg.as_recorded(config)  # a trial from before the test split had none
        config["weights"] = stored.weights_requested or config.get("weights")
        searched = {name.split(".")[0] for name in trial.params}
        for key, value in cfg.meaning(config, searched).items():
            seen.setdefault(key, set()).add(json.dumps(value, sort_keys=True))
    return sorted(key for key, values in seen.items() if len(values) > 1)


def _trial_row(
    trial: FrozenTrial, value_cols: list[str], run: Any | None, profile: list[str]
) -> dict[str, Any]:
    row: dict[str, Any] = {"number": trial.number, "state": study_store.state_name(trial)}
    # an out-of-memory trial's values are placeholders for the sampler: shown blank
    values = trial.values if trial.values and not study_store.out_of_memory(trial) else None
    row.update(zip(value_cols, values or [math.nan] * len(value_cols), strict=True))
    row.update(trial.params)
    row["weights"] = weights_used(trial)
    stored = study_store.record(trial)
    if stored.resumed_from_epoch is not None:  # its duration covers only the epochs it trained
        row[RESUMED_COLUMN] = f"trial {stored.retry_of} after epoch {stored.resumed_from_epoch}"
    start, end = trial.datetime_start, trial.datetime_complete
    row["duration_s"] = (end - start).total_seconds() if start and end else math.nan
    # MLflow's record wins; the trial's own link still names the run when MLflow is elsewhere.
    row["run_id"] = run.info.run_id if run else study_store.record(trial).run_id
    row["run_status"] = run.info.status if run else None
    for key in profile:
        row[key] = _figure(trial, run, key)
    return row


def _figure(trial: FrozenTrial, run: Any | None, name: str) -> float:
    """A cost figure: MLflow's record (a tag under `profile/`), else the trial's own copy in Optuna."""
    if run is not None and records.profile_tag(name) in run.data.tags:
        return float(run.data.tags[records.profile_tag(name)])
    return float(study_store.record(trial).costs.get(name, math.nan))


def weights_used(trial: FrozenTrial) -> str | None:
    """The weights the trial started from, and what was asked for when that could not be had:
    `none (imagenet unavailable)`."""
    stored = study_store.record(trial)
    used, asked = stored.config.get("weights"), stored.weights_requested
    return f"{used} ({asked} unavailable)" if asked and used else used


def select(
    frame: pd.DataFrame, study: optuna.Study, state: str = "all", sort: str = BEST, top: int | None = None
) -> pd.DataFrame:
    """Filter by state, sort (`best`, a column, or `-column` for descending), keep the first `top`."""
    state = state.lower()
    if state not in STATES:
        raise UserError(f"--state {state!r} is not one of {', '.join(STATES)}")
    if state != "all":
        frame = frame[frame["state"] == state.upper()]
    key, descending = sort.removeprefix("-"), sort.startswith("-")
    if key == BEST:
        frame = _best_first(frame, study)
    elif key not in frame.columns:
        raise UserError(f"--sort {sort!r}: no such column; use best or one of {', '.join(frame.columns)}")
    else:
        frame = frame.sort_values(key, ascending=not descending, na_position="last", kind="stable")
    if top is not None:
        if top < 1:
            raise UserError(f"--top must be at least 1, got {top}")
        frame = frame.head(top)
    return frame.reset_index(drop=True)


def _best_first(frame: pd.DataFrame, study: optuna.Study) -> pd.DataFrame:
    """Best first: by value for one objective, the Pareto front (by number) for several; an
    infeasible trial after every feasible one."""
    if len(study.directions) > 1:
        frame = frame.sort_values("number", kind="stable")
        marks = ["pareto"]
    else:
        maximize = study_store.is_maximized(study)
        frame = frame.sort_values("value", ascending=not maximize, na_position="last", kind="stable")
        marks = []
    if "feasible" in frame.columns:
        marks = ["feasible", *marks]
    for mark in reversed(marks):  # stable sorts: the first mark decides last
        frame = frame.sort_values(
            mark, ascending=False, key=lambda c: c.fillna(True).astype(bool), kind="stable"
        )
    return frame


def studies_frame(
    storage: str | None, tracking_uri: str | None = None, warn: Callable[[str], None] = print
) -> pd.DataFrame:
    """One row per study: name, direction(s), trials by state, best value, MLflow experiment id."""
    opened, _ = optuna_storage.readable_storage(storage)  # or one line saying it cannot be read
    rows = []
    for summary in optuna.get_all_study_summaries(storage=opened, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=opened)
        trials = study_store.kept(study.get_trials(deepcopy=False))
        row: dict[str, Any] = {
            "study": summary.study_name,
            "direction": ",".join(d.name.lower() for d in study.directions),
            "trials": len(trials),
        }
        shown = [study_store.state_name(t) for t in trials]  # out of memory counts as fail
        for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING):
            row[state.name.lower()] = shown.count(state.name)
        row["best_value"] = _best_value(study)
        rows.append(row)
    experiments = read_experiment_ids(tracking_uri, warn) if rows else {}
    for row in rows:
        row["mlflow_experiment"] = experiments.get(row["study"])
    columns = ["study", "direction", "trials", "complete", "pruned", "fail", "running", "best_value"]
    return pd.DataFrame(rows, columns=[*columns, "mlflow_experiment"])


def _best_value(study: optuna.Study) -> float:
    if len(study.directions) > 1:
        return math.nan  # a Pareto set has no single best value
    try:
        return float(study.best_value)
    except ValueError:  # no complete trial yet
        return math.nan


# --- rendering -----------------------------------------------------------------------------


def cell(value: Any) -> str:
    """A value as a short human string: floats to 4 significant digits, missing as blank."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def to_csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False)


def to_json(frame: pd.DataFrame) -> str:
    """Records with full float precision (pandas' `to_json` keeps 10 digits) and null for missing."""
    records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    return json.dumps(records, indent=2, default=str) + "\n"


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub table; written here rather than via pandas, which would need `tabulate`."""
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines) + "\n"


def to_rich(frame: pd.DataFrame, title: str) -> Any:
    """The terminal view: run status and profile figures stay in csv/json, to keep it narrow (the
    `--costs` columns sit before them, so they show). Every column is headed by the parameter's
    one name (`loss.focal.gamma`, as in Optuna and MLflow)."""
    from rich import box
    from rich.table import Table

    if "run_status" in frame.columns:  # it and the profile figures after it (an objective stays)
        frame = frame.iloc[:, : list(frame.columns).index("run_status")]
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in frame.columns:
        table.add_column(str(column), no_wrap=True)
    for row in frame.itertuples(index=False):
        table.add_row(*(cell(v) for v in row))
    return table


def print_wide(console: Any, renderable: Any) -> None:
    """Print at the renderable's natural width even past the terminal's: a folded number or run
    id misleads, a long line only wraps (or scrolls in `less -S`)."""
    from rich.console import Console
    from rich.measure import Measurement

    width = Measurement.get(console, console.options.update_width(10_000), renderable).maximum
    if width <= console.width:
        console.print(renderable)
    else:
        Console(file=console.file, width=width, force_terminal=console.is_terminal).print(renderable)


RENDERERS: dict[str, Callable[[pd.DataFrame], str]] = {
    "csv": to_csv,
    "json": to_json,
    "markdown": to_markdown,
}
