"""TrialConfig: typed overrides, YAML round trip, flat params for MLflow."""

from __future__ import annotations

from pathlib import Path

import pytest

from exptrack import config as cfg
from exptrack.errors import UserError


def test_set_overrides_are_typed_from_the_config_fields() -> None:
    overrides = cfg.parse_overrides(
        ["epochs=2", "lr=1e-3", "dataset=imagefolder:/data/pets", "loss_params.gamma=2"]
    )
    config = cfg.from_dict(cfg.apply_overrides({"loss": "focal"}, overrides))
    assert config.epochs == 2 and config.lr == 0.001
    assert config.dataset == "imagefolder:/data/pets"
    assert config.loss_params == {"gamma": 2.0}


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("epochz=2", "unknown config key 'epochz'"),
        ("epochs=two", "epochs must be of type int"),
        ("epochs=1.5", "epochs must be of type int"),
        ("lr=fast", "lr must be of type float"),
        ("epochs", "expected key=value"),
        ("lr.x=1", "'lr' is not a config key with sub-keys"),
    ],
)
def test_bad_set_values_name_the_key(pair: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        cfg.from_dict(cfg.parse_overrides([pair]), source="--set")


def test_yaml_round_trip_gives_the_same_config_and_provenance(tmp_path: Path) -> None:
    config = cfg.TrialConfig(lr=0.0123, loss="focal", loss_params={"gamma": 1.5}, freeze_depth=2, epochs=4)
    path = tmp_path / "trial-007.yaml"
    path.write_text(cfg.dump_yaml(config, {"study": "finetune", "trial": 7}))
    again, provenance = cfg.read_yaml(path)
    assert again == config
    assert provenance == {"study": "finetune", "trial": 7}


def test_flat_params_hold_only_the_active_loss_parameters_under_their_search_space_names() -> None:
    plain = cfg.TrialConfig(loss="cross_entropy").flat_params()
    assert not any(k.startswith("loss") and k != "loss" for k in plain)
    focal = cfg.TrialConfig(loss="focal", loss_params={"gamma": 2.0}).flat_params()
    # the name Optuna gives it (and `exp trials` shows), not loss_params.gamma or gamma
    assert focal["loss.focal.gamma"] == "2.0" and focal["loss"] == "focal"
    assert "loss_params" not in focal and "loss_params.gamma" not in focal


def test_set_takes_a_loss_parameter_by_its_search_space_name_too() -> None:
    assert cfg.parse_overrides(["loss.focal.gamma=2"]) == cfg.parse_overrides(["loss_params.gamma=2"])


def test_a_config_cannot_be_changed_after_it_is_built() -> None:
    config = cfg.TrialConfig()
    with pytest.raises(AttributeError):
        config.lr = 1.0  # type: ignore[misc]
