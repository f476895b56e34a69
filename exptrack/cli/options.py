"""What every `exp` command shares: the store flags with their environment variables, `--set`,
`--format`, and the two consoles (results on stdout, progress and warnings on stderr)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

# soft_wrap: a line is never broken by us, so a run id, URL or path stays whole in a log file or
# a pipe (where rich would otherwise wrap at 80 columns); a terminal wraps it if it must.
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


# Stand-ins in a help text for the registries' names, filled in when help is shown
# (`registered_names`): the registries load Optuna, which `exp` does not load to start.
SAMPLER_NAMES, PRUNER_NAMES = "<samplers>", "<pruners>"


def registered_names(help_text: str) -> str:
    """`help_text` with the sampler and pruner stand-ins replaced by the registered names (a
    study file's own registrations are not loaded by --help)."""
    if SAMPLER_NAMES not in help_text and PRUNER_NAMES not in help_text:
        return help_text
    from exptrack.search import samplers

    for stand_in, names in ((SAMPLER_NAMES, samplers.SAMPLERS), (PRUNER_NAMES, samplers.PRUNERS)):
        help_text = help_text.replace(stand_in, " | ".join(names))
    return help_text


@contextlib.contextmanager
def exit_code_on_signal() -> Iterator[None]:
    """A signal's `Interrupted` ends the command with its own exit code (130 SIGINT, 143 SIGTERM),
    which typer would otherwise turn into 130 for any KeyboardInterrupt."""
    from exptrack.search.signals import Interrupted

    try:
        yield
    except Interrupted as exc:
        raise typer.Exit(exc.exit_code) from exc


def default(text: str) -> str:
    """`[default: TEXT]` for a help string, escaped: typer renders help as rich markup, where an
    unescaped `[default: ...]` is taken for a style tag and silently dropped."""
    return f"\\[default: {text}]"


class RichTasks:
    """Training's long setup work (`training.progress`: a weight download, reading an image folder)
    drawn with rich: a task on `live` (the search's bar) while that runs, else a bar of its own
    that goes away when the work is done."""

    def __init__(self, live: Progress | None = None) -> None:
        self.live = live

    @contextlib.contextmanager
    def __call__(self, description: str, total: float | None) -> Iterator[_Task]:
        if self.live is not None and self.live.live.is_started:
            task = self.live.add_task(description, total=total, best="", current="")
            try:
                yield _Task(self.live, task)
            finally:
                self.live.remove_task(task)
            return
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=err, transient=True) as bar:
            yield _Task(bar, bar.add_task(description, total=total))


class _Task:
    def __init__(self, bar: Progress, task: TaskID) -> None:
        self.bar, self.task = bar, task

    def advance(self, amount: float) -> None:
        self.bar.advance(self.task, amount)


def warn(message: str) -> None:
    """A warning line on stderr, in yellow where that is a terminal."""
    err.print(f"[yellow]{message}[/yellow]")


StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage",
        envvar="OPTUNA_STORAGE",
        help=f"Optuna storage URL {default('sqlite:///optuna.db')}",
    ),
]
TrackingOpt = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        envvar="MLFLOW_TRACKING_URI",
        help=f"MLflow tracking URI {default('sqlite:///mlflow.db')}",
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="KEY=VALUE", help="Override a config value: --set epochs=2 (repeatable)"),
]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table | csv | json | markdown")]
