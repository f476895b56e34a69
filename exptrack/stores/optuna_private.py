"""Every use of Optuna's private API, in one place: the storage behind a study, study and trial
ids, the stale-trial query of its heartbeat, and the storage methods Optuna's cache calls directly.
An Optuna release that changes one of them fails `tests/stores/test_optuna_contract.py`, naming the
call, instead of a search in the middle of a study; pyproject pins optuna to the majors it passes on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import optuna

# RDBStorage methods that Optuna's cache in front of the storage (`_CachedStorage`) calls directly,
# beside BaseStorage's public ones, and the heartbeat's own: a wrapper of every store call needs them.
CACHED_STORAGE_CALLS = ("_create_new_trial", "_set_trial_param", "_get_best_trial_id", "_get_trials")
HEARTBEAT_CALLS = ("record_heartbeat", "_get_stale_trial_ids")


def storage_calls() -> list[str]:
    """Every method of an RDB storage that reaches the database."""
    public = [n for n, v in vars(optuna.storages.BaseStorage).items() if callable(v) and n[0] != "_"]
    return [*public, *CACHED_STORAGE_CALLS, *HEARTBEAT_CALLS]


def wrap_storage_calls(storage_class: type, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """Replace each of `storage_calls()` on `storage_class` (an RDBStorage subclass) by `wrap(it)`."""
    for name in storage_calls():
        setattr(storage_class, name, wrap(getattr(optuna.storages.RDBStorage, name)))


def storage_of(study: optuna.Study) -> Any:
    """The storage a study reads and writes through (Optuna's cache around ours, for RDB stores)."""
    return study._storage


def rdb_storage_of(study: optuna.Study) -> Any:
    """The RDB storage itself, under Optuna's cache."""
    return getattr(study._storage, "_backend", study._storage)


def study_id(study: optuna.Study) -> int:
    return int(study._study_id)


def trial_id(trial: optuna.trial.BaseTrial | optuna.trial.FrozenTrial) -> int:
    return int(trial._trial_id)  # type: ignore[union-attr]


def stale_trial_ids(study: optuna.Study) -> list[int]:
    """Running trials whose heartbeat is older than the grace period (Optuna's own test)."""
    return list(study._storage._get_stale_trial_ids(study._study_id))  # type: ignore[attr-defined]


def rename_study(storage: Any, old: str, new: str) -> None:
    """Rename a stored study in one transaction (Optuna has no rename): its id, trials and their
    numbers stay, so every link to them (run ids, `trial-007`) holds. An existing `new` is refused
    by the table's unique name before anything changes."""
    from optuna.storages._rdb import models

    with _transaction(storage) as session:
        models.StudyModel.find_or_raise_by_name(old, session).study_name = new


def retire_trials(storage: Any, trial_ids: list[int], key: str, value_json: str) -> None:
    """Mark finished trials FAIL and give each the user attr `key` (a JSON text), all in one
    transaction: Optuna refuses to change a finished trial and has no trial delete, and a FAIL
    trial is one no sampler learns from and no budget counts, while its number stays taken."""
    from optuna.storages._rdb import models

    with _transaction(storage) as session:
        for trial_id in trial_ids:
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
            trial.state = optuna.trial.TrialState.FAIL
            attr = models.TrialUserAttributeModel.find_by_trial_and_key(trial, key, session)
            if attr is None:
                session.add(models.TrialUserAttributeModel(trial_id=trial_id, key=key, value_json=value_json))
            else:
                attr.value_json = value_json


def set_trial_user_attrs(storage: Any, trial_id: int, attrs: Mapping[str, Any]) -> None:
    """Several user attributes of one unfinished trial in one transaction, each written as Optuna's
    `set_trial_user_attr` writes it (refused with UpdateFinishedTrialError on a finished trial):
    Optuna commits each on its own, a pool checkout with its ping, 3 statements and a commit each."""
    from optuna.storages._rdb import models

    rdb = getattr(storage, "_backend", storage)
    with _transaction(rdb) as session:
        for key, value in attrs.items():
            rdb._set_trial_attr_without_commit(session, models.TrialUserAttributeModel, trial_id, key, value)


def constraint_attr(name: str) -> str:
    """The system attr Optuna keeps a trial's constraint `name` under (`Trial.set_constraint`)."""
    from optuna.study._constrained_optimization import _CONSTRAINTS_KEY

    return f"{_CONSTRAINTS_KEY}:{name}"


def set_trial_system_attrs(storage: Any, trial_id: int, attrs: Mapping[str, Any]) -> None:
    """`set_trial_user_attrs` for system attrs (a trial's constraint values)."""
    from optuna.storages._rdb import models

    rdb = getattr(storage, "_backend", storage)
    with _transaction(rdb) as session:
        for key, value in attrs.items():
            rdb._set_trial_attr_without_commit(
                session, models.TrialSystemAttributeModel, trial_id, key, value
            )


def kept_system_attrs(trial: optuna.Trial) -> dict[str, Any]:
    """The system attrs the trial object holds: those it was asked with and those set through it."""
    return trial._cached_frozen_trial.system_attrs


def keep_user_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    """What `Trial.set_user_attr` keeps on the trial object besides the store (`trial.user_attrs`)."""
    trial._cached_frozen_trial.user_attrs.update(attrs)


@contextlib.contextmanager
def _transaction(storage: Any) -> Iterator[Any]:
    """One session of the RDB storage under `storage` (a cached one's too), committed whole or
    rolled back. Not Optuna's `_create_scoped_session`: it turns a driver's error into
    StorageInternalError, which would hide a full disk or an outage from `stores.faults`."""
    rdb = getattr(storage, "_backend", storage)
    session = rdb.scoped_session()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        rdb.scoped_session.remove()
