"""`exp train`: one config file through the same training function as a search trial (the
built-in fine-tuning, or the study file's own `objective=`), as a standalone MLflow run with the
trained model logged (and optionally registered in the model registry).

Exactness on CPU: the same config and seed give bit-identical metrics only at the same torch
intra-op thread count (reduction order changes with it), so the trial's count is reapplied.
"""

from __future__ import annotations

import dataclasses
import math
import platform
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from exptrack import config as cfg
from exptrack import records
from exptrack.config_values import MAX_INT, check_text, is_number
from exptrack.errors import UserError, failure_reason
from exptrack.stores import backends
from exptrack.stores.url import resolve_tracking
from exptrack.study import Study, check_name, load_study_file
from exptrack.tracking import logged_models, runs, ui_links
from exptrack.tracking.tracker import Tracker
from exptrack.training import devices, fit, profiling, weights
from exptrack.training import objective as objectives

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
    """A training function's reporter for a standalone run (`objective.Reporter`): setup facts as
    tags, epoch metrics with step=epoch, figures and the model kept for the run's end."""

    score_test = True  # a standalone run is where the held-out test split is scored

    def __init__(self, tracker: Tracker, run_id: str, warn: Callable[[str], None]) -> None:
        self.tracker, self.run_id, self.warn = tracker, run_id, warn
        self.trace_dir: Path | None = None
        self.epochs = 0  # reports so far: the test figures are logged at the last one's step
        self.test: dict[str, float] = {}
        self.test_samples = 0
        self.figures: dict[str, float | str] = {}
        self.last_report: dict[str, float] = {}
        self.model: Any = None
        self.example: Any = None

    def log_setup(self, facts: Mapping[str, Any]) -> None:
        self.tracker.log_setup(self.run_id, facts)

    def report(self, epoch: int, metrics: Mapping[str, float]) -> None:
        self.last_report = {str(k): float(v) for k, v in metrics.items()}
        self.epochs = epoch
        self.tracker.log_epoch(self.run_id, epoch, self.last_report)

    def should_prune(self) -> bool:
        return False  # nothing prunes a standalone run

    def log_figure(self, name: str, value: float | str) -> None:
        self.figures[str(name)] = value if isinstance(value, str) else float(value)

    def log_model(self, model: Any, example: Any = None) -> None:
        self.model, self.example = model, example

    def log_test(self, metrics: Mapping[str, float], samples: int) -> None:
        self.test, self.test_samples = {str(k): float(v) for k, v in metrics.items()}, samples


def load_config(
    path: Path, overrides: list[str], warn: Callable[[str], None] = print
) -> tuple[cfg.TrialConfig, dict[str, Any]]:
    """The config file with `--set` overrides applied, and its provenance; the study file it was
    searched with is loaded first, for what it registers."""
    config, provenance, _ = _load(path, overrides, warn)
    return config, provenance


def _load(
    path: Path, overrides: list[str], warn: Callable[[str], None]
) -> tuple[cfg.TrialConfig, dict[str, Any], Study | None]:
    """`load_config`, and the study file it was searched with (None: none, or unreadable)."""
    config, provenance = cfg.read_yaml(path)
    check_provenance(provenance, f"{path}: {records.PROVENANCE_BLOCK}")
    study = load_registrations(provenance, warn)
    changes = cfg.parse_overrides(overrides)
    if changes:
        config = cfg.from_dict(cfg.apply_overrides(config.to_dict(), changes), source="--set")
    return config, provenance, study


def load_registrations(provenance: Mapping[str, Any], warn: Callable[[str], None]) -> Study | None:
    """Import the study file the config was searched with, as the search did: a loss, backbone or
    dataset it registers (`@register_loss("poly1")`) and its own training function are known to
    this run too. A study file that is gone or fails is one warning; the config then runs if it
    needs nothing from it."""
    recorded = provenance.get(records.PROVENANCE_STUDY_FILE)
    if not isinstance(recorded, str):
        return None
    path = Path(recorded)
    if not path.is_file():
        warn(f"study file {path} (provenance) is not there: what it registers is unknown to this run")
        return None
    try:
        return load_study_file(path)
    except UserError as exc:
        warn(f"{exc} (loaded for what it registers)")
        return None


def training_function(study: Study | None, config: cfg.TrialConfig, path: Path) -> objectives.Objective:
    """The function that trained the config: its study file's own, else the built-in. A config
    with its own parameters needs its study file's function: fine-tuning it instead is refused."""
    own = study.objective_function() if study is not None else None
    if own is None and config.params:
        raise UserError(
            f"{path}: params {', '.join(config.params)} belong to a study's own training function, and its "
            f"study file ({records.PROVENANCE_STUDY_FILE} in {records.PROVENANCE_BLOCK}) cannot be loaded; restore it"
        )
    return own or objectives.finetune


