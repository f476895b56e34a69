"""`exp train`: one config file through the same `fit` as a search trial, as a standalone
MLflow run with the trained model logged (and optionally registered in the model registry).

Exactness on CPU: the same config and seed give bit-identical metrics only at the same torch
intra-op thread count (reduction order changes with it), so the trial's count is reapplied.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from exptrack import config as cfg
from exptrack import records
from exptrack.errors import UserError, failure_reason
from exptrack.stores import backends
from exptrack.stores.url import resolve_tracking
from exptrack.study import check_name, load_study_file
from exptrack.tracking import logged_models, runs, ui_links
from exptrack.tracking.tracker import Tracker
from exptrack.training import devices, fit, profiling, weights

DEFAULT_EXPERIMENT = "exptrack-train"


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
    run_url: str | None = None  # the run's page when the tracking store is a server (else `exp ui`)
    # test_accuracy and test_loss on the held-out test split; empty with test_fraction 0
    test: dict[str, float] = dataclasses.field(default_factory=dict)
    test_samples: int = 0


class RunReporter:
    """fit's reporter for a standalone run: setup facts as tags, epoch metrics with step=epoch."""

    def __init__(self, tracker: Tracker, run_id: str) -> None:
        self.tracker, self.run_id = tracker, run_id

    def on_setup(self, facts: Mapping[str, Any]) -> None:
        self.tracker.log_setup(self.run_id, facts)

    def on_epoch(self, epoch: int, metrics: Mapping[str, float]) -> bool:
        self.tracker.log_epoch(self.run_id, epoch, metrics)
        return False  # nothing prunes a standalone run


def load_config(
    path: Path, overrides: list[str], warn: Callable[[str], None] = print
) -> tuple[cfg.TrialConfig, dict[str, Any]]:
    """The config file with `--set` overrides applied, and its provenance; the study file it was
    searched with is loaded first, for what it registers."""
    config, provenance = cfg.read_yaml(path)
    check_provenance(provenance, f"{path}: {records.PROVENANCE_BLOCK}")
    load_registrations(provenance, warn)
    changes = cfg.parse_overrides(overrides)
    if changes:
        config = cfg.from_dict(cfg.apply_overrides(config.to_dict(), changes), source="--set")
    return config, provenance


def load_registrations(provenance: Mapping[str, Any], warn: Callable[[str], None]) -> None:
    """Import the study file the config was searched with, as the search did: a loss, backbone or
    dataset it registers (`@register_loss("poly1")`) is known to this run too. A study file that
    is gone or fails is one warning; the config then runs if it needs nothing from it."""
    recorded = provenance.get(records.PROVENANCE_STUDY_FILE)
    if not isinstance(recorded, str):
        return
    path = Path(recorded)
    if not path.is_file():
        warn(f"study file {path} (provenance) is not there: what it registers is unknown to this run")
        return
    try:
        load_study_file(path)
    except UserError as exc:
        warn(f"{exc} (loaded for what it registers)")


# More threads than any CPU has (1,024): torch.set_num_threads(10**9) would try to start them.
MAX_THREADS = 1024


def check_provenance(provenance: Mapping[str, Any], where: str) -> None:
    """The provenance keys exp train acts on, as exp export writes them: the study names the
    run's experiment, the trial its tag, torch_threads the thread count; an edited block with a
    10,000-character study or `torch_threads: many` is one line before MLflow is touched."""
    study = provenance.get(records.PROVENANCE_STUDY)
    if study is not None:
        check_name(study, f"{where} {records.PROVENANCE_STUDY}")
    for key, high in ((records.PROVENANCE_TRIAL, cfg.MAX_INT), (records.TORCH_THREADS, MAX_THREADS)):
        value = provenance.get(key)
        low = 0 if key == records.PROVENANCE_TRIAL else 1
        if value is not None and (type(value) is not int or not low <= value <= high):
            raise UserError(
                f"{where} {key} must be a whole number from {low} to {high}, got {cfg.shown(value)}"
            )
    run_id = provenance.get(records.PROVENANCE_RUN_ID)
    if run_id is not None:
        cfg.check_text(str(run_id), f"{where} {records.PROVENANCE_RUN_ID}")
    value = provenance.get(records.PROVENANCE_VALUE)
    values = value if isinstance(value, list) else [value]
    finite = all(isinstance(v, int | float) and type(v) is not bool and math.isfinite(v) for v in values)
    if value is not None and not finite:
        raise UserError(f"{where} {records.PROVENANCE_VALUE} must be a finite number, got {cfg.shown(value)}")


def apply_threads(provenance: Mapping[str, Any], threads: int | None) -> int:
    """Use the thread count given, else the one the trial ran with, else torch's default."""
    wanted = threads or provenance.get(records.TORCH_THREADS)
    if wanted is not None and not 1 <= int(wanted) <= MAX_THREADS:
        raise UserError(f"--threads must be from 1 to {MAX_THREADS}, got {wanted}")
    return devices.use_threads(None if wanted is None else int(wanted))


