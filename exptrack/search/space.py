"""Search spaces: parse and validate a YAML file, sample one point for a trial, describe the space.

Each key is a `TrialConfig` field. A parameter is `{float: [lo, hi]}`, `{int: [lo, hi]}` (optional
`log: true` or `step: s`) or `{choice: [a, b]}`. A choice written as a mapping is conditional: the
keys are the options and each holds the parameters that exist only when it is chosen. They get
dotted Optuna names (`loss.focal.gamma`) so two branches never share a distribution. Values of a
`loss` branch go to `loss_params`; values under any other branch (e.g. `freeze_depth` under each
`backbone`) set that config field. `int: [0, max]` on freeze_depth means the backbone's stage count.
Those three fields are the space's special cases, named once (`LOSS`, `BACKBONE`, `FREEZE_DEPTH`).
A study with its own training function (`Study(objective=...)`) may also name keys that are not
config fields (`hidden: {int: [16, 128]}`): its own parameters, which go to `TrialConfig.params`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from exptrack import config as cfg
from exptrack import yaml_files
from exptrack.config_values import is_number, parse_number
from exptrack.errors import UserError, did_you_mean
from exptrack.search.space_params import (
    BACKBONE,
    FREEZE_DEPTH,
    KINDS,
    LOSS,
    LOSS_PARAMS,
    OPTIONS,
    STAGES,
    Kind,
    Param,
    Suggester,
    is_loss_param,
    named_params,
)
from exptrack.training import backbones, losses


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...]
    source: str
    # Optuna name -> value, for parameters `--set` pinned for this study (taken out of `params`)
    pins: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def sample(self, trial: Suggester, fixed: Mapping[str, Any]) -> dict[str, Any]:
        """Config values (fixed merged with sampled) for one trial."""
        values = dict(fixed)
        for param in self.params:
            _sample_into(param, trial, values, self.source)
        return values

    def describe(self) -> dict[str, Any]:
        """A plain, comparable form of the space, for logging and for spotting a changed space
        (a pinned parameter reads `{pinned: VALUE}`, so pinning one is a change of space)."""
        pinned = {name: {"pinned": value} for name, value in self.pins.items()}
        return {**{p.name: _describe(p) for p in self.params}, **pinned}

    def names(self) -> list[str]:
        """Every searched parameter's Optuna name, conditional ones included, in file order."""
        return [name for p in self.params for name in _names(p)]

    def pin(self, overrides: Mapping[str, Any]) -> SearchSpace:
        """This space without the parameters that `overrides` (`--set`) fix: each takes the value
        given for the whole study. Pinning a conditional choice keeps the chosen branch's own
        parameters searched (`--set loss=focal` still searches `loss.focal.gamma`)."""
        pins: dict[str, Any] = {}
        params = _pinned(self.params, overrides, pins)
        return dataclasses.replace(self, params=params, pins={**self.pins, **pins})

    def named_params(self, params: Mapping[str, str], sampled: Mapping[str, Any]) -> dict[str, str]:
        """A config's flat params with each sampled parameter under its Optuna name: a field
        searched under a branch (`freeze_depth` under `backbone`) becomes `backbone.resnet18.freeze_depth`,
        so the MLflow param, the Optuna param and the `exp trials` column share one name."""
        return named_params(params, sampled)

    def is_discrete(self) -> bool:
        return all(_discrete(p) for p in self.params)


def load(path: Path, own: bool = False) -> SearchSpace:
    """Read and validate a search-space file; every problem names the parameter and the fix.
    `own`: the study trains with its own function, so keys that are not config fields are its
    own parameters (for the built-in fine-tuning they are typos, refused with a suggestion)."""
    if not path.is_file():
        raise UserError(f"search space {path} not found; check the study's search_space=")
    return parse(yaml_files.load_yaml(yaml_files.read_text(path), str(path)), source=str(path), own=own)


