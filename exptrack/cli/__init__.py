"""The `exp` command: typer parsing and messages only; each command calls one function below it.

Commands live in `search_commands` (`exp search`) and `results_commands` (`trials`, `studies`,
`export`, `report`, `train`, `ui`); both import `options` (shared flags and consoles). This module
creates the app and registers their functions, so no command file imports its importer.
May import every package.
"""

from __future__ import annotations

import os
import sys
import traceback
from importlib import metadata
from typing import Annotated, Any

import typer
import typer.core

from exptrack import processes
from exptrack.cli import manage_commands, results_commands, search_commands
from exptrack.cli.options import err, registered_names
from exptrack.errors import UserError, one_line, redact, unexpected_line
from exptrack.search import signals

# EXPTRACK_DEBUG=1 (or `exp --debug ...`): an unexpected error prints its whole traceback
# instead of one line and a file holding it.
DEBUG_ENV = "EXPTRACK_DEBUG"
_debug = {"on": False}


class _Command(typer.core.TyperCommand):
    """A command whose help shows no type for a flag (`--costs`, not `--costs <bool>`): a flag
    takes no value, and typer would print its Python type there."""

    def get_params(self, ctx: Any) -> list[Any]:  # typer's own (vendored) click types
        params = super().get_params(ctx)
        for param in params:  # the --help option is made per call, so it is caught here too
            if isinstance(param, typer.core.TyperOption) and param.is_flag:
                param.metavar = ""
        return params

    def format_help(self, ctx: Any, formatter: Any) -> None:
        """The registries' names in place of their stand-ins (`options.registered_names`), read
        only when help is shown."""
        for param in self.params:
            if isinstance(param, typer.core.TyperOption) and param.help:
                param.help = registered_names(param.help)
        super().format_help(ctx, formatter)


class _Group(typer.core.TyperGroup, _Command):
    """The `exp` group itself, with the same flags' help (--version, --debug, --help), its
    commands listed in the order a user works (typer would list the groups last)."""

    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))


class _GroupPathContext(typer._click.Context):
    """The context of a group's default command: its path is the group's (`exp trials`), so its
    usage line and its errors' "Try ... --help" read as a user types it, not `exp trials list`."""

    @property
    def command_path(self) -> str:
        return self.parent.command_path if self.parent is not None else super().command_path


class _DefaultCommand(_Command):
    context_class = _GroupPathContext


class _DefaultGroup(typer.core.TyperGroup):
    """`exp studies` and `exp trials`: a first word that names none of the subcommands (`rm`,
    `drop`, ...) runs the group's default command with every word, so `exp trials finetune
    --sort value` and `exp studies --format json` (and `--help`) read as before."""

    default_command = "list"

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or args[0] not in self.commands:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_Group,
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
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",  # EXPTRACK_DEBUG is read in main: any value but 0 turns it on, none is refused
            help=f"Print the whole traceback of an unexpected error (otherwise: one line and a file); "
            f"or set {DEBUG_ENV}=1",
        ),
    ] = False,
) -> None:
    """exp search | trials | export | train | confirm | report | ui | studies | sync"""
    _debug["on"] = debug
    processes.quiet_libraries()  # before any command loads torch or MLflow


# In the order a user works: tune, look, export, re-run, report, browse; then every study.
ORDER = ("search", "trials", "export", "train", "confirm", "report", "ui", "studies", "sync")
for _command in (
    search_commands.search,
    results_commands.export,
    results_commands.train,
    results_commands.confirm,
    results_commands.report,
    results_commands.ui,
    search_commands.sync,
):
    app.command(cls=_Command)(_command)


def _group(name: str, help_text: str, default: Any, **commands: Any) -> None:
    """`exp NAME`: its default command (listing, as before) and the subcommands that tidy."""
    group = typer.Typer(cls=_DefaultGroup, help=help_text, context_settings=app.info.context_settings)
    group.command(_DefaultGroup.default_command, cls=_DefaultCommand, hidden=True)(default)
    for sub, function in commands.items():
        group.command(sub, cls=_Command)(function)
    app.add_typer(group, name=name)


_group(
    "trials",
    "Table of a study's trials (exp trials NAME); exp trials drop NAME N... drops trials.",
    results_commands.trials,
    drop=manage_commands.drop,
)
_group(
    "studies",
    "The studies in a storage (exp studies); exp studies rm | rename | copy tidies one.",
    results_commands.studies,
    rm=manage_commands.rm,
    rename=manage_commands.rename,
    copy=manage_commands.copy,
)


def main() -> None:
    """Entry point: a UserError becomes one line on stderr and exit code 2."""
    try:
        code = app(standalone_mode=False)  # typer returns 130 here for any KeyboardInterrupt
        if isinstance(code, int) and code:
            sys.exit(code)
    except UserError as exc:
        _say(f"error: {exc}")
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
        if isinstance(exc, OSError) and exc.filename is not None and not _debugging():
            # a path the user gave that the system refuses (too long, not allowed, a file for a folder)
            _say(
                f"error: {exc.filename}: {exc.strerror or type(exc).__name__}; check the path and its permissions"
            )
            sys.exit(2)
        _unexpected(exc)


def _debugging() -> bool:
    return _debug["on"] or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _unexpected(exc: Exception) -> None:
    """The last resort: one line naming the error and a file with its traceback, exit 1."""
    text = redact("".join(traceback.format_exception(exc)))  # typer's own display shows locals
    if _debugging():
        sys.stderr.write(text)
    else:
        _say(unexpected_line(exc))
    sys.exit(1)


def _say(line: str) -> None:
    """One line on stderr, as typed: [brackets] stay (no markup), a newline or a stray byte in a
    user's path is escaped, never wrapped by rich."""
    err.print(one_line(line), highlight=False, soft_wrap=True, markup=False)
