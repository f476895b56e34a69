"""The `exp` command: argument parsing and messages only; the work happens in the modules it calls."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from exptrack import config as cfg
from exptrack import signals
from exptrack.errors import UserError, redact

logging.getLogger("mlflow").setLevel(logging.WARNING)  # its table-creation INFO lines are noise here

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Hyperparameter search and experiment tracking for PyTorch fine-tuning.",
)
err = Console(stderr=True)
out = Console()

StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage",
        envvar="OPTUNA_STORAGE",
        help="Optuna storage URL [default: sqlite:///optuna.db]",
    ),
]
TrackingOpt = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        envvar="MLFLOW_TRACKING_URI",
        help="MLflow tracking URI [default: sqlite:///mlflow.db]",
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value: --set epochs=2 (repeatable)"),
]


@app.callback()
def _commands() -> None:
    """exp search | trials | studies | export | train | ui | report"""


class SearchProgress:
    """Rich progress bar: trials done / total, best value so far, the current trial."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[best]}"),
            TextColumn("{task.fields[current]}"),
            TimeElapsedColumn(),
            console=err,
            transient=False,
        )
        self.task: Any = None

    def start(self, done: int, total: int) -> None:
        self.bar.start()
        self.task = self.bar.add_task("trials", total=total, completed=min(done, total), best="", current="")

    def trial_started(self, number: int, config: cfg.TrialConfig) -> None:
        self.bar.update(
            self.task,
            current=f"running trial {number} (lr={config.lr:.2g}, bs={config.batch_size}, "
            f"freeze={config.freeze_depth}, {config.loss})",
        )

    def trial_finished(self, number: int, state: str, value: float | None, best: float | None) -> None:
        if state in ("COMPLETE", "PRUNED"):
            self.bar.advance(self.task)
        if best is not None:
            self.bar.update(self.task, best=f"best {self.metric}={best:.4f}")
        shown = "" if value is None else f" {value:.4f}"
        self.bar.console.print(f"trial {number}: {state}{shown}")

    def stop(self) -> None:
        self.bar.stop()


