"""Tidying studies: `exp studies rm | rename | copy` and `exp trials drop` (parsing and messages
only; `results.manage` does the work). None of them loads torch."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from exptrack.cli.options import StorageOpt, TrackingOpt, out, warn
from exptrack.errors import UserError

NameArg = Annotated[str, typer.Argument(help="The study's name, e.g. finetune")]
NewArg = Annotated[str, typer.Argument(help="The new study's name")]
WhereOpt = Annotated[
    str | None,
    typer.Option(
        help="Only trials where KEY OP VALUE [and ...] holds: KEY a config field, a parameter, number, "
        "state or value; OP == != < <= > >=, e.g. 'epochs==2'",
    ),
]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Go on although a live search runs the study (its trials may be lost)")
]


def _say(line: str) -> None:
    out.print(line, highlight=False, soft_wrap=True, markup=False)


def rm(
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
    force: ForceOpt = False,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Delete a study and its MLflow runs (parent, trials, reproductions); `mlflow gc` reclaims them."""
    from exptrack.results import manage

    if not yes:
        if not sys.stdin.isatty():
            raise UserError(f"exp studies rm {name} deletes the study and its runs: confirm with --yes")
        typer.confirm(f"Delete study {name!r}, its trials and their MLflow runs?", abort=True)
    deleted = manage.remove(name, storage, tracking_uri, force, warn)
    _say(f"deleted study {name!r} and {deleted} MLflow run(s) (reclaim their space with mlflow gc)")


def rename(
    name: NameArg,
    new: NewArg,
    force: ForceOpt = False,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Rename a study: its Optuna name, its MLflow experiment and its runs' tags, in step."""
    from exptrack.results import manage

    manage.rename(name, new, storage, tracking_uri, force, warn)
    _say(f"renamed study {name!r} to {new!r}")


def copy(
    name: NameArg,
    new: NewArg,
    where: WhereOpt = None,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Copy a study's finished trials (all, or those --where selects) and their MLflow runs to NEW."""
    from exptrack.results import manage

    count = manage.copy_study(name, new, where, storage, tracking_uri, warn)
    _say(f"copied {count} trial(s) of {name!r} to {new!r}")


def drop(
    name: NameArg,
    numbers: Annotated[list[int] | None, typer.Argument(help="Trial numbers to drop, e.g. 3 5")] = None,
    where: WhereOpt = None,
    force: ForceOpt = False,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Drop trials from a study: hidden from results, not counted, not learnt from; runs deleted."""
    from exptrack.results import manage

    if not numbers and not where:
        raise UserError(f"name the trials to drop: exp trials drop {name} 3 5, or --where 'epochs==1'")
    dropped = manage.drop(name, numbers or [], where, storage, tracking_uri, force, warn)
    shown = ", ".join(map(str, dropped)) or "none (nothing matched)"
    _say(f"dropped trial(s) {shown} of {name!r}")
