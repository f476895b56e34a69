"""The results commands on `exp`: trials, studies, export, train, ui (parsing and messages only).

`trials`, `studies` and `export` never import torch, so they answer in about a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from exptrack.cli import SetOpt, StorageOpt, TrackingOpt, app, err, out
from exptrack.errors import UserError, redact

FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table | csv | json | markdown")]


def _render(frame: object, fmt: str, title: str) -> None:
    from exptrack import results

    if fmt == "table":
        results.print_wide(out, results.to_rich(frame, title))  # type: ignore[arg-type]
    elif fmt in results.RENDERERS:
        # plain stdout: rich would wrap long lines and break CSV/JSON for a pipe
        typer.echo(results.RENDERERS[fmt](frame), nl=False)  # type: ignore[arg-type]
    else:
        raise UserError(f"--format {fmt!r} is not one of {', '.join(results.FORMATS)}")


@app.command()
def trials(
    study_name: Annotated[str, typer.Argument(help="The study's name, e.g. finetune")],
    fmt: FormatOpt = "table",
    sort: Annotated[
        str, typer.Option(help="best (the objective, best first), a column, or -column for descending")
    ] = "best",
    state: Annotated[str, typer.Option(help="complete | pruned | fail | running | all")] = "all",
    top: Annotated[int | None, typer.Option(help="Show only the first K rows after sorting")] = None,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Table of a study's trials: state, value, parameters, duration and MLflow run id."""
    from exptrack import results, stores
    from exptrack.tracking import Tracker

    study = stores.load_existing_study(study_name, storage)
    tracker = Tracker(tracking_uri, warn=lambda m: err.print(f"[yellow]{m}[/yellow]"))
    runs = []
    try:
        if not stores.missing_sqlite_file(tracker.uri):  # never create an empty store by looking
            runs = tracker.trial_runs(study_name)
    except Exception as exc:  # the Optuna side alone still answers the question
        err.print(
            f"[yellow]MLflow {redact(tracker.uri)} not read ({type(exc).__name__}); run ids from Optuna[/yellow]"
        )
    frame = results.select(results.trials_frame(study, runs), study, state, sort, top)
    _render(frame, fmt, f"{study_name}: {len(frame)} trials")


@app.command()
def studies(storage: StorageOpt = None, fmt: FormatOpt = "table") -> None:
    """The studies in an Optuna storage: direction, trials by state, best value."""
    from exptrack import results, stores

    frame = results.studies_frame(storage)
    if frame.empty:
        err.print(f"no studies in {redact(stores.resolve_storage(storage))} yet: run exp search first")
        return
    _render(frame, fmt, f"studies in {redact(stores.resolve_storage(storage))}")


@app.command()
def export(
    study_name: Annotated[str, typer.Argument(help="The study's name, e.g. finetune")],
    top: Annotated[
        int | None,
        typer.Option(help="How many of the best trials [default: 1; multi-objective: the Pareto set]"),
    ] = None,
    out_dir: Annotated[
        str, typer.Option("--out", help="Directory for trial-NNN.yaml files, or - for stdout")
    ] = "best",
    storage: StorageOpt = None,
) -> None:
    """Write the best trials' configs as YAML files that exp train runs."""
    from exptrack import export as exporter
    from exptrack import stores

    study = stores.load_existing_study(study_name, storage)
    items = exporter.export(study, top)
    if out_dir == "-":
        if len(items) > 1:
            raise UserError(
                f"--out - prints one config, but {len(items)} were selected; pass --top 1 or a directory"
            )
        typer.echo(items[0].yaml(), nl=False)
        return
    for item, path in zip(items, exporter.write(items, Path(out_dir)), strict=True):
        value = item.provenance["value"]
        shown = f"{value:.6g}" if isinstance(value, float) else str(value)
        out.print(
            f"trial {item.trial.number} ({shown}) -> {path}   reproduce: exp train {path}",
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def train(
    config_file: Annotated[Path, typer.Argument(help="A config YAML, e.g. best/trial-017.yaml")],
    set_: SetOpt = None,
    register: Annotated[
        str | None, typer.Option(help="Register the trained model under this name in the MLflow registry")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="torch CPU threads [default: the trial's, for identical results]")
    ] = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Train one config as a standalone MLflow run, logging the trained model."""
    from exptrack import reproduce

    warn = lambda m: err.print(f"[yellow]{m}[/yellow]")  # noqa: E731
    outcome = reproduce.reproduce(config_file, set_ or [], tracking_uri, register, threads, warn)
    final = ", ".join(f"{k}={v:.4f}" for k, v in outcome.final.items())
    out.print(
        f"finished {outcome.config.epochs} epochs on {outcome.threads} threads: {final}",
        highlight=False,
        soft_wrap=True,
    )
    line = reproduce.compare_line(outcome)
    if line:
        out.print(line, highlight=False, soft_wrap=True)
    out.print(
        f"MLflow run {outcome.run_id} in experiment {outcome.experiment!r}; model: runs:/{outcome.run_id}/model",
        highlight=False,
        soft_wrap=True,
    )
    if outcome.registered:
        out.print(f"registered: {outcome.registered}", highlight=False, soft_wrap=True)


@app.command()
def ui(
    port: Annotated[int, typer.Option(help="Port to listen on")] = 5000,
    host: Annotated[
        str, typer.Option(help="Interface to bind; loopback unless told otherwise")
    ] = "127.0.0.1",
    tracking_uri: TrackingOpt = None,
) -> None:
    """The MLflow UI over the tracking store a search wrote; Ctrl-C stops it."""
    from exptrack import ui as mlflow_ui

    code = mlflow_ui.serve(tracking_uri, host, port, lambda m: out.print(m, highlight=False, soft_wrap=True))
    if code:
        raise UserError(f"mlflow server stopped with exit code {code}")