def reproduce(
    path: Path,
    overrides: list[str],
    tracking_uri: str | None,
    register: str | None = None,
    threads: int | None = None,
    warn: Callable[[str], None] = print,
    profile: bool = False,
) -> TrainOutcome:
    """Train the config at `path` as one MLflow run; log (and register) the trained model. With
    `profile`, a few steady-state steps are traced onto the run under `profile/`."""
    config, provenance = load_config(path, overrides, warn)
    logged_models.check_model_name(register)
    used_threads = apply_threads(provenance, threads)
    uri = resolve_tracking(tracking_uri)
    backends.check_store(uri, "MLflow tracking store", "--tracking-uri")  # before MLflow creates it
    tracker = Tracker(uri, warn=warn)
    tracker.check()
    closed = runs.close_dead_train_runs(tracker)  # a killed `exp train` could not close its own
    if closed:
        warn(
            f"closed {len(closed)} exp train run(s) left RUNNING by a process that died: {', '.join(closed)}"
        )
    weights.use_resolvers(logged_models.weight_resolvers(tracker.uri))  # weights=runs:/... from here
    asked, config = config.weights, fit.with_available_weights(config, warn)
    note = {records.WEIGHTS_REQUESTED: asked} if asked != config.weights else {}
    provenance = {**provenance, **note}
    experiment = str(provenance.get(records.PROVENANCE_STUDY) or DEFAULT_EXPERIMENT)
    opened = runs.open_train_run(tracker, experiment, path, provenance, {**config.flat_params(), **note})
    experiment_id, run_id = opened.experiment_id, opened.run_id
    tracker.log_text(run_id, cfg.dump_yaml(config, provenance), records.CONFIG_ARTIFACT)
    tracker.watch_system(run_id, records.system_node(platform.node(), profiling.physical_gpu(config.device)))
    try:
        result = _fit(config, tracker, run_id, warn, profile)
        example = None if result.example is None else devices.example_arrays(result.model, result.example)
        model_uri, registered = logged_models.log_model(
            tracker, experiment_id, run_id, result.model, register, example
        )
    except BaseException as exc:  # never leave the run RUNNING (a second signal exits at once: see OWNER_TAG)
        runs.fail_run(tracker, run_id, failure_reason(exc))
        raise
    final = {k: v for k, v in result.final.items() if k != "epoch"}
    # metrics at the last epoch's step, beside the final val figures: a runs-table column to sort by
    tracker.log_epoch(run_id, len(result.history), result.test)
    runs.finish_run(tracker, run_id, "COMPLETE", {}, result.profile)  # `final`: the curves' last points
    if tracker.failures:
        raise UserError(f"MLflow did not record this run completely: {tracker.failures[0]}")
    base = ui_links.server_base(tracker.uri)
    link = ui_links.run_url(base, experiment_id, run_id) if base else None
    return TrainOutcome(
        run_id, experiment, experiment_id, config, final, model_uri, registered, used_threads, provenance, link,
        result.test, result.test_samples,
    )


def _fit(
    config: cfg.TrialConfig, tracker: Tracker, run_id: str, warn: Callable[[str], None], profile: bool
) -> fit.FitResult:
    """fit, scoring the test split at the end: a standalone run is where the held-out figure is
    read (a search's trial never computes it)."""
    if not profile:
        return fit.fit(config, RunReporter(tracker, run_id), warn, test=True)
    with tempfile.TemporaryDirectory(prefix="exptrack-trace-") as folder:
        try:
            return fit.fit(config, RunReporter(tracker, run_id), warn, Path(folder), test=True)
        finally:
            tracker.log_folder(run_id, Path(folder), records.PROFILE_DIR)


def compare_line(outcome: TrainOutcome) -> str | None:
    """`val_accuracy: trial 0.8125, this run 0.8125 (identical)` when the file came from a trial;
    one such part per objective that training reports per epoch, for several objectives."""
    metric = outcome.provenance.get(records.PROVENANCE_METRIC)
    value = outcome.provenance.get(records.PROVENANCE_VALUE)
    if isinstance(metric, list) and isinstance(value, list) and len(metric) == len(value):
        parts = [_compare(outcome, str(m), v) for m, v in zip(metric, value, strict=True)]
        return "; ".join(p for p in parts if p) or None
    return _compare(outcome, metric, value)


def _compare(outcome: TrainOutcome, metric: Any, value: Any) -> str | None:
    if not isinstance(metric, str) or not isinstance(value, int | float) or metric not in outcome.final:
        return None
    now = outcome.final[metric]
    diff = now - float(value)
    same = "identical" if diff == 0 else f"differs by {diff:+.3g}"
    if not math.isfinite(now):
        same = "not finite"
    return f"{metric}: trial {value:.6g}, this run {now:.6g} ({same})"
