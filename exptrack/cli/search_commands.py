"""`exp search`: its flags, the progress bar and the summary; the work is `search.run.run_search`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from exptrack import config as cfg
from exptrack import yaml_files
from exptrack.cli.options import (
    PRUNER_NAMES,
    SAMPLER_NAMES,
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
from exptrack.errors import redact
from exptrack.search.options import (
    CHECKPOINT_EVERY_S,
    CHECKPOINT_MB,
    GRACE_PERIOD_S,
    MAX_CONSECUTIVE_FAILURES,
)
from exptrack.tracking import ui_links

# A pipe or log file gets the bar's last frame as one line: rich's 80 columns for a console that is
# not a terminal cut it mid-field ("running trial 4 (lr=…"), so it gets room for every field.
PIPED = Console(stderr=True, soft_wrap=True, width=240)


class SearchProgress:
    """Rich progress bar: trials done / total, best value so far, the current trial. `--workers`
    workers draw none (`search.worker.LineProgress`): this one bar shows the study."""

    def __init__(self) -> None:
        self.metric = ""
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[best]}"),
            TextColumn("{task.fields[current]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),  # the study's ETA, and a trial's over its epochs (`fit`)
            console=err if err.is_terminal else PIPED,
            transient=False,
        )
        self.task: Any = None

    def start(self, done: int, total: int, metric: str) -> None:
        self.metric = metric
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
        self.bar.update(self.task, current="")  # the last frame must not show an ended trial running
        if best is not None:
            self.bar.update(self.task, best=f"best {self.metric}={best:.4f}")
        shown = "" if value is None else f" {value:.4f}"
        self.bar.console.print(f"trial {number}: {state}{shown}")

    def warn(self, message: str) -> None:
        """A warning above the bar, so the bar is not torn."""
        self.bar.console.print(f"[yellow]{message}[/yellow]")

    def stop(self) -> None:
        if self.task is not None:  # a bar never started would leave a blank line before an error
            self.bar.stop()


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
    study_name: Annotated[str | None, typer.Option(help="Study name " + default("the study file's"))] = None,
    sampler: Annotated[
        str | None,
        typer.Option(
            help=f"{SAMPLER_NAMES} " + default("the study file's; tpe, or nsga2 for several objectives")
        ),
    ] = None,
    pruner: Annotated[
        str | None,
        typer.Option(help=f"{PRUNER_NAMES} " + default("the study file's")),
    ] = None,
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
    ] = MAX_CONSECUTIVE_FAILURES,
    new_study: Annotated[
        bool,
        typer.Option(
            "--new-study",
            help="Only when the stored study's direction, metric, search space or fixed config (a --set "
            "epochs, subset, dataset, ...) differs from the study file: run as NAME-2 instead of refusing (created once, continued by re-runs); an unchanged "
            "study just continues",
        ),
    ] = False,
    workers: Annotated[int, typer.Option(help="Processes working on the study at once")] = 1,
    grace_period: Annotated[
        int,
        typer.Option(
            help="Seconds without a heartbeat before a trial of a dead worker (any machine) is failed "
            "and retried; give every worker of a study the same value"
        ),
    ] = GRACE_PERIOD_S,
    gpus: Annotated[
        str | None,
        typer.Option(help="One worker per listed GPU: 0,1,3 or all (each with its own CUDA_VISIBLE_DEVICES)"),
    ] = None,
    per_gpu: Annotated[
        int, typer.Option(help="Workers per GPU with --gpus, each limited to its share of the GPU's memory")
    ] = 1,
    profile_trials: Annotated[
        int,
        typer.Option(
            help="Trace the first K trials this command runs with torch.profiler "
            "(profile/trace.json.gz and profile/ops.csv on their MLflow runs) " + default("0: none"),
            show_default=False,  # the help says it: `[default: 0: none]`, not that and `[default: 0]`
        ),
    ] = 0,
    enqueue: Annotated[
        list[Path] | None,
        typer.Option(
            metavar="FILE|DIR",
            help="Run these configs first: a YAML file or directory from exp export (repeatable)",
        ),
    ] = None,
    from_study: Annotated[
        str | None, typer.Option(help="Run the best trials of this earlier study (same storage) first")
    ] = None,
    from_top: Annotated[int, typer.Option(help="How many of --from-study's best trials")] = 3,
    checkpoint_mb: Annotated[
        int,
        typer.Option(
            help="Keep each trial's state at its epoch ends (a killed or SIGTERMed trial's retry resumes "
            "there) unless it is over this many MB; 0: no checkpoints"
        ),
    ] = CHECKPOINT_MB,
    checkpoint_every: Annotated[
        float,
        typer.Option(
            help="Seconds of training between two checkpoints (saved at the next epoch end); 0: every epoch"
        ),
    ] = CHECKPOINT_EVERY_S,
) -> None:
    """Tune a study: sample configs, train each, prune hopeless ones, log every trial to MLflow."""
    from exptrack.study import load_study_file

    overrides = cfg.parse_overrides(set_ or [])
    if device is not None:
        overrides["device"] = device
    # The study file, --set and the search space's YAML are checked before torch is imported (the
    # search's modules take 4-5 s to import idle): a typo is one line at once.
    study = load_study_file(study_file)
    study.with_overrides(overrides)
    space_path = study.search_space_path()
    yaml_files.load_yaml(yaml_files.read_text(space_path), str(space_path))

    from exptrack.results import dashboards
    from exptrack.search.options import SearchOptions
    from exptrack.search.run import run_search
    from exptrack.training import progress as training_progress

    options = SearchOptions(
        trials=trials, timeout=timeout, storage=storage, study_name=study_name, sampler=sampler,
        pruner=pruner, seed=seed, max_failures=max_failures, new_study=new_study,
        tracking_uri=tracking_uri, tracking=not no_tracking, workers=workers, grace_period=grace_period,
        gpus=gpus, per_gpu=per_gpu, profile_trials=profile_trials, enqueue=tuple(enqueue or ()),
        from_study=from_study, from_top=from_top, checkpoint_mb=checkpoint_mb,
        checkpoint_every=checkpoint_every,
    )  # fmt: skip
    progress = SearchProgress()
    shown = training_progress.shown_by(RichTasks(progress.bar))  # a download or image folder: a task
    try:
        with exit_code_on_signal(), shown:
            summary = run_search(study, options, overrides, progress, progress.warn, dashboards.renderer_for)
    finally:
        progress.stop()
    print_summary(summary)
    exit_if_pending(summary)


def print_summary(summary: Any) -> None:
    """The best trials (the Pareto front, for several objectives), where MLflow has them, and
    what tracking could not record."""
    from exptrack import study_store
    from exptrack.results import tables

    which = "Pareto front" if summary.pareto else "best trials"
    title = f"{summary.study_name}: {which} ({summary.finished} finished, {summary.ran} run now)"
    table = Table(title=title)
    for column in ("trial", *(summary.objectives or [summary.metric]), "weights"):
        table.add_column(column, no_wrap=True)
    table.add_column("params", overflow="fold")  # the one column a narrow terminal may fold
    table.add_column("MLflow run", no_wrap=True, min_width=32)  # a run id is never cut or wrapped
    for trial in summary.best:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
        run_id = study_store.record(trial).run_id or "-"
        values = [_fmt(v) for v in trial.values]
        table.add_row(str(trial.number), *values, tables.weights_used(trial) or "-", params, run_id)
    if out.is_terminal:
        out.print(table)
    else:  # a log file or a pipe has no width to fit: the table at its natural width
        tables.print_wide(out, table)
    requested = (study_store.record(t).weights_requested for t in summary.best)
    asked = sorted({weights for weights in requested if weights is not None})
    if asked:
        warn(
            f"weights: {', '.join(asked)} could not be had, so these trials trained from scratch (random "
            "init); their params, configs and exports say weights=none. To fine-tune: the checkpoint in "
            "$TORCH_HOME/hub/checkpoints, or --set weights=PATH.pt"
        )
    if summary.tracking_uri and summary.experiment_id:
        out.print(
            f"MLflow: {redact(summary.tracking_uri)}, experiment {summary.study_name!r} "
            f"(id {summary.experiment_id}), study run {summary.parent_run_id}; browse with `exp ui`"
        )
        base = ui_links.server_base(summary.tracking_uri)
        if base and summary.parent_run_id:  # a server: its pages can be linked to directly
            out.print(f"runs: {ui_links.runs_view_url(base, summary.experiment_id)}")
            out.print(f"study run: {ui_links.run_url(base, summary.experiment_id, summary.parent_run_id)}")
    if summary.tracking_failures:
        kept = "" if summary.pending else "; the journal wrote them once the store answered again"
        warn(
            f"{len(summary.tracking_failures)} MLflow writes failed, first: {summary.tracking_failures[0]}{kept}"
        )
    for note in summary.notes:
        warn(note)


def exit_if_pending(summary: Any) -> None:
    """Exit code 3 and one final line when a journal still holds records."""
    from exptrack.search.sync import PENDING_EXIT

    if summary.pending:
        err.print(summary.pending_line, soft_wrap=True, markup=False, highlight=False)
        raise typer.Exit(PENDING_EXIT)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def sync(
    study_name: Annotated[str, typer.Argument(help="The study's name, e.g. finetune")],
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Write what a store outage left in the study's journal: results Optuna could not take, MLflow
    runs, metrics and artifacts (runs no journal holds are rebuilt from Optuna); close the study run.
    Exit code 3 while records are still pending (a store still down)."""
    from exptrack.search.sync import PENDING_EXIT, sync_study

    pending, line = sync_study(study_name, storage, tracking_uri, warn)
    if pending:
        err.print(line, soft_wrap=True, markup=False, highlight=False)
        raise typer.Exit(PENDING_EXIT)
    out.print(f"{study_name}: every record is in both stores")

