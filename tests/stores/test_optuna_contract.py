"""The contract with Optuna's private API (`exptrack.stores.optuna_private`), checked on a real
storage: an Optuna release that renames or reshapes one of these fails here, naming the call,
instead of a search failing mid-study. pyproject pins optuna to the majors this passes on."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy

from exptrack.stores import optuna_private
from exptrack.stores.optuna_storage import ResilientStorage, open_storage


@pytest.fixture
def study(tmp_path: Path) -> optuna.Study:
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}", grace_period=60)
    return optuna.create_study(study_name="contract", storage=storage)


def test_every_storage_call_the_outage_wrapper_names_exists_on_optunas_rdb_storage() -> None:
    missing = [
        n
        for n in optuna_private.storage_calls()
        if not callable(getattr(optuna.storages.RDBStorage, n, None))
    ]
    assert missing == [], (
        f"optuna {optuna.__version__} has no RDBStorage.{missing}: update stores/optuna_private.py"
    )
    wrapped = [n for n in optuna_private.storage_calls() if getattr(ResilientStorage, n).__wrapped__ is None]
    assert wrapped == []


def test_a_study_exposes_its_storage_and_ids_where_optuna_private_reads_them(study: optuna.Study) -> None:
    assert optuna_private.storage_of(study) is not None, "Study._storage"
    assert isinstance(optuna_private.rdb_storage_of(study), ResilientStorage), "Study._storage._backend"
    assert optuna_private.study_id(study) == optuna_private.storage_of(study).get_study_id_from_name(
        "contract"
    )
    trial = study.ask()
    frozen = study.trials[0]
    assert optuna_private.trial_id(trial) == optuna_private.trial_id(frozen), (
        "Trial._trial_id / FrozenTrial._trial_id"
    )


def test_the_heartbeat_and_its_stale_trial_query_work_as_optuna_private_calls_them(
    study: optuna.Study,
) -> None:
    trial = study.ask()
    optuna_private.storage_of(study).record_heartbeat(optuna_private.trial_id(trial))
    assert optuna_private.stale_trial_ids(study) == []  # beat just now, grace period 60 s
    # a storage whose grace period has passed finds it stale: Optuna's own test, as repair uses it
    stale_view = open_storage(optuna_private.rdb_storage_of(study).url, grace_period=1)
    time.sleep(2.5)  # past the 1 s grace by more than sqlite timestamps' whole-second resolution
    assert optuna_private.stale_trial_ids(optuna.load_study(study_name="contract", storage=stale_view)) == [
        optuna_private.trial_id(trial)
    ]


def test_a_study_renamed_in_place_keeps_its_id_trials_and_numbers(study: optuna.Study) -> None:
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    storage = optuna_private.rdb_storage_of(study)
    optuna_private.rename_study(storage, "contract", "renamed")
    again = optuna.load_study(study_name="renamed", storage=storage)
    assert optuna_private.study_id(again) == optuna_private.study_id(study)
    assert [t.number for t in again.trials] == [0, 1]
    optuna.create_study(study_name="taken", storage=storage)
    with pytest.raises(sqlalchemy.exc.IntegrityError):  # the table's unique name refuses it, nothing changes
        optuna_private.rename_study(storage, "renamed", "taken")
    assert {s.study_name for s in storage.get_all_studies()} == {"renamed", "taken"}


def test_retired_trials_are_fail_marked_and_the_next_trial_takes_a_new_number(study: optuna.Study) -> None:
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    storage = optuna_private.rdb_storage_of(study)
    optuna_private.retire_trials(
        storage, [optuna_private.trial_id(study.trials[0])], "dropped", '{"at": "now"}'
    )
    again = optuna.load_study(study_name="contract", storage=storage)
    assert [t.state.name for t in again.trials] == ["FAIL", "COMPLETE"]
    assert again.trials[0].user_attrs["dropped"] == {"at": "now"} and again.trials[0].value is not None
    assert again.ask().number == 2


def test_user_attrs_set_in_one_transaction_read_back_as_optunas_and_a_finished_trial_refuses_them(
    study: optuna.Study,
) -> None:
    from exptrack.stores.optuna_storage import set_user_attrs

    trial = study.ask()
    trial.set_user_attr("config", {"lr": 0.1})
    set_user_attrs(trial, {"config": {"lr": 0.2}, "run_id": "abc", "classes": 10})
    assert trial.user_attrs == {"config": {"lr": 0.2}, "run_id": "abc", "classes": 10}  # kept on the trial too
    stored = optuna.load_study(study_name="contract", storage=optuna_private.rdb_storage_of(study)).trials[0]
    assert stored.user_attrs == {"config": {"lr": 0.2}, "run_id": "abc", "classes": 10}
    study.tell(trial, 1.0)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        set_user_attrs(trial, {"late": 1, "later": 2})
    again = optuna.load_study(study_name="contract", storage=optuna_private.rdb_storage_of(study))
    assert "late" not in again.trials[0].user_attrs and "later" not in again.trials[0].user_attrs


def test_constraints_set_in_one_transaction_read_back_as_optunas_and_a_second_value_is_ignored(
    study: optuna.Study,
) -> None:
    from exptrack.stores.optuna_storage import set_constraints

    trial = study.ask()
    set_constraints(trial, {"seconds <= 30": 2.5, "out_of_memory": 0.0})
    set_constraints(trial, {"out_of_memory": 1.0})  # as Optuna's set_constraint: the first one stays
    with pytest.raises(ValueError, match="NaN"):
        set_constraints(trial, {"loss <= 1": float("nan")})
    study.tell(trial, 1.0)
    stored = optuna.load_study(study_name="contract", storage=optuna_private.rdb_storage_of(study)).trials[0]
    assert stored.constraints == {"seconds <= 30": 2.5, "out_of_memory": 0.0}
    assert trial.constraints == stored.constraints
