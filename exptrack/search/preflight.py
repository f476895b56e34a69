"""Checks done before any store is opened, so a bad input ends with one line and writes nothing:
search space, fixed config, device, sampler, pruner (with their options), constraints, storage
and tracking URLs (and their stores)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import optuna

from exptrack import config as cfg
from exptrack import records
from exptrack.errors import UserError
from exptrack.search import samplers
from exptrack.search import space as spaces
from exptrack.stores import backends, schema
from exptrack.stores.url import parse
from exptrack.study import Constraint, Study
from exptrack.tracking import store_setup
from exptrack.training import backbones, datasets, fit, losses

TRACKING_SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks")


@dataclasses.dataclass(frozen=True)
class Prepared:
    """The validated pieces a search is built from."""

    space: spaces.SearchSpace
    sampler: optuna.samplers.BaseSampler
    # the same sampler built again with another seed: a worker's own stream (`study_setup._join`)
    sampler_seeded: Callable[[int | None], optuna.samplers.BaseSampler]
    pruner: optuna.pruners.BasePruner
    constraints: tuple[Constraint, ...] = ()
    # the sampler steers by constraints, so a trial that runs out of memory is told as infeasible
    learns_infeasible: bool = False
    notes: tuple[str, ...] = ()  # one line each, said before the search (e.g. why pruning is off)


def default_sampler(spec: Study) -> str:
    return spec.sampler or ("nsga2" if spec.multi_objective else "tpe")


def prepare(
    spec: Study,
    sampler: str | None,
    pruner: str | None,
    seed: int | None,
    pins: Mapping[str, Any] | None = None,
) -> Prepared:
    """Validate the study against its space and build its sampler and pruner. `pins` (the `--set`
    values) take the parameters they name out of the space: those are fixed for the study."""
    sampler_name, pruner_name = sampler or default_sampler(spec), pruner or spec.pruner
    samplers.check_names(sampler_name, pruner_name)
    space = spaces.load(spec.search_space_path(), own=spec.custom_objective).pin(pins or {})
    if not spec.custom_objective:
        check_ends(space, spec.fixed)  # the high ends too: trial 30 drawing freeze_depth=9 stopped a search
    config = cfg.from_dict(space.sample(optuna.trial.FixedTrial(first_point(space)), spec.fixed))
    if spec.custom_objective:  # its own function trains: backbone, data and loss are not used
        fit.resolve_device(config.device)
        spec.objective_function()  # one that cannot be imported ends here
    else:
        check_training(config)
    notes: list[str] = []
    constraints = spec.parsed_constraints()
    setup = samplers.SamplerSetup(seed, space, spec.directions)
    sampler_options = _options("sampler", spec.sampler_options, default_sampler(spec), sampler_name, notes)
    built = samplers.make_sampler(sampler_name, setup, sampler_options)
    learns = samplers.learns_constraints(built)
    if constraints and not learns:
        notes.append(
            f"sampler {sampler_name} does not steer by constraints (tpe, gp, nsga2 and nsga3 do): "
            "infeasible trials are recorded and never reported as best, but not avoided"
        )
    unprunable = _why_no_pruning(spec)
    if unprunable and pruner_name != "none":
        notes.append(f"pruning is off: {unprunable}")
        pruner_name = "none"
    options = _options("pruner", spec.pruner_options, spec.pruner, pruner_name, notes)
    epochs = cfg.from_dict(spec.fixed, source="fixed").epochs  # typed: `--set epochs=1e2` is the text "1e2"
    return Prepared(
        space,
        built,
        lambda seed: samplers.make_sampler(
            sampler_name, dataclasses.replace(setup, seed=seed), sampler_options
        ),
        samplers.make_pruner(pruner_name, samplers.PrunerSetup(epochs), options),
        tuple(constraints),
        learns,
        tuple(notes),
    )


def check_training(config: cfg.TrialConfig) -> None:
    """What the built-in fine-tuning needs, before any store is opened: a known backbone, dataset
    and loss (with parameters in range), the dataset's files, image size and weights file/URI."""
    backbones.backbone(config.backbone)
    datasets.parse_spec(config.dataset)
    losses.loss_parameters(config.loss)
    if config.loss_params:  # its builder checks the ranges of the parameters it is given
        losses.build_loss(config.loss, config.loss_params)
    fit.resolve_device(config.device)
    fit.check(config)


