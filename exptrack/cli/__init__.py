"""The `exp` command: typer parsing and messages only; each command calls one function below it.

Commands live in `search_commands` (`exp search`, `exp report`) and `results_commands` (`trials`,
`studies`, `export`, `train`, `ui`); both import `options` (shared flags and consoles). This module
creates the app and registers their functions, so no command file imports its importer.
May import every package.
"""

from __future__ import annotations

import sys
from importlib import metadata
from typing import Annotated

import typer

from exptrack.cli import results_commands, search_commands
from exptrack.cli.options import err
from exptrack.errors import UserError
from exptrack.search import signals

app = typer.Typer(
    add_completion=True,  # typer's own --install-completion / --show-completion (bash, zsh, fish)
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Hyperparameter search and experiment tracking for PyTorch fine-tuning.",
)


def _show_version(value: bool) -> None:
    if value:  # from the installed package's metadata (pyproject.toml), like pip show
        typer.echo(f"exp (exptrack) {metadata.version('exptrack')}")
        raise typer.Exit()


@app.callback()
def _commands(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Show the version and exit."),
    ] = False,
) -> None:
    """exp search | trials | studies | export | train | ui | report"""


for _command in (
    search_commands.search,
    search_commands.report,
    results_commands.trials,
    results_commands.studies,
    results_commands.export,
    results_commands.train,
    results_commands.ui,
):
    app.command()(_command)


def main() -> None:
    """Entry point: a UserError becomes one line on stderr and exit code 2."""
    try:
        code = app(standalone_mode=False)  # typer returns 130 here for any KeyboardInterrupt
        if isinstance(code, int) and code:
            sys.exit(signals.exit_code() or code)
    except UserError as exc:
        err.print(f"error: {exc}", highlight=False, soft_wrap=True, markup=False)  # [brackets] stay
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
