"""Tidying studies on the same two stores: `exp studies rm | rename | copy` and `exp trials drop`.

Each command holds the Optuna store's lock (stores.backends: the sqlite directory's flock, the
PostgreSQL advisory lock), so a search cannot ask for a trial in the middle, and orders its writes
so a kill at any point leaves the old state, the new one, or one that running the same command
again finishes: the MLflow writes first (each idempotent, found again by tags), the Optuna change
last, in one transaction (a study renamed or deleted, trials retired) or built under a name no
user can give (`NEW/copy-in-progress`) and renamed into place.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import json
import os
import shutil
import signal
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from exptrack import records, study_store
from exptrack.errors import UserError, redact
from exptrack.processes import owner_is_dead
from exptrack.results import where as where_filter
from exptrack.stores import backends, optuna_private, optuna_storage
from exptrack.study import check_name
from exptrack.tracking import journal, queries, study_runs
from exptrack.tracking.tracker import Tracker

# Tests only: SIGKILL this process right after its N-th write to either store, to prove that
# every prefix of a command's writes is finished by running it again (tests/cli/test_manage.py).
KILL_ENV = "EXPTRACK_TEST_KILL_AFTER_WRITES"
COPYING = "/copy-in-progress"  # a study name with "/", which check_name refuses to every user
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class _Writes:
    """Counts the writes of one command; the test hook `KILL_ENV` kills it after the N-th."""

    def __init__(self) -> None:
        self.count = 0
        self.kill_after = int(os.environ.get(KILL_ENV, "0") or 0)

    def __call__(self) -> None:
        self.count += 1
        if self.count == self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)


@dataclasses.dataclass
class Target:
    """One stored study, opened under its store's lock, and the tracking store beside it."""

    name: str
    storage: optuna.storages.RDBStorage
    names: list[str]
    study: optuna.Study
    tracker: Tracker | None
    wrote: _Writes

    @property
    def uid(self) -> str | None:
        uid = self.study.user_attrs.get(records.STUDY_UID_ATTR)
        return str(uid) if uid else None

    def run_ids(self, trials: list[FrozenTrial] | None = None) -> list[str]:
        chosen = self.study.get_trials(deepcopy=False) if trials is None else trials
        return [run_id for t in chosen if (run_id := study_store.record(t).run_id)]


@contextlib.contextmanager
def opened(
    name: str, storage: str | None, tracking_uri: str | None, warn: Callable[[str], None], force: bool
) -> Iterator[Target]:
    """The study `name` under its store's lock, refused while a live search runs it (unless
    `force`); the tracking store as it is (never created), or a UserError if it cannot be read."""
    store, names = optuna_storage.readable_storage(storage)
    with backends.store_lock(store.url):
        names = [s.study_name for s in store.get_all_studies()]  # again, under the lock
        if name not in names:
            known = ", ".join(sorted(n for n in names if COPYING not in n)) or "none"
            raise UserError(f"no study named {name!r} in {redact(store.url)}; studies there: {known}")
        study = optuna.load_study(study_name=name, storage=store)
        _refuse_live(study, name, force)
        yield Target(name, store, names, study, _tracker(tracking_uri, warn), _Writes())


def _tracker(tracking_uri: str | None, warn: Callable[[str], None]) -> Tracker | None:
    said: list[str] = []
    tracker = queries.existing_store(tracking_uri, said.append)
    if said:  # a store that exists but cannot be read: changing Optuna alone would orphan its runs
        raise UserError(f"{said[0].split(';')[0]}; nothing changed: fix --tracking-uri and re-run")
    return tracker


def _refuse_live(study: optuna.Study, name: str, force: bool) -> None:
    """A RUNNING trial whose worker is alive (or on another host) means a search runs the study."""
    live = [
        t.number
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if (worker := study_store.record(t).worker) is not None and not owner_is_dead(worker)
    ]
    if live and not force:
        shown = ", ".join(map(str, live))
        raise UserError(
            f"study {name!r} has a live search (trial {shown} RUNNING in a live process); "
            "stop it first, or pass --force"
        )