# More threads than any CPU has (1,024): torch.set_num_threads(10**9) would try to start them.
MAX_THREADS = 1024


def check_provenance(provenance: Mapping[str, Any], where: str) -> None:
    """The provenance keys exp train acts on, as exp export writes them: the study names the
    run's experiment, the trial its tag, torch_threads the thread count; an edited block with a
    10,000-character study or `torch_threads: many` is one line before MLflow is touched."""
    study = provenance.get(records.PROVENANCE_STUDY)
    if study is not None:
        check_name(study, f"{where} {records.PROVENANCE_STUDY}")
    for key, high in ((records.PROVENANCE_TRIAL, MAX_INT), (records.TORCH_THREADS, MAX_THREADS)):
        value = provenance.get(key)
        low = 0 if key == records.PROVENANCE_TRIAL else 1
        if value is not None and (type(value) is not int or not low <= value <= high):
            raise UserError(
                f"{where} {key} must be a whole number from {low} to {high}, got {cfg.shown(value)}"
            )
    run_id = provenance.get(records.PROVENANCE_RUN_ID)
    if run_id is not None:
        check_text(str(run_id), f"{where} {records.PROVENANCE_RUN_ID}")
    value = provenance.get(records.PROVENANCE_VALUE)
    values = value if isinstance(value, list) else [value]
    if value is not None and not all(is_number(v) for v in values):
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
    config, provenance, study = _load(path, overrides, warn)
    objective = training_function(study, config, path)
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
    asked = config.weights
    if study is None or not study.custom_objective:  # weights are the built-in's
        config = fit.with_available_weights(config, warn)
    note = {records.WEIGHTS_REQUESTED: asked} if asked != config.weights else {}
    provenance = {**provenance, **note}
    experiment = str(provenance.get(records.PROVENANCE_STUDY) or DEFAULT_EXPERIMENT)
    opened = runs.open_train_run(tracker, experiment, path, provenance, {**config.flat_params(), **note})
    experiment_id, run_id = opened.experiment_id, opened.run_id
    tracker.artifacts.text(run_id, cfg.dump_yaml(config, provenance), records.CONFIG_ARTIFACT)
    tracker.watch_system(run_id, records.system_node(platform.node(), profiling.physical_gpu(config.device)))
    reporter = RunReporter(tracker, run_id, warn)
    metric = study.metric if study is not None else "value"
    try:
        final = objectives.final_values(
            _call(objective, config, reporter, profile), reporter.last_report, metric
        )
        model_uri, registered = _log_model(tracker, experiment_id, run_id, reporter, register)
    except BaseException as exc:  # never leave the run RUNNING (a second signal exits at once: see OWNER_TAG)
        runs.fail_run(tracker, run_id, failure_reason(exc))
        raise
    # metrics at the last epoch's step, beside the final val figures: a runs-table column to sort by
    tracker.log_epoch(run_id, reporter.epochs, reporter.test)
    runs.finish_run(tracker, run_id, "COMPLETE", {}, reporter.figures)  # `final`: the curves' last points
    if tracker.failures:
        raise UserError(f"MLflow did not record this run completely: {tracker.failures[0]}")
    base = ui_links.server_base(tracker.uri)
    link = ui_links.run_url(base, experiment_id, run_id) if base else None
    return TrainOutcome(
        run_id,
        experiment,
        experiment_id,
        config,
        final,
        model_uri,
        registered,
        used_threads,
        provenance,
        link,
        reporter.test,
        reporter.test_samples,
    )


def _call(
    objective: objectives.Objective, config: cfg.TrialConfig, reporter: RunReporter, profile: bool
) -> Any:
    """The training function, given a trace folder (logged under `profile/`) with `profile`. A
    standalone run is where the held-out test figures are read (`reporter.score_test`)."""
    if not profile:
        return objective(config, reporter)
    return objectives.call_traced(
        objective,
        config,
        reporter,
        lambda folder: reporter.tracker.artifacts.folder(reporter.run_id, folder, records.PROFILE_DIR),
    )


def _log_model(
    tracker: Tracker, experiment_id: str, run_id: str, reporter: RunReporter, register: str | None
) -> tuple[str | None, str | None]:
    """Log (and register) the model the training function handed over; none handed, none logged."""
    if reporter.model is None:
        if register:
            raise UserError(
                f"--register {register}: the training function logged no model; call reporter.log_model(model)"
            )
        return None, None
    example = None if reporter.example is None else devices.example_arrays(reporter.model, reporter.example)
    return logged_models.log_model(tracker, experiment_id, run_id, reporter.model, register, example)


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