@app.command()
def search(
    study_file: Annotated[Path, typer.Argument(help="A study file, e.g. studies/finetune.py")],
    trials: Annotated[
        int, typer.Option("--trials", "-n", help="Total finished trials the study should have")
    ] = 20,
    timeout: Annotated[
        float | None, typer.Option(help="Stop starting trials after this many seconds")
    ] = None,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
    study_name: Annotated[str | None, typer.Option(help="Study name [default: the study file's]")] = None,
    sampler: Annotated[str | None, typer.Option(help="tpe | random | cmaes | gp | qmc | grid")] = None,
    pruner: Annotated[str | None, typer.Option(help="none | median | hyperband")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda")] = None,
    seed: Annotated[
        int | None, typer.Option(help="Sampler seed, for a repeatable sequence of trials")
    ] = None,
    set_: SetOpt = None,
    no_tracking: Annotated[
        bool, typer.Option("--no-tracking", help="Skip MLflow (Optuna records only)")
    ] = False,
    max_failures: Annotated[
        int, typer.Option(help="Stop the search after this many failed trials in a row (exit code 2)")
    ] = 5,
    new_study: Annotated[
        bool, typer.Option("--new-study", help="If the stored study differs, start a new one (NAME-2)")
    ] = False,
    workers: Annotated[int, typer.Option(help="Processes working on the study at once")] = 1,
    worker: Annotated[bool, typer.Option("--worker", hidden=True)] = False,
) -> None:
    """Tune a study: sample configs, train each, prune hopeless ones, log every trial to MLflow."""
    from exptrack import locks, preflight
    from exptrack import workers as pool
    from exptrack.search import Search, SearchOptions, resolve_storage
    from exptrack.study import load_study_file
    from exptrack.tracking import Tracker, resolve_tracking_uri, use_store_for_weights

    for flag, value in (("--trials", trials), ("--max-failures", max_failures), ("--workers", workers)):
        if value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    if timeout is not None and timeout <= 0:
        raise UserError(f"--timeout must be positive seconds, got {timeout}")
    overrides = cfg.parse_overrides(set_ or [])
    if device is not None:
        overrides["device"] = device
    spec = load_study_file(study_file).with_overrides(overrides)
    options = SearchOptions(
        trials, timeout, storage, study_name, sampler, pruner, seed, max_failures, new_study, worker
    )
    # Everything checkable without a store, before either store is created.
    preflight.check_storage_url(resolve_storage(storage))
    if not no_tracking:
        preflight.check_tracking_uri(resolve_tracking_uri(tracking_uri))
    use_store_for_weights(resolve_tracking_uri(tracking_uri))  # --set weights=runs:/... is checked next
    prepared = preflight.prepare(spec, sampler, pruner, seed)
    progress = SearchProgress(spec.metric)
    tracker = None
    if not no_tracking:  # MLflow creates its tables here: one process at a time (K may start at once)
        with locks.storage_lock(resolve_storage(storage)):
            tracker = Tracker(tracking_uri, warn=lambda m: err.print(f"[yellow]{m}[/yellow]"))
            tracker.check()
    runner = Search(
        spec,
        options,
        tracker,
        progress,
        warn=lambda m: progress.bar.console.print(f"[yellow]{m}[/yellow]"),
        prepared=prepared,
    )
    if workers > 1:
        summary = pool.run_workers(runner, workers, sys.argv[1:], notify=err.print)
        _print_summary(summary, spec.metric, tracker)
        return
    signals.install(notify=lambda m: err.print(f"[yellow]{m}[/yellow]"))
    try:
        summary = runner.run()
    finally:
        progress.stop()
    _print_summary(summary, spec.metric, tracker)


def _print_summary(summary: Any, metric: str, tracker: Any) -> None:
    table = Table(
        title=f"{summary.study_name}: best trials ({summary.finished} finished, {summary.ran} run now)"
    )
    for column in ("trial", metric, "params", "MLflow run"):
        table.add_column(column)
    for trial in summary.best:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
        table.add_row(
            str(trial.number), _fmt(trial.value), params, trial.user_attrs.get("mlflow_run_id", "-")
        )
    out.print(table)
    if tracker and summary.experiment_id:
        out.print(
            f"MLflow: {redact(tracker.uri)}, experiment {summary.study_name!r} (id {summary.experiment_id}), "
            f"study run {summary.parent_run_id}; browse with `exp ui`"
        )
    if summary.tracking_failures:
        err.print(
            f"[yellow]{len(summary.tracking_failures)} MLflow writes failed and were not recorded, first: "
            f"{summary.tracking_failures[0]}[/yellow]"
        )
    if summary.unrecorded:
        numbers = ", ".join(map(str, summary.unrecorded))
        err.print(
            f"[yellow]trials without an MLflow run (tracking was down; their results are in Optuna): "
            f"{numbers}[/yellow]"
        )


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def main() -> None:
    """Entry point: a UserError becomes one line on stderr and exit code 2."""
    try:
        code = app(standalone_mode=False)  # typer returns 130 here for any KeyboardInterrupt
        if isinstance(code, int) and code:
            sys.exit(signals.exit_code() or code)
    except UserError as exc:
        err.print(f"error: {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except signals.Interrupted as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click's usage errors (typer vendors click): bad flag, missing argument
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(2)
        raise


@app.command()
def report(
    study_name: Annotated[str, typer.Argument(help="The study's name, e.g. finetune")],
    dashboard: Annotated[Path, typer.Option(help="Dashboard file: which panels to draw")] = Path(
        "dashboards/study.yaml"
    ),
    out_file: Annotated[
        Path | None, typer.Option("--out", help="HTML file to write [default: STUDY-dashboard.html]")
    ] = None,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Render a study's dashboard to a standalone HTML page and log it on the study's MLflow run."""
    from exptrack import dashboards
    from exptrack.stores import load_existing_study
    from exptrack.tracking import Tracker

    study = load_existing_study(study_name, storage)
    page = dashboards.render(study, dashboard)
    target = out_file or Path(f"{study_name}-dashboard.html")
    target.write_text(page)
    tracker = Tracker(tracking_uri, warn=lambda m: err.print(f"[yellow]{m}[/yellow]"))
    run_id = tracker.study_run_id(study_name)
    tracker.log_file(run_id, "dashboard.html", page)
    where = f" and on MLflow run {run_id}" if run_id and not tracker.failures else ""
    out.print(f"dashboard written to {target}{where}")


from exptrack import cli_results as _cli_results  # noqa: E402,F401  (registers trials/studies/export/train/ui)
