"""The sampler and pruner registries: every name builds, options from the study file reach Optuna's
constructors and are checked by name, several objectives get a sampler that handles them and no
pruning (said in one line)."""

from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path
from typing import Any

import optuna
import pytest

from exptrack.errors import UserError
from exptrack.search import preflight, samplers
from exptrack.search import space as spaces
from exptrack.study import Study

SPACE = spaces.parse({"lr": {"float": [1e-4, 1e-1], "log": True}, "batch_size": {"choice": [32, 64]}})
GRID_SPACE = spaces.parse({"batch_size": {"choice": [32, 64]}, "freeze_depth": {"int": [0, 2]}})
SINGLE = samplers.SamplerSetup(seed=0, space=SPACE)
PAIR = samplers.SamplerSetup(seed=0, space=SPACE, directions=("maximize", "minimize"))
HAS_BOTORCH = all(importlib.util.find_spec(m) for m in ("optuna_integration", "botorch"))


@pytest.mark.parametrize("name", [n for n in samplers.SAMPLERS if n != "botorch" or HAS_BOTORCH])
def test_every_sampler_builds_and_proposes_a_point(name: str) -> None:
    setup = samplers.SamplerSetup(seed=0, space=GRID_SPACE) if name == "grid" else SINGLE
    sampler = samplers.make_sampler(name, setup)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    for _ in range(3):
        trial = study.ask()
        study.tell(trial, float(len(setup.space.sample(trial, {}))))
    assert len(study.trials) == 3


@pytest.mark.parametrize("name", ["nsga2", "nsga3", "tpe", "gp", "random", "qmc"])
def test_samplers_for_several_objectives_build_for_two(name: str) -> None:
    study = optuna.create_study(
        sampler=samplers.make_sampler(name, PAIR), directions=["maximize", "minimize"]
    )
    trial = study.ask()
    SPACE.sample(trial, {})
    study.tell(trial, [0.5, 1.0])
    assert study.best_trials[0].values == [0.5, 1.0]


def test_cmaes_refuses_several_objectives_in_one_line() -> None:
    with pytest.raises(UserError, match="sampler 'cmaes' optimises one objective; for several use nsga2"):
        samplers.make_sampler("cmaes", PAIR)


def test_options_reach_the_constructor_and_unknown_or_bad_ones_are_one_line_errors() -> None:
    tpe = samplers.make_sampler("tpe", SINGLE, {"n_startup_trials": 3, "n_ei_candidates": 12})
    assert isinstance(tpe, optuna.samplers.TPESampler) and tpe._n_startup_trials == 3
    assert samplers.make_sampler("nsga2", PAIR, {"population_size": 8})._population_size == 8  # type: ignore[attr-defined]
    pruner = samplers.make_pruner("percentile", samplers.PrunerSetup(epochs=4), {"percentile": 10.0})
    assert pruner._percentile == 10.0  # type: ignore[attr-defined]
    with pytest.raises(
        UserError, match=r"sampler 'tpe' takes no option 'n_startup'; its options are .*n_startup_trials"
    ):
        samplers.make_sampler("tpe", SINGLE, {"n_startup": 3})
    with pytest.raises(UserError, match=r"takes no option 'seed' \(it comes from --seed\)"):
        samplers.make_sampler("random", SINGLE, {"seed": 1})
    with pytest.raises(
        UserError, match=r"pruner 'percentile': bad pruner_options .*fix them in the study file"
    ):
        samplers.make_pruner("percentile", samplers.PrunerSetup(epochs=4), {"percentile": 150.0})


@pytest.mark.parametrize("name", list(samplers.PRUNERS))
def test_every_pruner_builds_for_the_study_epochs(name: str) -> None:
    pruner = samplers.make_pruner(name, samplers.PrunerSetup(epochs=9))
    assert isinstance(pruner, optuna.pruners.BasePruner)


def test_hyperband_counts_epochs_as_its_resource() -> None:
    pruner = samplers.make_pruner("hyperband", samplers.PrunerSetup(epochs=9))
    assert pruner._max_resource == 9  # type: ignore[attr-defined]


def test_botorch_without_its_packages_names_them() -> None:
    if HAS_BOTORCH:
        assert samplers.make_sampler("botorch", SINGLE) is not None
        return
    with pytest.raises(
        UserError, match=r"sampler 'botorch' needs the .* package: pip install 'exptrack\[botorch\]'"
    ):
        samplers.make_sampler("botorch", SINGLE)


def prepared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **fields: Any) -> preflight.Prepared:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.yaml").write_text("lr: {float: [1.0e-3, 1.0e-2], log: true}\n")
    fixed = {"weights": "none", "epochs": 2, "subset": 32, "image_size": 8}
    spec = Study(name="s", search_space="space.yaml", fixed=fixed, dashboard=None, **fields)
    return preflight.prepare(spec, None, None, 0)