def _check_new(target: Target, new: str) -> None:
    check_name(new, "NEW")
    if new in target.names:
        raise UserError(
            f"a study named {new!r} already exists in {redact(target.storage.url)}; pick another name"
        )


# --- the commands -----------------------------------------------------------------------------


def remove(
    name: str, storage: str | None, tracking_uri: str | None, force: bool, warn: Callable[[str], None]
) -> int:
    """Delete the study, its MLflow runs (parent, trials, anything nested, reproductions) and its
    journal folder; how many runs. Runs first, the Optuna study last: a kill leaves the study to
    find the rest by. The journal goes too: its records would otherwise be written by `exp sync`
    (or `exp trials`) into a later study of the same name, as runs of trials it never ran."""
    with opened(name, storage, tracking_uri, warn, force) as target:
        deleted = 0
        if target.tracker is not None:
            found = study_runs.find(target.tracker, name, target.uid, target.run_ids())
            deleted = study_runs.delete(target.tracker, found.all(), target.wrote)
        shutil.rmtree(journal.folder_for(target.storage.url, name), ignore_errors=True)
        optuna.delete_study(study_name=name, storage=target.storage)
        target.wrote()
        return deleted


def rename(
    name: str,
    new: str,
    storage: str | None,
    tracking_uri: str | None,
    force: bool,
    warn: Callable[[str], None],
) -> None:
    """Rename the Optuna study and its MLflow experiment and tags; MLflow first (a rerun finds
    the experiment by the study's uid under either name), Optuna's name last, in one transaction."""
    with opened(name, storage, tracking_uri, warn, force) as target:
        _check_new(target, new)
        if target.tracker is not None:
            study_runs.rename(target.tracker, name, new, target.uid, target.wrote)
        optuna_private.rename_study(target.storage, name, new)
        target.wrote()


def copy_study(
    name: str,
    new: str,
    where: str | None,
    storage: str | None,
    tracking_uri: str | None,
    warn: Callable[[str], None],
) -> int:
    """Copy the study's finished trials not dropped (those `where` selects) to `new`, with copies of their
    runs under a new parent run; how many trials. The copy is built as `NEW/copy-in-progress` and
    renamed into place last, so NEW exists whole or not at all; a rerun redoes what is missing."""
    test = where_filter.parse(where) if where else None
    # copying only reads the source: a live search may go on (--force on the live check)
    with opened(name, storage, tracking_uri, warn, force=True) as target:
        _check_new(target, new)
        chosen = [
            t
            for t in study_store.kept(target.study.get_trials(deepcopy=False, states=FINISHED))
            if test is None or test(t)
        ]
        # the copy's own uid, the same on a rerun: its MLflow runs are found again by it
        uid = uuid.uuid5(uuid.NAMESPACE_URL, f"exptrack:{target.uid or name}/{new}").hex
        parent, runs = _copy_runs(target, new, uid, chosen) if target.tracker is not None else (None, {})
        _copy_optuna(target, new, uid, chosen, runs)
        if target.tracker is not None and parent is not None:  # its own figures, not its source's
            copied = optuna.load_study(study_name=new, storage=target.storage)
            figures = study_store.study_figures(copied, study_store.stored_objectives(copied))
            target.tracker.log(parent, metrics=figures)
            target.wrote()
        return len(chosen)


def _copy_runs(
    target: Target, new: str, uid: str, chosen: list[FrozenTrial]
) -> tuple[str | None, dict[int, str]]:
    """The copy's parent run id and new trial number -> its copied run id; (None, {}) when MLflow
    has no record of the study."""
    assert target.tracker is not None
    study_runs.check_free(target.tracker, new, uid)
    found = study_runs.find(target.tracker, target.name, target.uid, target.run_ids(chosen))
    if not found.parents:
        return None, {}
    by_id = {r.info.run_id: r for r in found.trials}
    sources = {
        number: by_id[run_id]
        for number, t in enumerate(chosen)
        if (run_id := study_store.record(t).run_id) in by_id
    }
    experiment, parent = study_runs.copy_parent(target.tracker, found.parents[0], new, uid, target.wrote)
    return parent, study_runs.copy_trial_runs(target.tracker, experiment, parent, new, sources, target.wrote)


