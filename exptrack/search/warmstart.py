"""Warm starts: configs queued as a study's next trials, ahead of the sampler's own proposals. The
study file's `starting_points`, `--from-study NAME` (the best trials of an earlier study) and
`--enqueue FILE_OR_DIR` (YAML from `exp export`, or hand-written with the searched keys) are each
turned into Optuna parameters and checked against the search space before any store is written:
a value outside the space is a one-line error, never silently replaced by a sampled one.

A config is read as a `TrialConfig` file is (`loss_params` holds the chosen loss's parameters);
only the searched keys are queued, the rest of each trial's config comes from the study and
`--set`. A searched key a config leaves out is sampled. Optuna's `enqueue_trial` queues them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna

from exptrack import config as cfg
from exptrack import records, study_store
from exptrack.config_values import is_number
from exptrack.errors import UserError, redact
from exptrack.search.space import BACKBONE, LOSS_PARAMS, Kind, Param, SearchSpace, is_loss_param
from exptrack.stores import optuna_storage
from exptrack.stores.url import resolve_storage
from exptrack.study import Study
from exptrack.training import backbones


@dataclasses.dataclass(frozen=True)
class Start:
    """One queued trial: its Optuna parameters and where they came from."""

    params: dict[str, Any]
    source: str  # `best/trial-003.yaml`, `starting point 1`, `finetune trial 7`


def collect(
    spec: Study,
    space: SearchSpace,
    enqueue: Sequence[Path] = (),
    from_study: str | None = None,
    from_top: int = 3,
    storage_url: str | None = None,
    study_name: str | None = None,
    warn: Callable[[str], None] = print,
) -> list[Start]:
    """Every warm start of a search, in the order they run: starting points, the earlier
    study's best trials, then the files."""
    starts = [
        from_values(space, point, f"starting point {i + 1}") for i, point in enumerate(spec.starting_points)
    ]
    if from_study:
        starts += best_of_study(space, from_study, from_top, storage_url, study_name or spec.name)
    for path in enqueue:
        starts += from_files(space, spec, path, warn)
    return starts


def from_values(space: SearchSpace, values: Mapping[str, Any], source: str) -> Start:
    """A config's searched values as Optuna parameters, each checked against the space."""
    config = cfg.from_dict(values, source=source)  # names and types, as in a config file
    present = {key: getattr(config, key) for key in values}
    params: dict[str, Any] = {}
    for param in space.params:
        _point(param, present, {**config.loss_params, **config.params}, params, source)
    if not params:
        searched = ", ".join(sorted(searched_keys(space)))
        raise UserError(f"{source}: sets none of the searched keys ({searched}); nothing to queue")
    return Start(params, source)


def _point(
    param: Param,
    values: Mapping[str, Any],
    own: Mapping[str, Any],  # loss_params and a custom objective's own params (`config.params`)
    out: dict[str, Any],
    source: str,
) -> None:
    given = own if is_loss_param(param.name) or param.own else values
    if param.field not in given:
        return  # left to the sampler
    value = given[param.field]
    _check(param, value, values, source)
    out[param.name] = value
    if param.branches:
        for sub in param.branches[str(value)]:
            _point(sub, values, own, out, source)


def _check(param: Param, value: Any, values: Mapping[str, Any], source: str) -> None:
    """A value the space can suggest for `param`; otherwise one line naming both."""
    if param.kind is Kind.CHOICE:  # a conditional choice's options are names (`focal`)
        ok = str(value) in param.choices if param.branches else value in param.choices
        allowed = f"one of {list(param.choices)}"
    else:
        high = _high(param, values)
        ok = is_number(value) and param.low <= value <= high
        if ok and param.kind is Kind.INT:
            ok = float(value).is_integer() and (int(value) - int(param.low)) % int(param.step or 1) == 0
        elif ok and param.step:
            steps = (value - param.low) / param.step
            ok = math.isclose(steps, round(steps), abs_tol=1e-9)
        allowed = f"{param.kind.value} in [{param.low}, {high:g}]" + (
            f" step {param.step}" if param.step else ""
        )
    if not ok:
        raise UserError(
            f"{source}: {param.name}={value!r} is outside the search space ({allowed}); "
            "change the value or widen the space"
        )


