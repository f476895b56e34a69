"""Refusing a changed study: a stored study is continued only when its direction, metric and
search space are the ones the study file declares now; otherwise the search is refused with the
difference shown (or, with --new-study, runs as a new study `NAME-2`)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import optuna

from exptrack import records
from exptrack.errors import UserError

FIX = "use --new-study or --study-name NEW"


@dataclasses.dataclass(frozen=True)
class Declaration:
    """What a study is declared with; a stored study continues only under the same declaration.
    A field that an older store did not record is None and is not compared."""

    direction: str | None
    metric: str | None
    search_space: Mapping[str, Any] | None


def stored_declaration(storage: optuna.storages.BaseStorage, name: str) -> Declaration | None:
    """direction, metric and search space of the stored study `name`; None when there is none."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    attrs = storage.get_study_user_attrs(study_id)
    directions = storage.get_study_directions(study_id)
    return Declaration(
        directions[0].name.lower(), attrs.get(records.STUDY_METRIC_ATTR), attrs.get(records.STUDY_SPACE_ATTR)
    )


def difference(stored: Declaration, current: Declaration) -> str | None:
    """The first difference, as `metric=val_accuracy, now val_loss`; None when they match."""
    for key, old_value, new_value in (
        ("direction", stored.direction, current.direction),
        ("metric", stored.metric, current.metric),
    ):
        if old_value is not None and old_value != new_value:
            return f"{key}={old_value}, now {new_value}"
    old, new = stored.search_space, _plain(current.search_space)
    if old is None or old == new:
        return None
    for param in sorted(set(old) | set(new)):
        if param not in new:
            return f"search space parameter {param} {_short(old[param])}, now removed"
        if param not in old:
            return f"search space without {param}, now {param} {_short(new[param])}"
        if old[param] != new[param]:
            return f"search space {param} {_short(old[param])}, now {_short(new[param])}"
    return None


def free_name(storage: optuna.storages.BaseStorage, name: str) -> str:
    """`name-2`, `name-3`, ...: the first name no stored study has."""
    taken = {s.study_name for s in storage.get_all_studies()}
    number = 2
    while f"{name}-{number}" in taken:
        number += 1
    return f"{name}-{number}"


def check(storage: optuna.storages.BaseStorage, name: str, current: Declaration, new_study: bool) -> str:
    """The study name to use: `name` when new or unchanged; a fresh name with `new_study`.
    A changed study without `new_study` is refused."""
    stored = stored_declaration(storage, name)
    if stored is None:
        return name
    changed = difference(stored, current)
    if new_study:
        return free_name(storage, name)
    if changed:
        raise UserError(f"study {name!r} was created with {changed}; {FIX}")
    return name


def _plain(value: Any) -> Any:
    """The JSON form Optuna stores user attributes in (tuples become lists)."""
    return json.loads(json.dumps(value))


def _short(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))[:120]