def parse(data: Any, source: str = "search space", own: bool = False) -> SearchSpace:
    if not isinstance(data, dict) or not data:
        raise UserError(
            f"{source}: expected a mapping of parameter names to specs, e.g. lr: {{float: [1e-5, 1e-1], log: true}}"
        )
    fields = cfg.field_types()
    params = []
    for name, spec in data.items():
        if own and _own_key(name, source):
            params.append(_parse_param(name, name, spec, source, top_field=name, own=True))
            continue
        if name not in fields or name.endswith(cfg.PARAMS_SUFFIX):
            raise UserError(
                f"{source}: unknown parameter {name!r}{did_you_mean(name, fields)}; searchable config keys are {', '.join(k for k in fields if not k.endswith(cfg.PARAMS_SUFFIX))}"
            )
        params.append(_parse_param(str(name), str(name), spec, source, top_field=str(name)))
    for param in params:
        _check_reachable(param, source)
    return SearchSpace(tuple(params), source)


def _own_key(name: Any, source: str) -> bool:
    """Is `name` one of a custom objective's own parameters (not a config field)? It must be a
    plain name: it becomes a keyword in `params`, an Optuna and an MLflow param."""
    if name in cfg.field_types():
        return False
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
        raise UserError(
            f"{source}: parameter {cfg.shown(name)} is not a plain name; use letters, digits and _"
        )
    return True


def _parse_param(name: str, field: str, spec: Any, source: str, top_field: str, own: bool = False) -> Param:
    where = f"{source}: parameter {name!r}"
    if not isinstance(spec, dict):
        raise UserError(f"{where}: expected a mapping like {{float: [lo, hi]}}, got {spec!r}")
    kinds = [k for k in spec if k in KINDS]
    unknown = [k for k in spec if k not in KINDS and k not in OPTIONS]
    if unknown:
        raise UserError(
            f"{where}: unknown key {unknown[0]!r}{did_you_mean(unknown[0], (*KINDS, *OPTIONS))}; use one of float, int, choice, log, step"
        )
    if len(kinds) != 1:
        raise UserError(f"{where}: give exactly one of float, int or choice")
    kind = Kind(kinds[0])
    if kind is Kind.CHOICE:
        return dataclasses.replace(_parse_choice(name, field, spec, where, source, own), own=own)
    return dataclasses.replace(_parse_range(name, field, kind, spec, where, own), own=own)


def _parse_range(name: str, field: str, kind: Kind, spec: dict[str, Any], where: str, own: bool) -> Param:
    bounds = spec[kind.value]
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise UserError(f"{where}: {kind.value} needs [low, high], got {bounds!r}")
    low, high = (parse_number(b) for b in bounds)
    log, step = bool(spec.get("log", False)), parse_number(spec.get("step"))
    if high == STAGES and field == FREEZE_DEPTH and kind is Kind.INT:
        high = math.inf
    elif not is_number(high):
        raise UserError(
            f"{where}: high must be a number"
            + (f" (or {STAGES}, for {FREEZE_DEPTH})" if kind is Kind.INT else "")
            + f", got {high!r}"
        )
    if not is_number(low):
        raise UserError(f"{where}: low must be a number, got {low!r}")
    if kind is Kind.INT and not (float(low).is_integer() and (math.isinf(high) or float(high).is_integer())):
        raise UserError(f"{where}: int bounds must be whole numbers, got {bounds!r}")
    if low > high:
        raise UserError(f"{where}: low {low} is greater than high {high}; swap them")
    if log and low <= 0:
        raise UserError(f"{where}: log scale needs low > 0, got {low}; raise low or drop log")
    if log and step is not None:
        raise UserError(f"{where}: log and step cannot be combined; keep one")
    if step is not None and (not is_number(step) or step <= 0):
        raise UserError(f"{where}: step must be a positive number, got {step!r}")
    if not own:
        _check_field_kind(field, kind, where)
    cast = int if kind is Kind.INT else float
    return Param(name, field, kind, cast(low), high if math.isinf(high) else cast(high), log, step)


