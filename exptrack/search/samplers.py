"""Optuna samplers and pruners by name: plain-dict registries from a name (in a study file or a
flag) to a builder, so a study file can add its own with `register_sampler` / `register_pruner`.

A builder takes the setup exptrack decides (seed, space, directions) and the
study file's `sampler_options` / `pruner_options`, which go to the Optuna constructor by name:
an option the constructor does not take is a one-line error, before any store is opened.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import optuna

from exptrack import registry
from exptrack.errors import UserError, did_you_mean

if TYPE_CHECKING:  # a type only: the CLI's help reads these registries without loading torch
    from exptrack.search.space import SearchSpace

# Optuna 5 samplers that steer away from infeasible trials: they read the constraint values each
# trial stores with `Trial.set_constraint` (search.feasibility). Random, QMC, grid and CMA-ES do not.
CONSTRAINED_SAMPLERS = (
    optuna.samplers.TPESampler,
    optuna.samplers.GPSampler,
    optuna.samplers.NSGAIISampler,
    optuna.samplers.NSGAIIISampler,
)


@dataclasses.dataclass(frozen=True)
class SamplerSetup:
    """What exptrack decides for every sampler; the study file's options add to it."""

    seed: int | None
    space: SearchSpace
    directions: tuple[str, ...] = ("maximize",)

    @property
    def multi_objective(self) -> bool:
        return len(self.directions) > 1


@dataclasses.dataclass(frozen=True)
class PrunerSetup:
    epochs: int  # the resource pruners count in: one report per epoch


SamplerBuilder = Callable[[SamplerSetup, Mapping[str, Any]], optuna.samplers.BaseSampler]
PrunerBuilder = Callable[[PrunerSetup, Mapping[str, Any]], optuna.pruners.BasePruner]
SAMPLERS: dict[str, SamplerBuilder] = {}
PRUNERS: dict[str, PrunerBuilder] = {}
register_sampler = registry.registrar(SAMPLERS, "sampler")
register_pruner = registry.registrar(PRUNERS, "pruner")
Builder = TypeVar("Builder")
Built = TypeVar("Built")


def _builder(registry: dict[str, Builder], kind: str, name: str) -> Builder:
    if name not in registry:
        raise UserError(f"unknown {kind} {name!r}{did_you_mean(name, registry)}; use one of {', '.join(registry)}")
    return registry[name]


def check_names(sampler: str, pruner: str) -> None:
    """Refuse an unknown sampler or pruner name before any store is opened."""
    _builder(SAMPLERS, "sampler", sampler)
    _builder(PRUNERS, "pruner", pruner)


def make_sampler(
    name: str, setup: SamplerSetup, options: Mapping[str, Any] | None = None
) -> optuna.samplers.BaseSampler:
    return _builder(SAMPLERS, "sampler", name)(setup, options or {})


def make_pruner(
    name: str, setup: PrunerSetup, options: Mapping[str, Any] | None = None
) -> optuna.pruners.BasePruner:
    return _builder(PRUNERS, "pruner", name)(setup, options or {})


def learns_constraints(sampler: optuna.samplers.BaseSampler) -> bool:
    """Whether the sampler steers away from infeasible trials (see CONSTRAINED_SAMPLERS)."""
    return isinstance(sampler, CONSTRAINED_SAMPLERS)


def construct(
    kind: str,
    name: str,
    cls: Callable[..., Built],
    options: Mapping[str, Any],
    defaults: Mapping[str, Any] | None = None,
    **fixed: Any,
) -> Built:
    """`cls(**defaults, **options, **fixed)`: the study file's `options` are checked against the
    constructor's own parameters; `fixed` ones (the seed) are exptrack's."""
    accepted = [p for p in inspect.signature(cls).parameters if p not in fixed]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        why = " (it comes from --seed)" if unknown[0] == "seed" else ""
        raise UserError(
            f"{kind} {name!r} takes no option {unknown[0]!r}{why}; its options are {', '.join(accepted)}"
        )
    try:
        return cls(**{**(defaults or {}), **options, **fixed})
    except (TypeError, ValueError) as exc:
        raise UserError(f"{kind} {name!r}: bad {kind}_options ({exc}); fix them in the study file") from exc


def _single_objective(setup: SamplerSetup, name: str) -> None:
    if setup.multi_objective:
        raise UserError(
            f"sampler {name!r} optimises one objective; for several use nsga2, nsga3, tpe, gp or random"
        )


# --- samplers ---------------------------------------------------------------------------------


@register_sampler("tpe")
def tpe(setup: SamplerSetup, options: Mapping[str, Any]) -> optuna.samplers.BaseSampler:
    # multivariate + group model the conditional loss parameters together; constant_liar keeps
    # parallel workers from proposing the same point while their trials run
    defaults = {"multivariate": True, "group": True, "constant_liar": True}
    return construct(
        "sampler",
        "tpe",
        optuna.samplers.TPESampler,
        options,
        defaults,
        seed=setup.seed,
    )