def test_several_objectives_get_nsga2_and_no_pruning_with_one_line_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ready = prepared(
        tmp_path, monkeypatch, objectives={"val_accuracy": "maximize", "seconds_per_epoch": "minimize"}
    )
    assert isinstance(ready.sampler, optuna.samplers.NSGAIISampler)
    assert isinstance(ready.pruner, optuna.pruners.NopPruner)
    assert ready.notes == (
        "pruning is off: Optuna's pruners judge one value per epoch, and this study has several objectives",
    )


def test_an_objective_known_only_at_the_end_is_not_pruned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ready = prepared(tmp_path, monkeypatch, metric="seconds_per_epoch", direction="minimize")
    assert (
        isinstance(ready.pruner, optuna.pruners.NopPruner)
        and "known only when a trial ends" in ready.notes[0]
    )


def test_study_options_go_to_the_study_sampler_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ready = prepared(tmp_path, monkeypatch, sampler="tpe", sampler_options={"n_startup_trials": 4})
    assert ready.sampler._n_startup_trials == 4  # type: ignore[attr-defined]
    monkeypatch.chdir(tmp_path)
    spec = Study(name="s", search_space="space.yaml", sampler_options={"n_startup_trials": 4}, dashboard=None,
                 fixed={"weights": "none", "subset": 32, "image_size": 8})  # fmt: skip
    other = preflight.prepare(spec, "random", None, 0)
    assert isinstance(other.sampler, optuna.samplers.RandomSampler)
    assert other.notes == (
        "sampler_options in the study file are for tpe; --sampler random runs with its defaults",
    )


def test_constraints_under_a_sampler_that_ignores_them_are_said_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ready = prepared(tmp_path, monkeypatch, sampler="random", constraints=["seconds_per_epoch <= 30"])
    assert not ready.learns_infeasible
    assert ready.notes[0].startswith(
        "sampler random does not steer by constraints (tpe, gp, nsga2 and nsga3 do)"
    )
    assert prepared(tmp_path, monkeypatch, sampler="tpe").learns_infeasible


COND_SPACE = spaces.parse(
    {
        "lr": {"float": [1e-4, 1e-1], "log": True},
        "batch_size": {"choice": [32, 64, 128]},
        "freeze_depth": {"int": [0, 4]},
        "loss": {"choice": {"cross_entropy": {}, "focal": {"gamma": {"float": [0.5, 5.0]}}}},
    }
)
# each sampler past its random start within 5 trials (TPE's and GP's default is 10, NSGA's population 50;
# grid's 6 points: past them, it stops the study)
SOON = {"tpe": {"n_startup_trials": 3}, "gp": {"n_startup_trials": 3}, "nsga2": {"population_size": 4},
        "nsga3": {"population_size": 4}}  # fmt: skip


def two_workers_params(name: str, folder: Path, held: bool) -> list[dict[str, Any]]:
    """5 trials of two workers (two study objects, seeds 0 and 1) on one sqlite store, each asked
    while the other's trial still runs (what constant_liar reads), told a value of its params."""
    from exptrack.stores.optuna_storage import open_storage, params_in_one_write

    space = GRID_SPACE if name == "grid" else COND_SPACE
    storage = open_storage(f"sqlite:///{folder / 'optuna.db'}", grace_period=60)
    workers = [
        optuna.create_study(
            study_name="same", storage=storage, direction="maximize", load_if_exists=True,
            sampler=samplers.make_sampler(name, samplers.SamplerSetup(seed, space), SOON.get(name)),
        )
        for seed in (0, 1)
    ]  # fmt: skip
    running: optuna.Trial | None = None
    for number in range(5):
        trial = workers[number % 2].ask()
        with params_in_one_write(trial) if held else contextlib.nullcontext():
            space.sample(trial, {})
        if running is not None:
            running.study.tell(running, sum(_numbers(running.params)))
        running = trial
    return [t.params for t in workers[0].trials]


def _numbers(params: dict[str, Any]) -> list[float]:
    return [float(v) for v in params.values() if isinstance(v, int | float)]


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in samplers.SAMPLERS if n != "botorch" or HAS_BOTORCH])
def test_every_sampler_proposes_the_same_params_when_a_trial_writes_them_in_one_transaction(
    name: str, tmp_path: Path
) -> None:
    (tmp_path / "plain").mkdir(), (tmp_path / "held").mkdir()
    plain = two_workers_params(name, tmp_path / "plain", held=False)
    held = two_workers_params(name, tmp_path / "held", held=True)
    assert held == plain and len({str(p) for p in plain}) > 1