def _parse_choice(name: str, field: str, spec: dict[str, Any], where: str, source: str, own: bool) -> Param:
    if set(spec) - {Kind.CHOICE.value}:
        raise UserError(f"{where}: log and step do not apply to a choice; remove them")
    options = spec[Kind.CHOICE.value]
    if isinstance(options, dict):
        if not options:
            raise UserError(f"{where}: choice is empty; list at least one option")
        branches = {
            str(opt): _parse_branch(name, field, str(opt), sub, source, own) for opt, sub in options.items()
        }
        return Param(name, field, Kind.CHOICE, choices=tuple(branches), branches=branches)
    if not isinstance(options, list) or not options:
        raise UserError(f"{where}: choice is empty; list at least one option")
    if any(isinstance(o, dict | list) for o in options):
        raise UserError(f"{where}: choice options must be plain values (numbers, strings, booleans)")
    if len(set(map(repr, options))) != len(options):
        raise UserError(f"{where}: choice lists an option twice; remove the duplicate")
    if field == LOSS and not own:
        for option in options:
            losses.loss_parameters(str(option))  # raises for an unknown loss
    if all(is_number(o) for o in options):
        # In numeric order: plots that place a choice by its index (optuna-dashboard's slice and
        # parallel coordinates) then show batch sizes 32 < 64 < 128 whatever order the file lists.
        options = sorted(options)
    return Param(name, field, Kind.CHOICE, choices=tuple(options))


def _parse_branch(name: str, field: str, option: str, sub: Any, source: str, own: bool) -> tuple[Param, ...]:
    """A conditional option's parameters; under one of a custom objective's own choices they may
    be its own too (`optimizer_kind: {choice: {sgd: {momentum: ...}}}`)."""
    where = f"{source}: parameter {name!r} option {option!r}"
    sub = sub or {}
    if not isinstance(sub, dict):
        raise UserError(f"{where}: expected a mapping of its own parameters (or {{}}), got {sub!r}")
    if own:
        return tuple(
            _parse_param(f"{name}.{option}.{key}", str(key), s, source, field, own=_own_key(key, where))
            for key, s in sub.items()
        )
    if field == LOSS:
        accepted = _loss_parameters(option, where)
        for key in sub:
            if key not in accepted:
                raise UserError(
                    f"{where}: loss {option!r} takes no parameter {key!r}; it takes: {', '.join(accepted) or 'none'}"
                )
    elif field == BACKBONE:
        backbones.backbone(option)  # raises for an unknown backbone
    for key in sub:
        if field != LOSS and (key not in cfg.field_types() or key == field):
            raise UserError(f"{where}: unknown parameter {key!r}; it must be a config key")
    return tuple(_parse_param(f"{name}.{option}.{key}", str(key), s, source, field) for key, s in sub.items())


def _loss_parameters(option: str, where: str) -> list[str]:
    try:
        return losses.loss_parameters(option)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from exc


def _check_field_kind(field: str, kind: Kind, where: str) -> None:
    expected = cfg.field_types().get(field, float)
    if expected is int and kind is Kind.FLOAT:
        raise UserError(f"{where}: {field} is a whole number; use int instead of float")
    if expected is str:
        raise UserError(f"{where}: {field} takes names; use choice: [...]")


def _check_reachable(param: Param, source: str) -> None:
    """Every value the space can give `param` is one a config takes (the field's range in
    `config.py`, a loss parameter's check in its builder), so no trial fails on a sampled value.
    Ranges are intervals, so a numeric parameter's two ends stand for all of its values."""
    where = f"{source}: parameter {param.name!r}"
    loss_option = param.name.split(".")[1] if is_loss_param(param.name) else None
    for value in [] if param.own else ends(param):  # own values: the objective checks them
        if loss_option is None:
            cfg.check_field(param.field, value, where)
            continue
        try:
            losses.build_loss(loss_option, {param.field: value})
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from exc
    for subs in param.branches.values():
        for sub in subs:
            _check_reachable(sub, source)


def ends(param: Param) -> list[Any]:
    """A choice's options, or a range's lowest and highest reachable values (`step` may stop
    short of high; freeze_depth's `max` is the backbone's own stage count, always valid)."""
    if param.kind is Kind.CHOICE:
        return list(param.choices)
    low, high = param.low, param.high
    if param.to_stage_count:
        return [low]
    if param.step is not None:
        high = low + (high - low) // param.step * param.step
    return [low, high]