def check_ends(space: spaces.SearchSpace, fixed: Mapping[str, Any]) -> None:
    """Every searched range at its high end as well as its low one (the first trial's point
    checks the low ends): a freeze_depth range, or a fixed freeze_depth, deeper than a backbone
    the study can train is refused now, not when a trial draws it. Ranges against the config's
    own bounds are checked at both ends when the space is parsed."""
    chosen = [p for p in space.params if p.field == spaces.BACKBONE and p.kind is spaces.Kind.CHOICE]
    default = fixed.get(spaces.BACKBONE, cfg.TrialConfig.backbone)
    names = [str(n) for n in chosen[0].choices] if chosen else [str(default)]
    depth = spaces.FREEZE_DEPTH
    if not _searches(space.params, depth) and depth in fixed:
        for name in names:
            _check_depth(name, int(fixed[depth]), f"fixed {depth}", f"--set {depth}=")
    _check_depths(space.params, names, space.source)


def _check_depths(params: tuple[spaces.Param, ...], names: list[str], source: str) -> None:
    for param in params:
        if param.field == spaces.FREEZE_DEPTH and param.kind is spaces.Kind.INT and not param.to_stage_count:
            high = int(max(spaces.ends(param)))
            where = f"{source}: parameter {param.name!r} high end"
            for name in names:
                _check_depth(name, high, where, f"use {{int: [{param.low}, {spaces.STAGES}]}} or a high end")
        for option, subs in param.branches.items():  # under a backbone's option: its own stages
            _check_depths(subs, [str(option)] if param.field == spaces.BACKBONE else names, source)


def _check_depth(name: str, depth: int, where: str, fix: str) -> None:
    stages = backbones.stage_count(name)
    if depth > stages:
        raise UserError(f"{where} {depth} exceeds {name}'s {stages} stages; {fix} of at most {stages}")


def _searches(params: tuple[spaces.Param, ...], field: str) -> bool:
    """Whether any parameter, under any branch, sets `field`."""
    return any(
        p.field == field or _searches(tuple(s for subs in p.branches.values() for s in subs), field)
        for p in params
    )


def _options(
    kind: str, options: Mapping[str, Any], declared: str, used: str, notes: list[str]
) -> Mapping[str, Any]:
    """The study file's options are for the study file's own sampler (pruner); another one named
    on the command line runs with its defaults."""
    if not options or used == declared:
        return options
    notes.append(
        f"{kind}_options in the study file are for {declared}; --{kind} {used} runs with its defaults"
    )
    return {}


def _why_no_pruning(spec: Study) -> str | None:
    """Pruners judge one objective value per epoch; None when the study has one to judge."""
    if spec.multi_objective:
        return "Optuna's pruners judge one value per epoch, and this study has several objectives"
    if spec.metric not in records.EPOCH_METRICS and not spec.custom_objective:
        return f"the objective {spec.metric} is known only when a trial ends, not per epoch"
    return None


def check_storage_url(url: str) -> None:
    """A storage URL SQLAlchemy can parse, whose store can be opened and written (a database server
    must answer; a sqlite file is created later, so a missing one is not touched here)."""
    parse(url).check_database_url("Optuna storage", "--storage", "sqlite:///optuna.db")
    backends.check_store(url, "Optuna storage", "--storage")
    if parse(url).is_database:
        schema.check_optuna_target(url)  # an MLflow store or an application's database: refused


def check_tracking_uri(uri: str) -> None:
    """A tracking URI of a known scheme whose store can be opened and written (an http server is
    asked by the `Tracker`'s own check)."""
    parsed = parse(uri)
    if parsed.has_scheme and parsed.scheme not in TRACKING_SCHEMES:
        raise UserError(
            f"MLflow tracking URI {parsed} has an unknown scheme {uri.partition(':')[0]!r}; "
            "use sqlite:///mlflow.db or http://HOST:PORT"
        )
    backends.check_store(uri, "MLflow tracking store", "--tracking-uri")
    if parse(uri).is_database:
        store_setup.mlflow_state(uri)  # an Optuna study or an application's database: refused


def first_point(space: spaces.SearchSpace) -> dict[str, Any]:
    """A valid point of the space (each param at its low end / first option), to check the
    fixed config against the space before trial 1."""
    point: dict[str, Any] = {}

    def visit(param: spaces.Param) -> None:
        if param.branches:
            option = param.choices[0]
            point[param.name] = option
            for sub in param.branches[option]:
                visit(sub)
        elif param.kind is spaces.Kind.CHOICE:
            point[param.name] = param.choices[0]
        else:
            point[param.name] = param.low

    for p in space.params:
        visit(p)
    return point
