"""The after-search commands: `trials`, `studies`, `export`, `report`, `train`, `ui` (parsing and
messages only). `trials`, `studies` and `export` never import torch, so they answer in about a second."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from exptrack import records
from exptrack.cli.options import (
    FormatOpt,
    RichTasks,
    SetOpt,
    StorageOpt,
    TrackingOpt,
    default,
    err,
    exit_code_on_signal,
    out,
    warn,
)
from exptrack.errors import UserError, redact
from exptrack.stores.url import resolve_storage


def _render(frame: object, fmt: str, title: str) -> None:
    from exptrack.results import tables

    if fmt == "table":
        tables.print_wide(out, tables.to_rich(frame, title))  # type: ignore[arg-type]
    elif fmt in tables.RENDERERS:
        # plain stdout: rich would wrap long lines and break CSV/JSON for a pipe
        typer.echo(tables.RENDERERS[fmt](frame), nl=False)  # type: ignore[arg-type]
    else:
        raise UserError(f"--format {fmt!r} is not one of {', '.join(tables.FORMATS)}")


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
    costs: Annotated[
        bool,
        typer.Option(
            "--costs",
            help="Show what each trial cost beside its value: samples/s, seconds per epoch, peak "
            "memory (GPU or process) and MFU (on a GPU of known peak)",
        ),
    ] = False,
) -> None:
    """Table of a study's trials: state, value, parameters, duration and MLflow run id."""
    from exptrack.results import tables

    _finish_outage(study_name, storage, tracking_uri)
    frame = tables.trials_table(study_name, storage, tracking_uri, state, sort, top, warn, costs)
    _render(frame, fmt, f"{study_name}: {len(frame)} trials")


def _finish_outage(study_name: str, storage: str | None, tracking_uri: str | None) -> None:
    """What an outage left (a journal, a trial whose run could not be opened) is written before
    the table is read, as `exp sync` would (the search's modules are imported only then)."""
    from exptrack import study_store  # imports optuna: not for `exp --help` (0.17 s of its 0.6 s)
    from exptrack.stores.optuna_storage import load_existing_study
    from exptrack.tracking.journal import folder_for

    url = resolve_storage(storage)
    left = folder_for(url, study_name).is_dir() or any(
        study_store.record(t).run_pending
        for t in load_existing_study(study_name, storage).get_trials(deepcopy=False)
    )
    if left:
        from exptrack.search.sync import sync_study

        pending, line = sync_study(study_name, storage, tracking_uri, warn)
        if pending:
            warn(line)


def studies(storage: StorageOpt = None, tracking_uri: TrackingOpt = None, fmt: FormatOpt = "table") -> None:
    """The studies in an Optuna storage: direction, trials by state, best value, MLflow experiment."""
    from exptrack.results import tables

    frame = tables.studies_frame(storage, tracking_uri, warn)
    where = redact(resolve_storage(storage))
    if frame.empty:
        err.print(f"no studies in {where} yet: run exp search first")
        return
    _render(frame, fmt, f"studies in {where}")


