"""`exp train`: one config file through the same `train.fit` as a search trial, as a standalone
MLflow run with the trained model logged (and optionally registered in the model registry).

Exactness on CPU: the same config and seed give bit-identical metrics only at the same torch
intra-op thread count (reduction order changes with it), so the trial's count is reapplied.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import platform
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from exptrack import config as cfg
from exptrack import train
from exptrack.errors import UserError
from exptrack.tracking import ROLE_TAG, STUDY_TAG, Tracker

DEFAULT_EXPERIMENT = "exptrack-train"
REPRODUCES_TAG, SOURCE_RUN_TAG = "exptrack.reproduces", "exptrack.source_run_id"
MODEL_NAME = "model"  # the model lands at runs:/<run id>/model


@dataclasses.dataclass
class TrainOutcome:
    run_id: str
    experiment: str
    experiment_id: str
    config: cfg.TrialConfig
    final: dict[str, float]
    model_uri: str | None
    registered: str | None  # "NAME version N"
    threads: int
    provenance: dict[str, Any]


class RunReporter:
    """train.fit's reporter for a standalone run: setup facts as tags, epoch metrics with step=epoch."""

    def __init__(self, tracker: Tracker, run_id: str) -> None:
        self.tracker, self.run_id = tracker, run_id

    def on_setup(self, facts: Mapping[str, Any]) -> None:
        self.tracker.log(self.run_id, tags={f"exptrack.{k}": str(v) for k, v in facts.items()})

    def on_epoch(self, epoch: int, metrics: Mapping[str, float]) -> bool:
        self.tracker.log_epoch(self.run_id, epoch, metrics)
        return False  # nothing prunes a standalone run


def load_config(path: Path, overrides: list[str]) -> tuple[cfg.TrialConfig, dict[str, Any]]:
    """The config file with `--set` overrides applied, and its provenance."""
    config, provenance = cfg.read_yaml(path)
    changes = cfg.parse_overrides(overrides)
    if changes:
        config = cfg.from_dict(cfg.apply_overrides(config.to_dict(), changes), source="--set")
    return config, provenance


def apply_threads(provenance: Mapping[str, Any], threads: int | None) -> int:
    """Use the thread count given, else the one the trial ran with, else torch's default."""
    wanted = threads or provenance.get("torch_threads")
    if wanted is not None:
        if int(wanted) < 1:
            raise UserError(f"--threads must be at least 1, got {wanted}")
        torch.set_num_threads(int(wanted))
    return torch.get_num_threads()


def run_tags(path: Path, provenance: Mapping[str, Any]) -> dict[str, str]:
    tags = {ROLE_TAG: "train", "exptrack.config_file": str(path), "host": platform.node()}
    if "study" in provenance and "trial" in provenance:
        tags[STUDY_TAG] = str(provenance["study"])
        tags[REPRODUCES_TAG] = f"{provenance['study']}/trial-{int(provenance['trial']):03d}"
    if provenance.get("mlflow_run_id"):
        tags[SOURCE_RUN_TAG] = str(provenance["mlflow_run_id"])
    return tags


def reproduce(
    path: Path,
    overrides: list[str],
    tracking_uri: str | None,
    register: str | None = None,
    threads: int | None = None,
    warn: Callable[[str], None] = print,
) -> TrainOutcome:
    """Train the config at `path` as one MLflow run; log (and register) the trained model."""
    config, provenance = load_config(path, overrides)
    used_threads = apply_threads(provenance, threads)
    tracker = Tracker(tracking_uri, warn=warn)
    tracker.check()
    experiment = str(provenance.get("study") or DEFAULT_EXPERIMENT)
    experiment_id = tracker.experiment_id(experiment)
    name = f"train-{path.stem}"
    run_id = tracker.client.create_run(
        experiment_id, run_name=name, tags=run_tags(path, provenance)
    ).info.run_id
    tracker.log(run_id, params=config.flat_params())
    tracker.log_text(run_id, cfg.dump_yaml(config, provenance), "config.yaml")
    try:
        result = train.fit(config, RunReporter(tracker, run_id), warn)
        model_uri, registered = _log_model(tracker, experiment_id, run_id, result.model, register)
    except BaseException as exc:  # never leave the run RUNNING
        tracker.log(run_id, tags={"exptrack.fail_reason": f"{type(exc).__name__}: {exc}"[:1000]})
        tracker.finish_trial(run_id, "FAIL", {})
        raise
    final = {k: v for k, v in result.final.items() if k != "epoch"}
    figures = {**result.profile, **{f"final_{k}": v for k, v in final.items()}}
    tracker.finish_trial(run_id, "COMPLETE", figures)
    if tracker.failures:
        raise UserError(f"MLflow did not record this run completely: {tracker.failures[0]}")
    return TrainOutcome(
        run_id, experiment, experiment_id, config, final, model_uri, registered, used_threads, provenance
    )


def _log_model(
    tracker: Tracker, experiment_id: str, run_id: str, model: torch.nn.Module, register: str | None
) -> tuple[str | None, str | None]:
    """Log the model under the run (`runs:/<id>/model`); register a version when asked."""
    import mlflow
    import torchvision

    # One process, one run: the fluent API is safe here, and log_model resolves its client from it.
    mlflow.set_tracking_uri(tracker.uri)
    # pickle is chosen on purpose (below) and `runs:/` resolves to the logged model: quiet both notes
    for logger in ("mlflow.pytorch", "mlflow.tracking._model_registry.fluent"):
        logging.getLogger(logger).setLevel(logging.ERROR)
    # log_model puts the model in the *current* experiment even with run_id given; registering
    # then looks for it in the run's experiment, so the two must agree.
    mlflow.set_experiment(experiment_id=experiment_id)
    # Pinned requirements skip MLflow's inference, which re-imports the model in a subprocess (~10 s).
    requirements = [
        f"torch=={torch.__version__.split('+')[0]}",
        f"torchvision=={torchvision.__version__.split('+')[0]}",
    ]
    # pickle, not MLflow 3's default pt2: no example input to trace, and `mlflow.pytorch.load_model`
    # gives back the same nn.Module, so its state_dict keys match the backbone's.
    info = mlflow.pytorch.log_model(
        model.cpu().eval(),
        name=MODEL_NAME,
        run_id=run_id,
        pip_requirements=requirements,
        serialization_format="pickle",
    )
    registered = None
    if register:
        version = mlflow.register_model(f"runs:/{run_id}/{MODEL_NAME}", register)
        registered = f"{version.name} version {version.version}"
    return info.model_uri, registered


def compare_line(outcome: TrainOutcome) -> str | None:
    """`val_accuracy: trial 0.8125, this run 0.8125 (identical)` when the file came from a trial."""
    metric, value = outcome.provenance.get("metric"), outcome.provenance.get("value")
    if not isinstance(metric, str) or not isinstance(value, int | float) or metric not in outcome.final:
        return None
    now = outcome.final[metric]
    diff = now - float(value)
    same = "identical" if diff == 0 else f"differs by {diff:+.3g}"
    if not math.isfinite(now):
        same = "not finite"
    return f"{metric}: trial {value:.6g}, this run {now:.6g} ({same})"