@register_sampler("random")
def random(setup: SamplerSetup, options: Mapping[str, Any]) -> optuna.samplers.BaseSampler:
    return construct("sampler", "random", optuna.samplers.RandomSampler, options, seed=setup.seed)


@register_sampler("cmaes")
def cmaes(setup: SamplerSetup, options: Mapping[str, Any]) -> optuna.samplers.BaseSampler:
    _single_objective(setup, "cmaes")
    defaults = {"warn_independent_sampling": False}  # categorical params are sampled independently
    return construct("sampler", "cmaes", optuna.samplers.CmaEsSampler, options, defaults, seed=setup.seed)


@register_sampler("gp")
def gp(setup: SamplerSetup, options: Mapping[str, Any]) -> optuna.samplers.BaseSampler:
    # Optuna 5's GP handles several objectives (log EHVI) and constraints
    return construct(
        "sampler",
        "gp",
        optuna.samplers.GPSampler,
        options,
        seed=setup.seed,
    )


@register_sampler("qmc")
def qmc(setup: SamplerSetup, options: Mapping[str, Any]) -> optuna.samplers.BaseSampler:
    defaults = {"warn_independent_sampling": False}
    return construct("sampler", "qmc", optuna.samplers.QMCSampler, options, defaults, seed=setup.seed)


@register_sampler("grid")
def grid(setup: SamplerSetup, options: Mapping[str, Any]) -> optuna.samplers.BaseSampler:
    if not setup.space.is_discrete():
        raise UserError("--sampler grid needs a discrete space: give every float a step, or use tpe/random")
    return construct("sampler", "grid", optuna.samplers.BruteForceSampler, options, seed=setup.seed)


@register_sampler("nsga2")
def nsga2(setup: SamplerSetup, options: Mapping[str, Any]) -> optuna.samplers.BaseSampler:
    return construct(
        "sampler",
        "nsga2",
        optuna.samplers.NSGAIISampler,
        options,
        seed=setup.seed,
    )


@register_sampler("nsga3")
def nsga3(setup: SamplerSetup, options: Mapping[str, Any]) -> optuna.samplers.BaseSampler:
    return construct(
        "sampler",
        "nsga3",
        optuna.samplers.NSGAIIISampler,
        options,
        seed=setup.seed,
    )


@register_sampler("botorch")
def botorch(setup: SamplerSetup, options: Mapping[str, Any]) -> optuna.samplers.BaseSampler:
    """Optuna's BoTorch sampler lives in optuna-integration and needs botorch (and gpytorch)."""
    try:
        integration = importlib.import_module("optuna_integration")
        importlib.import_module("botorch")
    except ImportError as exc:
        raise UserError(
            f"sampler 'botorch' needs the {exc.name or 'optuna_integration'} package: "
            "pip install 'exptrack[botorch]' (optuna-integration, botorch), or use gp"
        ) from exc
    cls = integration.BoTorchSampler
    return construct("sampler", "botorch", cls, options, seed=setup.seed)


# --- pruners: each trial reports its objective once per epoch ----------------------------------


@register_pruner("none")
def no_pruning(setup: PrunerSetup, options: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    return construct("pruner", "none", optuna.pruners.NopPruner, options)


@register_pruner("median")
def median(setup: PrunerSetup, options: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    # judge from epoch 1 on, once 5 trials have set a median
    defaults = {"n_startup_trials": 5, "n_warmup_steps": 0}
    return construct("pruner", "median", optuna.pruners.MedianPruner, options, defaults)


@register_pruner("percentile")
def percentile(setup: PrunerSetup, options: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    # keep the top quarter at each epoch (median is percentile 50)
    defaults = {"percentile": 25.0, "n_startup_trials": 5, "n_warmup_steps": 0}
    return construct("pruner", "percentile", optuna.pruners.PercentilePruner, options, defaults)


@register_pruner("successive_halving")
def successive_halving(setup: PrunerSetup, options: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    # rungs at epochs 1, 3, 9, ...: Optuna's "auto" min_resource would wait for a finished trial
    defaults = {"min_resource": 1, "reduction_factor": 3}
    return construct(
        "pruner", "successive_halving", optuna.pruners.SuccessiveHalvingPruner, options, defaults
    )


@register_pruner("hyperband")
def hyperband(setup: PrunerSetup, options: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    defaults = {"min_resource": 1, "max_resource": max(1, setup.epochs), "reduction_factor": 3}
    return construct("pruner", "hyperband", optuna.pruners.HyperbandPruner, options, defaults)


@register_pruner("wilcoxon")
def wilcoxon(setup: PrunerSetup, options: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    # Built for steps that are independent evaluations (folds, problem instances): it pairs the
    # trial's values with the best trial's step by step. Epochs of one learning curve are not
    # independent, so here it is a heuristic "worse than the best trial at the same epochs" test;
    # it needs n_startup_steps epochs before it can judge.
    defaults = {"p_threshold": 0.1, "n_startup_steps": 2}
    return construct("pruner", "wilcoxon", optuna.pruners.WilcoxonPruner, options, defaults)
