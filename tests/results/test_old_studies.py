"""Studies made before the held-out test split: their trials trained with none. Resuming one is
refused in one line that says how to continue it as it was; its trials export as what they ran
(`test_fraction: 0`), so `exp train` reproduces them and `exp trials` sees no mixed config."""

from __future__ import annotations

import optuna
import pytest
import yaml

from exptrack import Study
from exptrack.config import TrialConfig
from exptrack.errors import UserError
from exptrack.results import export, tables
from exptrack.search import changed_study

OLD_FIXED = {"weights": "none", "epochs": 1}  # as an exptrack before the test split stored it
SPACE = {"lr": {"float": [1e-3, 1e-2], "log": True}}


def old_study() -> optuna.Study:
    """An in-memory study with the attributes and one trial an older exptrack wrote."""
    study = optuna.create_study(study_name="old", direction="maximize")
    for key, value in {"metric": "val_accuracy", "search_space": SPACE, "fixed": OLD_FIXED}.items():
        study.set_user_attr(key, value)
    config = TrialConfig(weights="none", epochs=1, lr=0.005).to_dict()
    del config["test_fraction"]
    study.add_trial(
        optuna.trial.create_trial(
            params={"lr": 0.005},
            distributions={"lr": optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True)},
            value=0.9,
            user_attrs={"config": config},
        )
    )
    return study


def declared(fixed: dict[str, object]) -> changed_study.Declaration:
    spec = Study(
        name="old", search_space="unused.yaml", fixed=fixed, metric="val_accuracy", direction="maximize"
    )
    return changed_study.declaration(spec, SPACE)


def test_resuming_a_study_from_before_the_test_split_is_one_line_saying_how() -> None:
    study = old_study()
    storage = study._storage
    with pytest.raises(UserError) as refused:
        changed_study.check(storage, "old", declared(OLD_FIXED), new_study=False)
    assert str(refused.value) == (
        "study 'old' was created with fixed test_fraction=0.0, now 0.2 (made before the held-out test "
        "split: --set test_fraction=0 continues it as it was); use --new-study or --study-name NEW"
    )
    assert changed_study.check(storage, "old", declared({**OLD_FIXED, "test_fraction": 0}), False) == "old"


def test_a_new_study_records_its_test_share_so_it_is_not_taken_for_an_old_one() -> None:
    assert declared(OLD_FIXED).fixed == {"test_fraction": 0.2, **OLD_FIXED}


def test_an_old_trial_exports_as_what_it_ran_without_a_test_split() -> None:
    study = old_study()
    (item,) = export.export_trials(study, top=1)
    assert item.config.test_fraction == 0.0
    assert yaml.safe_load(item.yaml())["test_fraction"] == 0.0
    assert tables.mixed_fixed(study.trials) == []
