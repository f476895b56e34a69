"""Optuna sampler and pruner factories: a name from the study file or a flag -> the object."""

from __future__ import annotations

import optuna

from exptrack import space as spaces
from exptrack.errors import UserError

SAMPLERS = ("tpe", "random", "cmaes", "gp", "qmc", "grid")
PRUNERS = ("none", "median", "hyperband")


def check_names(sampler: str, pruner: str) -> None:
    """Refuse an unknown sampler or pruner name before any store is opened."""
    if sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r}; use one of {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise UserError(f"unknown pruner {pruner!r}; use one of {', '.join(PRUNERS)}")


def make_sampler(name: str, seed: int | None, space: spaces.SearchSpace) -> optuna.samplers.BaseSampler:
    if name == "tpe":  # multivariate + group handles the conditional loss parameters together
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    if name == "grid":
        if not space.is_discrete():
            raise UserError(
                "--sampler grid needs a discrete space: give every float a step, or use tpe/random"
            )
        return optuna.samplers.BruteForceSampler(seed=seed)
    raise UserError(f"unknown sampler {name!r}; use one of {', '.join(SAMPLERS)}")


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":  # judge from epoch 1 on, once 5 trials have set a median
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, epochs), reduction_factor=3)
    raise UserError(f"unknown pruner {name!r}; use one of {', '.join(PRUNERS)}")
