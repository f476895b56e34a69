"""Optuna samplers and pruners by name: plain-dict registries from a name (in a study file or a
flag) to a builder, so a study file can add its own with `register_sampler` / `register_pruner`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import optuna

from exptrack import registry
from exptrack.errors import UserError
from exptrack.search.space import SearchSpace

SamplerBuilder = Callable[[int | None, SearchSpace], optuna.samplers.BaseSampler]  # (seed, space)
PrunerBuilder = Callable[[int], optuna.pruners.BasePruner]  # (epochs)
SAMPLERS: dict[str, SamplerBuilder] = {}
PRUNERS: dict[str, PrunerBuilder] = {}
register_sampler = registry.registrar(SAMPLERS, "sampler")
register_pruner = registry.registrar(PRUNERS, "pruner")
Builder = TypeVar("Builder")


def _builder(registry: dict[str, Builder], kind: str, name: str) -> Builder:
    if name not in registry:
        raise UserError(f"unknown {kind} {name!r}; use one of {', '.join(registry)}")
    return registry[name]


def check_names(sampler: str, pruner: str) -> None:
    """Refuse an unknown sampler or pruner name before any store is opened."""
    _builder(SAMPLERS, "sampler", sampler)
    _builder(PRUNERS, "pruner", pruner)


def make_sampler(name: str, seed: int | None, space: SearchSpace) -> optuna.samplers.BaseSampler:
    return _builder(SAMPLERS, "sampler", name)(seed, space)


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    return _builder(PRUNERS, "pruner", name)(epochs)


@register_sampler("tpe")
def tpe(seed: int | None, space: SearchSpace) -> optuna.samplers.BaseSampler:
    # multivariate + group model the conditional loss parameters together; constant_liar keeps
    # parallel workers from proposing the same point while their trials run
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)


@register_sampler("random")
def random(seed: int | None, space: SearchSpace) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


@register_sampler("cmaes")
def cmaes(seed: int | None, space: SearchSpace) -> optuna.samplers.BaseSampler:
    return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)


@register_sampler("gp")
def gp(seed: int | None, space: SearchSpace) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(seed=seed)


@register_sampler("qmc")
def qmc(seed: int | None, space: SearchSpace) -> optuna.samplers.BaseSampler:
    return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)


@register_sampler("grid")
def grid(seed: int | None, space: SearchSpace) -> optuna.samplers.BaseSampler:
    if not space.is_discrete():
        raise UserError("--sampler grid needs a discrete space: give every float a step, or use tpe/random")
    return optuna.samplers.BruteForceSampler(seed=seed)


@register_pruner("none")
def no_pruning(epochs: int) -> optuna.pruners.BasePruner:
    return optuna.pruners.NopPruner()


@register_pruner("median")
def median(epochs: int) -> optuna.pruners.BasePruner:
    # judge from epoch 1 on, once 5 trials have set a median
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)


@register_pruner("hyperband")
def hyperband(epochs: int) -> optuna.pruners.BasePruner:
    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, epochs), reduction_factor=3)
