"""Refusing a changed study: a stored study is continued only when its objectives (metrics and
directions), constraints, search space and fixed config (what a trial means: epochs, subset,
dataset, backbone, weights, ...) are the ones the study file and `--set` declare now; otherwise the
search is refused with the difference shown (or, with --new-study, runs as the study `NAME-2`,
created the first time). A quick look with `--set epochs=1` thus never mixes into the real study."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import optuna

from exptrack import config as cfg
from exptrack import records
from exptrack.errors import UserError
from exptrack.study import Study

FIX = "use --new-study or --study-name NEW"
TEST_FRACTION = "test_fraction"
# what a study from before the held-out test split is told: it can go on exactly as it was
BEFORE_TEST_SPLIT = "(made before the held-out test split: --set test_fraction=0 continues it as it was)"


@dataclasses.dataclass(frozen=True)
class Declaration:
    """What a study is declared with; a stored study continues only under the same declaration.
    A field that an older store did not record is None and is not compared."""

    direction: str | None  # comma-joined when there are several objectives
    metric: str | None  # the objectives' figures, comma-joined
    search_space: Mapping[str, Any] | None
    constraints: list[str] | None = None
    fixed: Mapping[str, Any] | None = None  # the fixed config, `--set` values merged in
    objective: str | None = None  # the training function (`Study.objective_name`)


def declaration(spec: Study, search_space: Mapping[str, Any]) -> Declaration:
    """What the study file declares now. The fixed part always names its test share (the default
    when the file does not): a stored fixed part without it is a study from before the test split."""
    constraints = [str(c) for c in spec.parsed_constraints()]
    directions, metrics = ",".join(spec.directions), ",".join(spec.objectives)
    fixed = {TEST_FRACTION: cfg.TrialConfig().test_fraction, **spec.fixed}
    return Declaration(directions, metrics, search_space, constraints, fixed, spec.objective_name)


def stored_declaration(storage: optuna.storages.BaseStorage, name: str) -> Declaration | None:
    """objectives, constraints and search space of the stored study `name`; None when there is none."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    attrs = storage.get_study_user_attrs(study_id)
    directions = storage.get_study_directions(study_id)
    metrics = attrs.get(records.STUDY_OBJECTIVES_ATTR) or (
        [attrs[records.STUDY_METRIC_ATTR]] if records.STUDY_METRIC_ATTR in attrs else None
    )
    return Declaration(
        ",".join(d.name.lower() for d in directions),
        ",".join(metrics) if metrics is not None else None,
        attrs.get(records.STUDY_SPACE_ATTR),
        attrs.get(records.STUDY_CONSTRAINTS_ATTR),
        attrs.get(records.STUDY_FIXED_ATTR),
        attrs.get(records.STUDY_TRAINING_ATTR),
    )


def difference(stored: Declaration, current: Declaration) -> str | None:
    """The first difference, as `metric=val_accuracy, now val_loss`; None when they match."""
    several = "," in f"{stored.metric}{current.metric}{stored.direction}{current.direction}"
    if several and (stored.metric, stored.direction) != (current.metric, current.direction):
        return f"objectives {_objectives(stored)}, now {_objectives(current)}"
    for key, old_value, new_value in (
        ("direction", stored.direction, current.direction),
        ("metric", stored.metric, current.metric),
        ("objective", stored.objective, current.objective),  # another function: other trials
    ):
        if old_value is not None and old_value != new_value:
            return f"{key}={old_value}, now {new_value}"
    if stored.constraints is not None and stored.constraints != current.constraints:
        return f"constraints {_listed(stored.constraints)}, now {_listed(current.constraints)}"
    return _space_difference(stored.search_space, current.search_space) or _fixed_difference(stored, current)


def _space_difference(old: Mapping[str, Any] | None, current: Mapping[str, Any] | None) -> str | None:
    new = _plain(current)
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


def _fixed_difference(stored: Declaration, current: Declaration) -> str | None:
    """The first fixed-config key whose value changes what a trial means (`epochs=2, now 1`);
    keys the space searches and keys that only say how a trial runs (cfg.RUN_ONLY_FIELDS) aside."""
    if stored.fixed is None or current.fixed is None:
        return None
    searched = set(current.search_space or {})
    old = cfg.meaning(cfg.as_recorded(stored.fixed), searched)  # no test_fraction: no test split
    new = cfg.meaning(current.fixed, searched)
    for key in old:
        if old[key] != new.get(key):
            legacy = f" {BEFORE_TEST_SPLIT}" if key == TEST_FRACTION and key not in stored.fixed else ""
            return f"fixed {key}={_short(old[key])}, now {_short(new.get(key))}{legacy}"
    return None


def continued_name(storage: optuna.storages.BaseStorage, name: str, current: Declaration) -> str:
    """`name-2`, `name-3`, ...: the first that is either stored under the current declaration (so
    re-running the same `--new-study` command continues it) or not stored at all."""
    number = 2
    while True:
        candidate = f"{name}-{number}"
        stored = stored_declaration(storage, candidate)
        if stored is None or difference(stored, current) is None:
            return candidate
        number += 1


def check(storage: optuna.storages.BaseStorage, name: str, current: Declaration, new_study: bool) -> str:
    """The study name to use: `name` when new or unchanged. A changed study is refused, or with
    `new_study` continues under `name-N` (the first such study declared as now, or a new one)."""
    stored = stored_declaration(storage, name)
    if stored is None:
        return name
    changed = difference(stored, current)
    if changed is None:
        return name  # --new-study applies only when the stored study differs
    if new_study:
        return continued_name(storage, name, current)
    raise UserError(f"study {name!r} was created with {changed}; {FIX}")


def _objectives(declared: Declaration) -> str:
    metrics = (declared.metric or "?").split(",")
    directions = (declared.direction or "?").split(",")
    if len(metrics) != len(directions):
        metrics = metrics + ["?"] * (len(directions) - len(metrics))
    return ", ".join(f"{m} ({d})" for m, d in zip(metrics, directions, strict=False))


def _listed(constraints: list[str] | None) -> str:
    return "[" + "; ".join(constraints or []) + "]"


def _plain(value: Any) -> Any:
    """The JSON form Optuna stores user attributes in (tuples become lists)."""
    return json.loads(json.dumps(value))


def _short(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))[:120]