def _high(param: Param, values: Mapping[str, Any]) -> float:
    if param.to_stage_count:  # freeze_depth: the stage count of the config's backbone
        return float(backbones.stage_count(values.get(BACKBONE, cfg.TrialConfig.backbone)))
    return float(param.high)


def searched_keys(space: SearchSpace) -> set[str]:
    """Config keys the space sets (`loss_params` for a loss's own parameters)."""
    keys: set[str] = set()

    def visit(param: Param) -> None:
        keys.add(LOSS_PARAMS if is_loss_param(param.name) else cfg.OWN_PARAMS if param.own else param.field)
        for subs in param.branches.values():
            for sub in subs:
                visit(sub)

    for param in space.params:
        visit(param)
    return keys


# --- files -------------------------------------------------------------------------------------


def config_files(path: Path) -> list[Path]:
    """`path` itself, or the YAML files in a directory (as `exp export --out DIR` writes them)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
        if not files:
            raise UserError(f"--enqueue {path}: no .yaml files in it; pass files from exp export")
        return files
    if not path.is_file():
        raise UserError(f"--enqueue {path} does not exist; pass a YAML file or a directory from exp export")
    return [path]


def from_files(space: SearchSpace, spec: Study, path: Path, warn: Callable[[str], None]) -> list[Start]:
    starts = []
    for file in config_files(path):
        data, provenance = cfg.read_mapping(file)
        starts.append(from_values(space, data, str(file)))
        _say_what_is_ignored(space, spec, data, str(file), warn, provenance.get(records.WEIGHTS_REQUESTED))
    return starts


def _say_what_is_ignored(
    space: SearchSpace,
    spec: Study,
    data: Mapping[str, Any],
    source: str,
    warn: Callable[[str], None],
    asked: Any = None,  # the weights the file's trial asked for (its provenance), when it fell back
) -> None:
    """A file's non-searched keys that differ from this study's: one line, since they are not used.
    `weights: none` asked as imagenet is imagenet's offline fallback, no difference from imagenet."""
    study = cfg.from_dict(spec.fixed).to_dict()
    written = cfg.from_dict(data, source=source).to_dict()
    differ = [
        k
        for k in data
        if k not in searched_keys(space)
        and written[k] != study[k]
        and not (k == "weights" and asked == study[k])
    ]
    if differ:
        shown = ", ".join(f"{k}={written[k]!r} (study: {study[k]!r})" for k in differ[:3])
        warn(f"{source}: only searched keys are queued; the study's own values are used for {shown}")


# --- an earlier study ------------------------------------------------------------------------------


def best_of_study(
    space: SearchSpace, name: str, top: int, storage_url: str | None, current: str
) -> list[Start]:
    """The `top` best feasible trials of study `name` (its Pareto front, for several objectives),
    when their configs fall inside this space; else one line saying which value does not."""
    if top < 1:
        raise UserError(f"--from-top must be at least 1, got {top}")
    if name == current:
        raise UserError(f"--from-study {name!r} is this study itself; name an earlier study")
    earlier = optuna_storage.load_existing_study(name, storage_url)
    chosen = study_store.ranked(earlier)[:top]
    if not chosen:
        raise UserError(
            f"--from-study {name!r} has no complete feasible trial in {redact(resolve_storage(storage_url))}"
        )
    starts = []
    for trial in chosen:
        stored = study_store.record(trial)
        if not stored.has_config:
            raise UserError(f"--from-study {name!r}: trial {trial.number} has no stored config to start from")
        try:
            starts.append(from_values(space, stored.config, f"{name} trial {trial.number}"))
        except UserError as exc:
            raise UserError(
                f"--from-study {name!r}: its space is not compatible with this one: {exc}"
            ) from exc
    return starts


# --- queueing ----------------------------------------------------------------------------------


def enqueue(study: optuna.Study, starts: Sequence[Start], warn: Callable[[str], None]) -> int:
    """Queue each start unless the study already holds a trial with exactly its parameters
    (Optuna's `skip_if_exists`: a re-run of the same command queues nothing twice); returns how
    many were queued."""
    queued = 0
    for start in starts:
        before = len(study.get_trials(deepcopy=False))
        study.enqueue_trial(
            start.params, user_attrs={records.ENQUEUED_ATTR: start.source}, skip_if_exists=True
        )
        if len(study.get_trials(deepcopy=False)) == before:
            warn(f"{start.source}: already a trial of study {study.study_name!r}; not queued again")
        else:
            queued += 1
    return queued