def _copy_optuna(target: Target, new: str, uid: str, chosen: list[FrozenTrial], runs: dict[int, str]) -> None:
    """Optuna's `copy_study`, with a selection of trials and their new run ids, built under a
    name no user can give and renamed to `new` in one transaction."""
    temp = new + COPYING
    if temp in target.names:  # a copy killed before its rename: started again from nothing
        optuna.delete_study(study_name=temp, storage=target.storage)
        target.wrote()
    source, store = target.study, target.storage
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # its INFO line would name the temporary study
    made_id = store.create_new_study(list(source.directions), temp)
    for key, value in store.get_study_system_attrs(optuna_private.study_id(source)).items():
        store.set_study_system_attr(made_id, key, value)
    attrs = {**source.user_attrs, records.STUDY_UID_ATTR: uid, records.COPIED_FROM_ATTR: target.name}
    # `exp confirm`'s figures are keyed by trial number, and the copy numbers its trials again
    renumbered = {str(t.number): str(new_number) for new_number, t in enumerate(chosen)}
    if records.CONFIRMED_ATTR in attrs:
        attrs[records.CONFIRMED_ATTR] = _confirmed(source, renumbered)
    for key, value in attrs.items():
        store.set_study_user_attr(made_id, key, value)
    target.wrote()
    for number, trial in enumerate(chosen):
        store.create_new_trial(made_id, template_trial=_relinked(trial, runs.get(number)))
        target.wrote()
    optuna_private.rename_study(store, temp, new)
    target.wrote()


def _relinked(trial: FrozenTrial, run_id: str | None) -> FrozenTrial:
    """A copy of `trial` naming its own run (or none); the original's run page link is dropped."""
    twin = copy.deepcopy(trial)
    attrs = {
        k: v for k, v in trial.user_attrs.items() if k not in (records.RUN_ID_ATTR, records.RUN_URL_ATTR)
    }
    if run_id is not None:
        attrs[records.RUN_ID_ATTR] = run_id
    twin.user_attrs = attrs
    return twin


def drop(
    name: str,
    numbers: list[int],
    where: str | None,
    storage: str | None,
    tracking_uri: str | None,
    force: bool,
    warn: Callable[[str], None],
) -> list[int]:
    """Retire trials (FAIL, marked `dropped`: Optuna has no trial delete, see docs/results.md)
    and delete their runs; the numbers dropped. Runs first, the Optuna change last."""
    test = where_filter.parse(where) if where else None
    with opened(name, storage, tracking_uri, warn, force) as target:
        trials = target.study.get_trials(deepcopy=False)
        missing = sorted(set(numbers) - {t.number for t in trials})
        if missing:
            raise UserError(
                f"study {name!r} has no trial {', '.join(map(str, missing))}; see exp trials {name}"
            )
        chosen = [t for t in trials if t.number in numbers or (test is not None and test(t))]
        if target.tracker is not None and chosen:
            found = study_runs.find(target.tracker, name, target.uid, target.run_ids(chosen))
            ids = {str(study_store.record(t).run_id) for t in chosen}
            runs = study_runs.of_trials(found, {t.number for t in chosen}, ids)
            study_runs.delete(target.tracker, runs, target.wrote)
        dropped = {t.number for t in chosen}
        kept = {str(t.number): str(t.number) for t in trials if t.number not in dropped}
        if records.CONFIRMED_ATTR in target.study.user_attrs:  # a dropped trial's figures go too
            target.storage.set_study_user_attr(
                optuna_private.study_id(target.study), records.CONFIRMED_ATTR, _confirmed(target.study, kept)
            )
            target.wrote()
        note = json.dumps({"at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")})
        optuna_private.retire_trials(
            target.storage, [optuna_private.trial_id(t) for t in chosen], records.DROPPED_ATTR, note
        )
        target.wrote()
        return [t.number for t in chosen]


def _confirmed(study: optuna.Study, renumbered: dict[str, str]) -> dict[str, Any]:
    """`exp confirm`'s figures of the trials in `renumbered` (old number -> new), under the new."""
    confirmed = study.user_attrs.get(records.CONFIRMED_ATTR) or {}
    return {renumbered[k]: v for k, v in confirmed.items() if k in renumbered}
