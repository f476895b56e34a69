"""Best and top-k trials of a study to runnable `TrialConfig` YAML files, with provenance.

A trial's full config (fixed part and sampled part merged, inactive conditional parameters
absent) is the `config` user attr the search stored on it; export only reads it back.
"""

from __future__ import annotations

import dataclasses
import math
import platform
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from exptrack import config as cfg
from exptrack import records, study_store
from exptrack.errors import UserError
from exptrack.results import output
from exptrack.stores import optuna_storage
from exptrack.study_store import record
from exptrack.tracking.queries import by_trial_number, read_trial_runs

PACKAGES = ("exptrack", "torch", "torchvision", "optuna", "mlflow")


@dataclasses.dataclass(frozen=True)
class Exported:
    trial: FrozenTrial
    config: cfg.TrialConfig
    provenance: dict[str, Any]

    @property
    def filename(self) -> str:
        return f"{records.trial_run_name(self.trial.number)}.yaml"

    def yaml(self) -> str:
        return cfg.dump_yaml(self.config, self.provenance)


def best_trials(study: optuna.Study, top: int | None) -> list[FrozenTrial]:
    """The `top` best feasible complete trials (default 1); a multi-objective study's Pareto set."""
    if top is not None and top < 1:
        raise UserError(f"--top must be at least 1, got {top}")
    ranked = study_store.ranked(study)  # several objectives: the whole Pareto set by default
    chosen = ranked[: top or (len(ranked) if len(study.directions) > 1 else 1)]
    if not chosen:
        raise UserError(
            f"study {study.study_name!r} has no complete trial to export; "
            "run more trials with exp search (see exp trials for their states)"
        )
    return chosen


def export_trial(study: optuna.Study, trial: FrozenTrial, run_id: str | None = None) -> Exported:
    stored = record(trial)
    if not stored.has_config:
        raise UserError(
            f"trial {trial.number} of {study.study_name!r} has no stored config "
            "(it predates exptrack's records); re-run the study with exp search"
        )
    # a trial from before the test split trained with none: its file says test_fraction: 0
    config = cfg.from_dict(cfg.as_recorded(stored.config), source=f"trial {trial.number}")
    return Exported(trial, config, provenance(study, trial, config, run_id))


def provenance(
    study: optuna.Study, trial: FrozenTrial, config: cfg.TrialConfig, run_id: str | None = None
) -> dict[str, Any]:
    """Where a config came from: enough to find the trial and its run, and to rebuild the setup."""
    values = [float(v) for v in trial.values or []]
    facts: dict[str, Any] = {
        records.PROVENANCE_STUDY: study.study_name,
        records.PROVENANCE_TRIAL: trial.number,
    }
    facts[records.PROVENANCE_VALUE] = values[0] if len(values) == 1 else values
    metric = study.user_attrs.get(records.STUDY_METRIC_ATTR)
    if len(values) > 1:  # several objectives: their names, in the order of the values
        metric = study.user_attrs.get(records.STUDY_OBJECTIVES_ATTR)
    if metric:
        facts[records.PROVENANCE_METRIC] = metric
    stored = record(trial)
    facts[records.PROVENANCE_RUN_ID] = run_id or stored.run_id
    facts[records.PROVENANCE_SEED] = config.seed
    if stored.weights_requested is not None:  # e.g. imagenet, unavailable: the config says none
        facts[records.WEIGHTS_REQUESTED] = stored.weights_requested
    threads = stored.costs.get(records.TORCH_THREADS)
    if threads and math.isfinite(threads):
        facts[records.TORCH_THREADS] = int(threads)  # `exp train` applies it: CPU sums depend on it
    study_file = study.user_attrs.get(records.STUDY_FILE_ATTR)
    if isinstance(study_file, str):  # what registers the config's own loss, backbone or dataset
        facts[records.PROVENANCE_STUDY_FILE] = study_file
    confirmed = study_store.confirmed(study).get(str(trial.number))
    if confirmed:  # `exp confirm` repeated it: its mean, sd and interval on val and test
        facts[records.PROVENANCE_CONFIRMED] = confirmed
    facts[records.PROVENANCE_VERSIONS] = versions()
    return facts


def versions() -> dict[str, str]:
    """Package versions from their metadata (no torch import: export stays fast)."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def export_trials(
    study: optuna.Study, top: int | None, run_ids: Mapping[int, str] | None = None
) -> list[Exported]:
    """The `top` best trials of a study (its Pareto set when multi-objective) as configs."""
    return [export_trial(study, t, (run_ids or {}).get(t.number)) for t in best_trials(study, top)]


def export_study(
    study_name: str,
    top: int | None,
    storage: str | None,
    tracking_uri: str | None,
    warn: Callable[[str], None] = print,
) -> list[Exported]:
    """The best trials of a stored study as configs with provenance; their MLflow run ids come
    from the tracking store (one query) where it can be read, else from the trials' own links."""
    study = optuna_storage.load_existing_study(study_name, storage)
    best_trials(study, top)  # nothing to export is one line, before MLflow is asked
    runs = read_trial_runs(study_name, tracking_uri, warn, study.user_attrs.get(records.STUDY_UID_ATTR))
    return export_trials(study, top, {n: r.info.run_id for n, r in by_trial_number(runs).items()})


def write(exported: list[Exported], out: Path) -> list[Path]:
    """Write each config as `OUT/trial-NNN.yaml` (a temporary file renamed into place: a symlink
    of that name is replaced, never written through); returns the paths written."""
    output.check_directory(out, "--out")
    output.make_directory(out, "--out")
    paths = []
    for item in exported:
        path = out / item.filename
        output.write_file(path, item.yaml(), "--out")
        paths.append(path)
    return paths