# --- sampling --------------------------------------------------------------------------------


def _sample_into(param: Param, trial: Suggester, values: dict[str, Any], source: str) -> None:
    if param.branches:
        option = trial.suggest_categorical(param.name, list(param.choices))
        _put(param, values, option)
        if (
            param.field == LOSS and not param.own
        ):  # a fixed (pinned) loss parameter stays where the loss takes it
            key = LOSS_PARAMS
            accepted = losses.loss_parameters(str(option))
            values[key] = {k: v for k, v in (values.get(key) or {}).items() if k in accepted}
        for sub in param.branches[option]:
            _sample_into(sub, trial, values, source)
        return
    value = _suggest(param, trial, values, source)
    if is_loss_param(param.name):
        values.setdefault(LOSS_PARAMS, {})[param.field] = value
    else:
        _put(param, values, value)


def _put(param: Param, values: dict[str, Any], value: Any) -> None:
    """Set a sampled value: a config field, or one of the objective's own `params` (a new dict:
    `values` starts as a copy of the study's fixed part, whose own dict must stay as it is)."""
    if param.own:
        values[cfg.OWN_PARAMS] = {**(values.get(cfg.OWN_PARAMS) or {}), param.field: value}
    else:
        values[param.field] = value


# --- pinning (`--set` on a searched parameter) ----------------------------------------------------

_UNSET = object()


def _pinned(
    params: tuple[Param, ...], overrides: Mapping[str, Any], pins: dict[str, Any]
) -> tuple[Param, ...]:
    kept: list[Param] = []
    for param in params:
        if is_loss_param(param.name) or param.own:
            holder = cfg.OWN_PARAMS if param.own else LOSS_PARAMS
            value = (overrides.get(holder) or {}).get(param.field, _UNSET)
        else:
            value = overrides.get(param.field, _UNSET)
        if value is _UNSET:
            if param.branches:
                branches = {o: _pinned(subs, overrides, pins) for o, subs in param.branches.items()}
                param = dataclasses.replace(param, branches=branches)
            kept.append(param)
            continue
        pins[param.name] = value
        if param.branches:  # the pinned option's own parameters are still searched
            kept.extend(_pinned(param.branches.get(str(value), ()), overrides, pins))
    return tuple(kept)


def _names(param: Param) -> list[str]:
    if not param.branches:
        return [param.name]
    return [param.name, *(n for subs in param.branches.values() for p in subs for n in _names(p))]


def _suggest(param: Param, trial: Suggester, values: Mapping[str, Any], source: str) -> Any:
    if param.kind is Kind.CHOICE:
        return trial.suggest_categorical(param.name, list(param.choices))
    if param.kind is Kind.INT:
        high = _resolve_max(param, values, source)
        return trial.suggest_int(param.name, int(param.low), high, step=int(param.step or 1), log=param.log)
    return trial.suggest_float(
        param.name, float(param.low), float(param.high), step=param.step, log=param.log
    )


def _resolve_max(param: Param, values: Mapping[str, Any], source: str) -> int:
    if not param.to_stage_count:
        return int(param.high)
    name = values.get(BACKBONE, cfg.TrialConfig.backbone)
    stages = backbones.stage_count(name)
    if int(param.low) > stages:
        raise UserError(
            f"{source}: parameter {param.name!r}: low {param.low} exceeds {name}'s {stages} stages"
        )
    return stages


def _describe(param: Param) -> dict[str, Any]:
    if param.branches:
        return {
            Kind.CHOICE.value: {
                opt: {p.name: _describe(p) for p in subs} for opt, subs in param.branches.items()
            }
        }
    if param.kind is Kind.CHOICE:
        return {Kind.CHOICE.value: list(param.choices)}
    out: dict[str, Any] = {param.kind.value: [param.low, STAGES if param.to_stage_count else param.high]}
    if param.log:
        out["log"] = True
    if param.step is not None:
        out["step"] = param.step
    return out


def _discrete(param: Param) -> bool:
    if param.branches:
        return all(_discrete(p) for subs in param.branches.values() for p in subs)
    return param.kind is not Kind.FLOAT or param.step is not None
