"""Best and top-k trials of a study to runnable `TrialConfig` YAML files, with provenance.

A trial's full config (fixed part and sampled part merged, inactive conditional parameters
absent) is the `config` user attr the search stored on it; export only reads it back.
"""

from __future__ import annotations

import dataclasses
import math
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from exptrack import config as cfg
from exptrack import stores
from exptrack.dashboards import PROFILE_ATTR
from exptrack.errors import UserError

PACKAGES = ("exptrack", "torch", "torchvision", "optuna", "mlflow")


@dataclasses.dataclass(frozen=True)
class Exported:
    trial: FrozenTrial
    config: cfg.TrialConfig
    provenance: dict[str, Any]

    @property
    def filename(self) -> str:
        return f"trial-{self.trial.number:03d}.yaml"

    def yaml(self) -> str:
        return cfg.dump_yaml(self.config, self.provenance)


def best_trials(study: optuna.Study, top: int | None) -> list[FrozenTrial]:
    """The `top` best complete trials (default 1); a multi-objective study's Pareto set."""
    if top is not None and top < 1:
        raise UserError(f"--top must be at least 1, got {top}")
    if len(study.directions) > 1:
        pareto = sorted(study.best_trials, key=lambda t: t.number)
        chosen = pareto if top is None else pareto[:top]
    else:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        sign = 1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
        ranked = sorted(complete, key=lambda t: sign * float(t.value or 0.0), reverse=True)
        chosen = ranked[: top or 1]
    if not chosen:
        raise UserError(
            f"study {study.study_name!r} has no complete trial to export; "
            "run more trials with exp search (see exp trials for their states)"
        )
    return chosen


def export_trial(study: optuna.Study, trial: FrozenTrial) -> Exported:
    stored = trial.user_attrs.get(stores.CONFIG_ATTR)
    if not isinstance(stored, dict):
        raise UserError(
            f"trial {trial.number} of {study.study_name!r} has no stored config "
            "(it predates exptrack's records); re-run the study with exp search"
        )
    config = cfg.from_dict(stored, source=f"trial {trial.number}")
    return Exported(trial, config, provenance(study, trial, config))


def provenance(study: optuna.Study, trial: FrozenTrial, config: cfg.TrialConfig) -> dict[str, Any]:
    """Where a config came from: enough to find the trial and its run, and to rebuild the setup."""
    values = [float(v) for v in trial.values or []]
    facts: dict[str, Any] = {"study": study.study_name, "trial": trial.number}
    facts["value"] = values[0] if len(values) == 1 else values
    metric = study.user_attrs.get("metric")
    if metric:
        facts["metric"] = metric
    facts["mlflow_run_id"] = trial.user_attrs.get(stores.RUN_ID_ATTR)
    facts["seed"] = config.seed
    threads = trial.user_attrs.get(PROFILE_ATTR, {}).get("torch_threads")
    if threads and math.isfinite(threads):
        facts["torch_threads"] = int(threads)  # `exp train` applies it: CPU sums depend on it
    facts["versions"] = versions()
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


def export(study: optuna.Study, top: int | None) -> list[Exported]:
    return [export_trial(study, t) for t in best_trials(study, top)]


def write(exported: list[Exported], out: Path) -> list[Path]:
    """Write each config as `OUT/trial-NNN.yaml`; returns the paths written."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a directory, or - for stdout")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for item in exported:
        path = out / item.filename
        path.write_text(item.yaml())
        paths.append(path)
    return paths