def export(
    study_name: Annotated[str, typer.Argument(help="The study's name, e.g. finetune")],
    top: Annotated[
        int | None,
        typer.Option(help=f"How many of the best trials {default('1; multi-objective: the Pareto set')}"),
    ] = None,
    out_dir: Annotated[
        str, typer.Option("--out", help="Directory for trial-NNN.yaml files, or - for stdout")
    ] = "best",
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Write the best trials' configs as YAML files that exp train runs."""
    from exptrack.results import export as exporter
    from exptrack.results import output

    folder = None if out_dir == "-" else output.check_path(out_dir, "--out")  # before a store is read
    if folder is not None:
        output.check_directory(folder, "--out")
    items = exporter.export_study(study_name, top, storage, tracking_uri, warn)
    if out_dir == "-":
        if len(items) > 1:
            raise UserError(
                f"--out - prints one config, but {len(items)} were selected; pass --top 1 or a directory"
            )
        typer.echo(items[0].yaml(), nl=False)
        return
    assert folder is not None
    for item, path in zip(items, exporter.write(items, folder), strict=True):
        value = item.provenance[records.PROVENANCE_VALUE]
        shown = f"{value:.6g}" if isinstance(value, float) else str(value)
        out.print(
            f"trial {item.trial.number} ({shown}) -> {path}   reproduce: exp train {path}",
            highlight=False,
            soft_wrap=True,
        )


def report(
    study_name: Annotated[str, typer.Argument(help="The study's name, e.g. finetune")],
    dashboard: Annotated[
        Path | None,
        typer.Option(
            help="Dashboard file: which panels to draw "
            + default("the one the study was searched with, else dashboards/study.yaml")
        ),
    ] = None,
    out_file: Annotated[
        Path | None, typer.Option("--out", help=f"HTML file to write {default('STUDY-dashboard.html')}")
    ] = None,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Render a study's dashboard to a standalone HTML page and log it on the study's MLflow run."""
    from exptrack.results import dashboards, output
    from exptrack.study import check_name

    check_name(study_name, "exp report")  # the default page is NAME-dashboard.html: no path in it
    target = out_file or Path(f"{study_name}-dashboard.html")
    if out_file is not None:
        output.check_path(str(out_file), "--out")
    run_id = dashboards.publish(study_name, dashboard, target, storage, tracking_uri, warn)
    where = f" and on MLflow run {run_id}" if run_id else ""
    out.print(f"dashboard written to {target}{where}")


def train(
    config_file: Annotated[Path, typer.Argument(help="A config YAML, e.g. best/trial-017.yaml")],
    set_: SetOpt = None,
    register: Annotated[
        str | None, typer.Option(help="Register the trained model under this name in the MLflow registry")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="torch CPU threads " + default("the trial's, for identical results"))
    ] = None,
    profile: Annotated[
        bool,
        typer.Option(
            "--profile",
            help="Trace a few training steps with torch.profiler (profile/trace.json.gz, profile/ops.csv)",
        ),
    ] = False,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Train one config as a standalone MLflow run, logging the trained model."""
    from exptrack.results import train_run
    from exptrack.search import signals
    from exptrack.training import progress

    shown = progress.shown_by(RichTasks())  # a weight download or an image folder draws a bar
    # SIGTERM (which a scheduler sends) closes the run as FAILED like Ctrl-C, and exits 143
    interrupts = signals.Interrupts(warn, work="the run")
    interrupts.install()
    with exit_code_on_signal(), shown, interrupts.interruptible():
        outcome = train_run.reproduce(config_file, set_ or [], tracking_uri, register, threads, warn, profile)
    final = ", ".join(f"{k}={v:.4f}" for k, v in outcome.final.items())
    say = lambda line: out.print(line, highlight=False, soft_wrap=True)  # noqa: E731
    say(f"finished {outcome.config.epochs} epochs on {outcome.threads} threads: {final}")
    if outcome.test:  # the held-out figure: an unbiased estimate, unlike the val value the search chose by
        scored = ", ".join(f"{k}={v:.4f}" for k, v in outcome.test.items())
        say(f"test split ({outcome.test_samples} images the search never saw): {scored}")
    line = train_run.compare_line(outcome)
    if line:
        say(line)
    model = f"; model: runs:/{outcome.run_id}/model" if outcome.model_uri else ""  # none: not handed over
    say(f"MLflow run {outcome.run_id} in experiment {outcome.experiment!r}{model}")
    if outcome.run_url:  # MLflow's own "View run" link would open the GenAI layout: suppressed
        say(f"run: {outcome.run_url}")
    if outcome.registered:
        say(f"registered: {outcome.registered}")


def confirm(
    study_name: Annotated[str, typer.Argument(help="The study's name, e.g. finetune")],
    top: Annotated[int, typer.Option(help="How many of the best trials to repeat")] = 3,
    seeds: Annotated[int, typer.Option(help="Fresh seeds per config (2 or more to compare)")] = 3,
    fmt: FormatOpt = "table",
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Re-run the best configs with fresh seeds: mean, sd and 95% interval on val and test, and
    whether the top two differ. Re-running it trains only the repeats not yet recorded."""
    from exptrack.results import confirm as confirmer
    from exptrack.search import signals
    from exptrack.training import progress

    shown = progress.shown_by(RichTasks())
    # SIGTERM closes the repeat's run FAILED like Ctrl-C, and exits 143; recorded repeats stay
    interrupts = signals.Interrupts(warn, work="the repeat")
    interrupts.install()

    def said(repeat: confirmer.Repeat) -> None:
        shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(repeat.figures.items()) if k != "train_loss")
        how = "trained" if repeat.new else "recorded"
        err.print(f"trial {repeat.number} seed {repeat.seed} ({how}): {shown}", highlight=False)

    with exit_code_on_signal(), shown, interrupts.interruptible():
        result = confirmer.confirm(study_name, top, seeds, storage, tracking_uri, warn, said)
    _render(result.frame, fmt, f"{study_name}: {len(result.frame)} configs repeated")
    say = out.print if fmt in ("table", "markdown") else err.print  # csv and json stay parseable
    for line in [*result.lines, result.verdict]:
        say(line, highlight=False, soft_wrap=True)
    say(f"{result.ran} repeats trained now, {result.reused} found recorded", highlight=False)


def ui(
    port: Annotated[int, typer.Option(help="Port to listen on")] = 5000,
    host: Annotated[
        str, typer.Option(help="Interface to bind; loopback unless told otherwise")
    ] = "127.0.0.1",
    tracking_uri: TrackingOpt = None,
) -> None:
    """The MLflow UI over the tracking store a search wrote; Ctrl-C stops it."""
    from exptrack.tracking import ui_server

    code = ui_server.serve(tracking_uri, host, port, lambda m: out.print(m, highlight=False, soft_wrap=True))
    if code in ui_server.SIGNAL_EXIT_CODES:  # stopped by SIGINT (130) or SIGTERM (143)
        raise typer.Exit(code)
    if code:
        raise UserError(f"mlflow server stopped with exit code {code}")
