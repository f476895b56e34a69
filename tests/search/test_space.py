"""Search-space files: validation names the parameter, sampling follows the conditional tree."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from exptrack import config as cfg
from exptrack.errors import UserError
from exptrack.search import space

REPO = Path(__file__).resolve().parents[2]


def parse(text: str) -> space.SearchSpace:
    return space.parse(yaml.safe_load(text), source="test.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lr: {float: [0.1, 0.001]}", "'lr': low 0.1 is greater than high 0.001"),
        ("lr: {float: [0.0, 0.1], log: true}", "'lr': log scale needs low > 0"),
        ("batch_size: {choice: []}", "'batch_size': choice is empty"),
        ("loss: {choice: {}}", "'loss': choice is empty"),
        ("learning_rate: {float: [0.1, 1.0]}", "unknown parameter 'learning_rate'"),
        ("lr: {float: [0.1, 1.0], scale: log}", "'lr': unknown key 'scale'"),
        ("loss: {choice: {hinge: {}}}", "unknown loss 'hinge'"),
        ("loss: {choice: [cross_entropy, hinge]}", "unknown loss 'hinge'"),
        ("loss: {choice: {focal: {alpha: {float: [0, 1]}}}}", "loss 'focal' takes no parameter 'alpha'"),
        ("batch_size: {float: [8, 64]}", "'batch_size': batch_size is a whole number"),
        ("lr: {int: [1, 2], float: [1, 2]}", "'lr': give exactly one of float, int or choice"),
        ("lr: [0.1, 0.2]", "'lr': expected a mapping"),
        ("weight_decay: {float: [1e-6, 1e-2], log: true, step: 0.1}", "log and step cannot be combined"),
        ("lr: {float: [0.001, max]}", "'lr': high must be a number"),
    ],
)
def test_invalid_spaces_are_refused_with_the_parameter_named(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("[", r"\[")) as info:
        parse(text)
    assert "\n" not in str(info.value)


def test_the_shipped_space_samples_only_the_chosen_losss_parameters() -> None:
    shipped = space.load(REPO / "search_spaces" / "finetune.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_losses = set()
    for _ in range(40):
        trial = study.ask()
        values = shipped.sample(trial, {"backbone": "resnet18"})
        seen_losses.add(values["loss"])
        expected = {"cross_entropy": set(), "label_smoothing": {"smoothing"}, "focal": {"gamma"}}[
            values["loss"]
        ]
        assert set(values["loss_params"]) == expected
        assert 0 <= values["freeze_depth"] <= 5  # resnet18 has 5 stages
        assert 1e-4 <= values["lr"] <= 3e-2
        assert {k for k in trial.params if k.startswith("loss.")} <= {
            f"loss.{values['loss']}.{p}" for p in expected
        }
        study.tell(trial, 0.0)
    assert seen_losses == {"cross_entropy", "label_smoothing", "focal"}


def test_freeze_depth_max_follows_the_backbone_searched_above_it() -> None:
    searched = parse(
        """
        backbone:
          choice:
            resnet18: {freeze_depth: {int: [0, max]}}
            efficientnet_b0: {freeze_depth: {int: [0, max]}}
        """
    )
    study = optuna.create_study()
    highs = {}
    for backbone in ("resnet18", "efficientnet_b0"):
        study.enqueue_trial({"backbone": backbone})
        trial = study.ask()
        values = searched.sample(trial, {})
        assert values["backbone"] == backbone
        highs[backbone] = trial.distributions[f"backbone.{backbone}.freeze_depth"].high
        study.tell(trial, 0.0)
    assert highs == {"resnet18": 5, "efficientnet_b0": 6}


def test_exponents_without_a_dot_are_read_as_numbers() -> None:
    parsed = parse("weight_decay: {float: [1e-6, 1e-2], log: true}")
    assert parsed.describe() == {"weight_decay": {"float": [1e-6, 1e-2], "log": True}}


def test_a_fixed_trial_rebuilds_the_same_config_values() -> None:
    shipped = space.load(REPO / "search_spaces" / "finetune.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    trial = study.ask()
    sampled = shipped.sample(trial, {"epochs": 2})
    assert shipped.sample(optuna.trial.FixedTrial(trial.params), {"epochs": 2}) == sampled


def test_describe_changes_when_a_range_changes() -> None:
    assert parse("lr: {float: [0.001, 0.1]}").describe() != parse("lr: {float: [0.001, 0.2]}").describe()
    assert parse("lr: {float: [0.001, 0.1], log: true}").describe() == {
        "lr": {"float": [0.001, 0.1], "log": True}
    }


def test_grid_needs_a_discrete_space() -> None:
    assert parse("batch_size: {choice: [8, 16]}\nfreeze_depth: {int: [0, 2]}").is_discrete()
    assert not parse("lr: {float: [0.001, 0.1]}").is_discrete()
    assert parse("lr: {float: [0.01, 0.1], step: 0.01}").is_discrete()


def test_set_on_a_searched_parameter_pins_it_and_keeps_the_chosen_branch_searched() -> None:
    shipped = space.load(REPO / "search_spaces" / "finetune.yaml")
    pinned = shipped.pin({"lr": 0.5, "loss": "focal", "freeze_depth": 2})
    assert pinned.pins == {"lr": 0.5, "loss": "focal", "freeze_depth": 2}
    assert pinned.names() == ["batch_size", "weight_decay", "loss.focal.gamma"]
    fixed = {"backbone": "resnet18", "lr": 0.5, "loss": "focal", "freeze_depth": 2}
    study = optuna.create_study()
    trial = study.ask()
    values = pinned.sample(trial, fixed)
    assert values["lr"] == 0.5 and values["loss"] == "focal" and values["freeze_depth"] == 2
    assert set(trial.params) == {"batch_size", "weight_decay", "loss.focal.gamma"}
    assert set(values["loss_params"]) == {"gamma"}
    # a pinned space is another space: resuming the study without the pin is refused
    assert pinned.describe()["lr"] == {"pinned": 0.5} and pinned.describe() != shipped.describe()
    assert shipped.pin({"epochs": 3}) == shipped  # not a searched parameter: nothing to pin


def test_a_pinned_loss_parameter_holds_whenever_its_loss_is_chosen() -> None:
    shipped = space.load(REPO / "search_spaces" / "finetune.yaml")
    pinned = shipped.pin({"loss_params": {"gamma": 2.0}})
    assert "loss.focal.gamma" not in pinned.names() and pinned.pins == {"loss.focal.gamma": 2.0}
    study = optuna.create_study()
    chosen = {}
    for loss in ("focal", "label_smoothing"):
        study.enqueue_trial({"loss": loss})
        chosen[loss] = pinned.sample(study.ask(), {"loss_params": {"gamma": 2.0}})["loss_params"]
    assert chosen["focal"] == {"gamma": 2.0}  # pinned, not sampled
    assert set(chosen["label_smoothing"]) == {"smoothing"}  # a loss without gamma never gets it


def test_searched_parameters_are_named_as_optuna_names_them_in_every_record() -> None:
    branched = parse(
        """
        backbone:
          choice:
            resnet18: {freeze_depth: {int: [0, max]}}
        loss: {choice: {focal: {gamma: {float: [0.5, 5.0]}}}}
        """
    )
    trial = optuna.create_study().ask()
    values = branched.sample(trial, {})
    named = branched.named_params(cfg.from_dict(values).flat_params(), trial.params)
    assert set(trial.params) <= set(named)  # backbone.resnet18.freeze_depth, loss.focal.gamma, ...
    assert "freeze_depth" not in named and "loss_params.gamma" not in named


def test_numeric_choices_are_kept_in_numeric_order() -> None:
    parsed = parse("batch_size: {choice: [256, 32, 128, 64]}\nloss: {choice: [focal, cross_entropy]}")
    assert parsed.describe() == {
        "batch_size": {"choice": [32, 64, 128, 256]},  # plots that place a choice by index read 32 < 64
        "loss": {"choice": ["focal", "cross_entropy"]},  # names keep the file's order
    }
