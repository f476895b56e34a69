"""What every `exp` command shares: the store flags with their environment variables, `--set`,
`--format`, and the two consoles (results on stdout, progress and warnings on stderr)."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.console import Console

logging.getLogger("mlflow").setLevel(logging.WARNING)  # its table-creation INFO lines are noise here

err = Console(stderr=True)
out = Console()


def warn(message: str) -> None:
    """A warning line on stderr, in yellow where that is a terminal."""
    err.print(f"[yellow]{message}[/yellow]")


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
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table | csv | json | markdown")]
