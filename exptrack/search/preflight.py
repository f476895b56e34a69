"""Checks done before any store is opened, so a bad input ends with one line and writes nothing:
search space, fixed config, device, sampler, pruner, storage and tracking URLs."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import optuna

from exptrack import config as cfg
from exptrack.errors import UserError, redact
from exptrack.search import samplers
from exptrack.search import space as spaces
from exptrack.study import Study
from exptrack.training import backbones, datasets, fit, losses

TRACKING_SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks")


@dataclasses.dataclass(frozen=True)
class Prepared:
    """The validated pieces a search is built from."""

    space: spaces.SearchSpace
    sampler: optuna.samplers.BaseSampler
    pruner: optuna.pruners.BasePruner
    sampler_name: str = "tpe"  # to build it again with a worker's own seed

    def sampler_seeded(self, seed: int | None) -> optuna.samplers.BaseSampler:
        return samplers.make_sampler(self.sampler_name, seed, self.space)


def prepare(
    spec: Study,
    sampler: str | None,
    pruner: str | None,
    seed: int | None,
    pins: Mapping[str, Any] | None = None,
) -> Prepared:
    """Validate the study against its space and build its sampler and pruner. `pins` (the `--set`
    values) take the parameters they name out of the space: those are fixed for the study."""
    sampler_name, pruner_name = sampler or spec.sampler, pruner or spec.pruner
    samplers.check_names(sampler_name, pruner_name)
    space = spaces.load(spec.search_space_path()).pin(pins or {})
    config = cfg.from_dict(space.sample(optuna.trial.FixedTrial(first_point(space)), spec.fixed))
    backbones.backbone(config.backbone)  # unknown names end here, before any store is opened
    datasets.parse_spec(config.dataset)
    losses.loss_parameters(config.loss)
    fit.resolve_device(config.device)
    fit.check(config)  # dataset files, image size, weights file/URI: before any store is opened
    epochs = int(spec.fixed.get("epochs", cfg.TrialConfig.epochs))
    return Prepared(
        space,
        samplers.make_sampler(sampler_name, seed, space),
        samplers.make_pruner(pruner_name, epochs),
        sampler_name,
    )


def check_storage_url(url: str) -> None:
    """A storage URL SQLAlchemy can parse; a database server must answer (a sqlite file is
    created later, so it is not touched here)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except Exception as exc:
        raise UserError(
            f"Optuna storage {redact(url)} is not a valid database URL ({type(exc).__name__}); "
            "fix --storage, e.g. sqlite:///optuna.db"
        ) from exc
    if parsed.get_backend_name() == "sqlite":
        return
    try:
        with create_engine(parsed, connect_args={"connect_timeout": 10}).connect():
            pass
    except Exception as exc:
        raise UserError(
            f"Optuna storage {redact(url)} cannot be opened ({type(exc).__name__}); "
            "start the database or fix --storage"
        ) from exc


def check_tracking_uri(uri: str) -> None:
    scheme, sep, _ = uri.partition("://")
    if sep and scheme.split("+")[0] not in TRACKING_SCHEMES:
        raise UserError(
            f"MLflow tracking URI {redact(uri)} has an unknown scheme {scheme!r}; "
            "use sqlite:///mlflow.db or http://HOST:PORT"
        )


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
        elif param.kind == "choice":
            point[param.name] = param.choices[0]
        else:
            point[param.name] = param.low

    for p in space.params:
        visit(p)
    return point
