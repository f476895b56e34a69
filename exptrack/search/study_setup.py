"""Creating a study (or joining it): under the store lock, refuse a changed study
(`changed_study`), create or load it, write its declaration and identity once, queue the warm
starts once, and count this process in so a seeded worker samples from its own stream."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from exptrack import records
from exptrack.search import changed_study, preflight, warmstart
from exptrack.search.options import SearchOptions
from exptrack.stores import optuna_private
from exptrack.stores.locks import StoreLock
from exptrack.stores.optuna_storage import open_storage
from exptrack.study import Study


@dataclasses.dataclass(frozen=True)
class StoredStudy:
    """The Optuna study a search runs, as this process joined it."""

    study: optuna.Study
    name: str  # --new-study may have changed it to NAME-2
    uid: str  # the study's identity (records.STUDY_UID_ATTR): its MLflow parent run is tagged with it
    adopt_untagged: bool  # a study from before the identity: its untagged parent run is its own


def create_study(
    spec: Study,
    options: SearchOptions,
    prepared: preflight.Prepared,
    storage_url: str,
    lock: StoreLock,
    warn: Callable[[str], None],
    dashboard: bool = False,  # record the dashboard file, so `exp report` draws what the search drew
    starts: Sequence[warmstart.Start] = (),  # queued by the coordinator, once
) -> StoredStudy:
    """Create or load the study under the store lock (workers on any machine may start at once)."""
    storage = open_storage(storage_url, options.grace_period)
    with lock:
        declared = changed_study.declaration(spec, prepared.space.describe())
        name = _checked_name(storage, options.study_name or spec.name, declared, options.new_study, warn)
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=prepared.sampler,
            pruner=prepared.pruner,
            directions=list(spec.directions),  # type: ignore[arg-type]  # Study checks them
            load_if_exists=True,
        )
        uid, adopt_untagged = _write_attributes(study, spec, prepared, declared, dashboard)
        if not options.worker:  # the coordinator queues them, once
            warmstart.enqueue(study, starts, warn)
        _join(study, prepared, options.seed)
    return StoredStudy(study, name, uid, adopt_untagged)


def _checked_name(
    storage: optuna.storages.BaseStorage,
    name: str,
    declared: changed_study.Declaration,
    new_study: bool,
    warn: Callable[[str], None],
) -> str:
    """`name`, or with --new-study the `NAME-N` a changed study runs as (said once)."""
    checked = changed_study.check(storage, name, declared, new_study)
    if checked != name:
        verb = "continues" if changed_study.stored_declaration(storage, checked) else "starts"
        warn(f"--new-study: study {name!r} differs from the study file; this search {verb} study {checked!r}")
    return checked


def _write_attributes(
    study: optuna.Study,
    spec: Study,
    prepared: preflight.Prepared,
    declared: changed_study.Declaration,
    dashboard: bool,
) -> tuple[str, bool]:
    """The study's declaration, written once (the first process to create it); (its identity,
    whether it adopts an untagged parent run)."""
    attrs: dict[str, Any] = {
        records.STUDY_METRIC_ATTR: spec.metric,
        records.STUDY_OBJECTIVES_ATTR: list(spec.objectives),
        records.STUDY_CONSTRAINTS_ATTR: [str(c) for c in prepared.constraints],
        records.STUDY_SPACE_ATTR: declared.search_space,
        records.STUDY_FIXED_ATTR: dict(declared.fixed or {}),  # with its test share
        records.STUDY_TRAINING_ATTR: spec.objective_name,
    }
    stored = study.user_attrs  # one read: each access is a storage query and a deep copy
    adopt_untagged = False
    if records.STUDY_UID_ATTR not in stored:
        # created by an exptrack without study identities; one with no trial yet has no parent
        # run to keep
        adopt_untagged = bool(study.get_trials(deepcopy=False))
        attrs[records.STUDY_UID_ATTR] = uuid.uuid4().hex
    for key, value in attrs.items():
        if key not in stored:
            study.set_user_attr(key, value)
    if spec.source_path is not None:  # the latest file wins: a moved study file is found again
        study.set_user_attr(records.STUDY_FILE_ATTR, str(spec.source_path))
    path = spec.dashboard_path() if dashboard else None
    if path:  # `exp report` draws what the search drew, from any directory and any host
        study.set_user_attr(records.STUDY_DASHBOARD_ATTR, dashboard_record(spec.dashboard or path.name, path))
    if study.metric_names is None:  # optuna-dashboard and the plots name the objectives
        study.set_metric_names(list(spec.objectives))
    return str(stored.get(records.STUDY_UID_ATTR, attrs.get(records.STUDY_UID_ATTR))), adopt_untagged


def dashboard_record(named: str, path: Path) -> dict[str, str]:
    """What rebuilds the dashboard anywhere: its text, and its name as the study file gives it
    (`dashboards/study.yaml`; an absolute one by its file name alone). Never this host's absolute
    path, which means nothing on another host and shows this one's layout."""
    name = named if not Path(named).is_absolute() else path.name
    return {"name": name, "text": path.read_text()}


def _join(study: optuna.Study, prepared: preflight.Prepared, seed: int | None) -> None:
    """Count this process in (hold the lock). With --seed, the k-th process to join samples
    from its own stream derived from the study seed: k = 0 keeps the seed itself, so a seeded
    study stays repeatable, and workers (or a resumed search) never replay each other's points."""
    storage, study_id = optuna_private.storage_of(study), optuna_private.study_id(study)
    joined = int(storage.get_study_system_attrs(study_id).get(records.STUDY_JOINS_ATTR, 0))
    storage.set_study_system_attr(study_id, records.STUDY_JOINS_ATTR, joined + 1)
    if seed is not None and joined:
        study.sampler = prepared.sampler_seeded(worker_seed(seed, joined))


def worker_seed(seed: int, index: int) -> int:
    """Worker `index`'s sampler seed: independent streams from one study seed (numpy's SeedSequence)."""
    if index == 0:
        return seed
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
