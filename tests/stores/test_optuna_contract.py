"""The contract with Optuna's private API (`exptrack.stores.optuna_private`), checked on a real
storage: an Optuna release that renames or reshapes one of these fails here, naming the call,
instead of a search failing mid-study. pyproject pins optuna to the majors this passes on."""

from __future__ import annotations

import threading
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


def commits_of(study: optuna.Study) -> list[int]:
    """A running count of the transactions committed on the study's database (reads commit too)."""
    count = [0]
    sqlalchemy.event.listen(
        optuna_private.rdb_storage_of(study).engine, "commit", lambda _: count.__setitem__(0, count[0] + 1)
    )
    return count


def test_params_sampled_in_one_write_are_one_transaction_and_read_back_as_optunas(study: optuna.Study) -> None:
    from exptrack.stores.optuna_storage import params_in_one_write

    study.sampler = optuna.samplers.RandomSampler(seed=0)  # it reads nothing: only the write commits
    trial, commits = study.ask(), commits_of(study)
    with params_in_one_write(trial):
        x = trial.suggest_float("x", 1e-4, 1.0, log=True)
        n = trial.suggest_int("n", 0, 5)
        c = trial.suggest_categorical("c", ["a", "b"])
        assert commits[0] == 0
    assert commits[0] == 1 and trial.params == {"x": x, "n": n, "c": c}
    stored = optuna.load_study(study_name="contract", storage=optuna_private.rdb_storage_of(study)).trials[0]
    assert stored.params == {"x": x, "n": n, "c": c}
    assert stored.distributions == trial.distributions


def test_a_store_call_while_params_are_held_writes_them_first(study: optuna.Study) -> None:
    from exptrack.stores.optuna_storage import params_in_one_write

    trial = study.ask()
    with params_in_one_write(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        reread = optuna_private.rdb_storage_of(study).get_trial(optuna_private.trial_id(trial))
        assert reread.params == {"x": x}  # a read (a sampler's) sees every param sampled before it
        trial.suggest_float("y", 0.0, 1.0)
    assert set(study.trials[0].params) == {"x", "y"}


def test_held_params_of_a_trial_finished_elsewhere_are_refused_and_none_is_written(study: optuna.Study) -> None:
    from exptrack.stores.optuna_storage import params_in_one_write

    trial = study.ask()
    elsewhere = open_storage(optuna_private.rdb_storage_of(study).url)  # another worker's
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError), params_in_one_write(trial):
        trial.suggest_float("x", 0.0, 1.0)
        fail = threading.Thread(  # another worker's repair, as another thread is held nothing of ours
            target=elsewhere.set_trial_state_values,
            args=(optuna_private.trial_id(trial), optuna.trial.TrialState.FAIL),
        )
        fail.start()
        fail.join()
    assert study.trials[0].params == {} and study.trials[0].state == optuna.trial.TrialState.FAIL


def test_a_held_param_the_study_holds_with_another_distribution_is_refused_by_every_trial(
    study: optuna.Study,
) -> None:
    from exptrack.stores.optuna_storage import params_in_one_write

    first = study.ask()
    first.suggest_float("x", 0.0, 1.0)
    study.tell(first, 1.0)
    again = optuna.load_study(study_name="contract", storage=open_storage(optuna_private.rdb_storage_of(study).url))
    for _ in range(2):  # the second is checked as the first: Optuna's cache kept no wrong note
        trial = again.ask()
        with pytest.raises(ValueError, match="distribution"), params_in_one_write(trial):
            trial.suggest_int("x", 0, 3)
            trial.suggest_float("y", 0.0, 1.0)
        assert again.trials[-1].params == {}  # neither param: one transaction, refused whole
