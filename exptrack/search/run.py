"""`run_search`: everything `exp search` does after parsing its flags, in the order that keeps a
bad input from writing anything: load the study file, check every input, then create the stores,
then search (in this process, or in `--workers` processes)."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from exptrack.errors import UserError
from exptrack.search import loop, preflight, signals, slots, verdict, warmstart, workers
from exptrack.search.loop import SearchSummary
from exptrack.search.options import MAX_CHECKPOINT_MB, Order, SearchOptions, factory_name, study_source
from exptrack.search.study_run import DashboardRenderer
from exptrack.search.trial import Progress
from exptrack.study import Study, check_name, load_study_file
from exptrack.tracking import logged_models
from exptrack.tracking.tracker import Tracker
from exptrack.training import weights

# Worker processes one command starts: each imports torch (~300 MB resident), so 256 of them
# take ~77 GB before a trial; --workers 100000 would fork until the machine ran out of processes.
MAX_WORKERS = 256
CREATING = (
    "stopping while the stores are created (each is created whole or not at all; re-run the same command)"
)
# The study -> its dashboard renderer (None: no dashboard), validated before any store is created.
DashboardFactory = Callable[[Study], DashboardRenderer | None]


def run_search(
    study: Study | Path,
    options: SearchOptions,
    overrides: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    warn: Callable[[str], None] = print,
    dashboard: DashboardFactory | None = None,
    own_signals: bool = True,
) -> SearchSummary:
    """Tune `study` (a `Study`, or the path of a study file) to `options.trials` finished trials;
    `overrides` are the `--set` values (and `--device`) applied to every trial. `own_signals`:
    SIGINT/SIGTERM stay handled for the rest of the process (the CLI's); False hands them back
    afterwards (the Python API's)."""
    check_options(options)
    options = options.resolved()  # the one place the stores are resolved, for workers too
    quiet_optuna()
    interrupts = signals.Interrupts(warn)  # this search's signals, handed to its loop and trials
    if options.worker:
        workers.follow_coordinator(interrupts)
        slots.apply_in_worker()  # its share of the cores (and of its GPU) before torch works
    planned = slots.plan(options.workers, options.gpus, options.per_gpu) if _spreads(options) else []
    spec = (study if isinstance(study, Study) else load_study_file(Path(study))).with_overrides(
        overrides or {}
    )
    storage_url, tracking_uri = str(options.storage), str(options.tracking_uri)
    # Everything checkable without a store, before either store is created.
    preflight.check_storage_url(storage_url)
    if options.tracking:
        preflight.check_tracking_uri(tracking_uri)
    # --set weights=runs:/... and models:/... load from this store (checked next, in preflight)
    weights.use_resolvers(logged_models.weight_resolvers(tracking_uri))
    prepared = preflight.prepare(spec, options.sampler, options.pruner, options.seed, overrides)
    if prepared.space.pins and not options.worker:  # workers repeat the command: said once
        pinned = ", ".join(f"{name}={value}" for name, value in prepared.space.pins.items())
        where = Path(prepared.space.source).name
        warn(f"--set {pinned}: pinned for this study (taken out of the search space {where})")
    # the coordinator checks and queues the warm starts once; its workers find them queued
    starts = (
        []
        if options.worker
        else warmstart.collect(
            spec,
            prepared.space,
            options.enqueue,
            options.from_study,
            options.from_top,
            storage_url,
            options.study_name,
            warn,
        )
    )
    render = dashboard(spec) if dashboard else None
    if not options.worker:  # the coordinator said it already
        for note in prepared.notes:
            warn(note)
    # From here on stores are written: a signal is reported, and ends the search cleanly.
    tracker = None
    try:
        with _signals_handled(own_signals, interrupts):
            with interrupts.interruptible(CREATING):  # each store is created whole or not at all
                if options.tracking:
                    tracker = Tracker(tracking_uri, warn=warn)
                    tracker.check()
                search = loop.open_search(
                    spec, options, tracker, progress, warn, prepared, render, starts, interrupts
                )
            if planned:
                order = Order(study_source(study), dict(overrides or {}), options, factory_name(dashboard))
                summary = workers.run_workers(search, planned, order)
            else:
                summary = loop.run(search)
        if not options.worker:  # the coordinator tells what the whole study shows, once
            verdict.report(search.study, spec.metric, tracker, summary.parent_run_id, warn)
    finally:
        if tracker is not None:  # its writer thread ends with the search (a notebook calls many)
            tracker.close()
    return summary


def quiet_optuna() -> None:
    """Optuna's per-trial INFO lines and the warnings our use of it triggers on purpose stay off the
    terminal (set when a search starts, not when a module is imported)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # ask/tell with Optuna's heartbeat is what we mean: our loop records it (search.ownership)
    warnings.filterwarnings(
        "ignore", message="Heartbeat of storage is supposed to be used with Study.optimize"
    )


def _signals_handled(
    own_signals: bool, interrupts: signals.Interrupts
) -> contextlib.AbstractContextManager[None]:
    """The CLI keeps our SIGINT/SIGTERM handlers for the rest of the process; a call from Python
    gets its own handlers back afterwards."""
    if own_signals:
        interrupts.install()
        return contextlib.nullcontext()
    return interrupts.for_the_call()


def _spreads(options: SearchOptions) -> bool:
    """Several worker processes on this machine (`--workers K`, `--gpus`)?"""
    return options.workers > 1 or options.gpus is not None or options.per_gpu != 1


def check_options(options: SearchOptions) -> None:
    """Counts and times a user typed, before anything is loaded."""
    counts = (
        ("--trials", options.trials),
        ("--max-failures", options.max_failures),
        ("--workers", options.workers),
        ("--grace-period", options.grace_period),
        ("--per-gpu", options.per_gpu),
    )
    for flag, value in counts:
        if value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    for flag, value in (("--workers", options.workers), ("--per-gpu", options.per_gpu)):
        if value > MAX_WORKERS:
            raise UserError(f"{flag} must be at most {MAX_WORKERS} (a process each), got {value}")
    if options.timeout is not None and not options.timeout > 0:  # `not >`: NaN is refused too
        raise UserError(f"--timeout must be positive seconds, got {options.timeout}")
    if options.profile_trials < 0:
        raise UserError(f"--profile-trials must be 0 or more, got {options.profile_trials}")
    if not 0 <= options.checkpoint_mb <= MAX_CHECKPOINT_MB:
        raise UserError(
            f"--checkpoint-mb must be 0 (no checkpoints) to {MAX_CHECKPOINT_MB}, got {options.checkpoint_mb}"
        )
    if not 0 <= options.checkpoint_every < math.inf:  # `not`: NaN is refused too
        raise UserError(f"--checkpoint-every must be 0 or more seconds, got {options.checkpoint_every}")
    if options.profile_trials and not options.tracking:
        raise UserError("--profile-trials logs traces to MLflow; drop --no-tracking or --profile-trials")
    for flag, name in (("--study-name", options.study_name), ("--from-study", options.from_study)):
        if name is not None:
            check_name(name, flag)
