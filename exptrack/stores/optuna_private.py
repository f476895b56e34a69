"""Every use of Optuna's private API, in one place: the storage behind a study, study and trial
ids, the stale-trial query of its heartbeat, and the storage methods Optuna's cache calls directly.
An Optuna release that changes one of them fails `tests/stores/test_optuna_contract.py`, naming the
call, instead of a search in the middle of a study; pyproject pins optuna to the majors it passes on.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import optuna

# RDBStorage methods that Optuna's cache in front of the storage (`_CachedStorage`) calls directly,
# beside BaseStorage's public ones, and the heartbeat's own: a wrapper of every store call needs them.
CACHED_STORAGE_CALLS = ("_create_new_trial", "_set_trial_param", "_get_best_trial_id", "_get_trials")
HEARTBEAT_CALLS = ("record_heartbeat", "_get_stale_trial_ids")
# one sampled param as Optuna's cache hands it to `_set_trial_param`: name, internal value,
# distribution, and the distribution the study already holds for that name (None: not known here)
HeldParam = tuple[str, float, Any, Any]


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


# the writes of a trial being sampled that `optuna_storage.params_in_one_write` holds back
HELD_CALLS = ("_set_trial_param", "set_trial_system_attr")


def param_write(args: Sequence[Any], kwargs: Mapping[str, Any]) -> HeldParam:
    """The param of a `RDBStorage._set_trial_param(trial_id, ...)` call, as `set_trial_params` takes it."""
    given = _bound("_set_trial_param", args, kwargs)
    name, value = given["param_name"], given["param_value_internal"]
    return name, value, given["distribution"], given["previous_distribution"]


def system_attr_write(args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[str, Any]:
    """The key and value of a `RDBStorage.set_trial_system_attr(trial_id, ...)` call."""
    given = _bound("set_trial_system_attr", args, kwargs)
    return given["key"], given["value"]


def _bound(name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A storage call's arguments by name (Optuna's cache passes some by keyword, some not)."""
    method = getattr(optuna.storages.RDBStorage, name)
    return dict(inspect.signature(method).bind(None, *args, **kwargs).arguments)


def set_trial_params(
    storage: Any, trial_id: int, params: Sequence[HeldParam], system_attrs: Mapping[str, Any]
) -> None:
    """A running trial's sampled params (each `(name, internal value, distribution, the study's
    distribution or None: read here)`) and system attrs in one transaction, each written as
    Optuna's `_set_trial_param` / `set_trial_system_attr` writes it: Optuna commits each param on
    its own (a pool checkout with its ping and a commit each: ~6 for the finetune space). A param
    the trial holds already is the commit of a retried write that landed: ignored, as Optuna does."""
    import sqlalchemy.exc
    from optuna.storages._rdb import models

    rdb = getattr(storage, "_backend", storage)
    try:
        with _transaction(rdb) as session:
            for name, value, distribution, previous in params:
                rdb._set_trial_param_without_commit(session, trial_id, name, value, distribution, previous)
            for key, attr in system_attrs.items():
                rdb._set_trial_attr_without_commit(session, models.TrialSystemAttributeModel, trial_id, key, attr)
    except sqlalchemy.exc.IntegrityError:  # every write of the transaction landed before
        return


def forget_param_distributions(study: optuna.Study, names: Sequence[str]) -> None:
    """Drop what Optuna's cache noted of params whose write was refused (a distribution the study
    holds differently): it notes each as stored when the storage returns, and would then skip the
    study's check for this process's later trials. Optuna's own refusal comes before the note."""
    info = getattr(study._storage, "_studies", {}).get(study._study_id)
    if info is not None:
        for name in names:
            info.param_distribution.pop(name, None)


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
