"""The study's MLflow parent run, as the search loop opens, refreshes and closes it: the
experiment and run (adopted by every worker, on any machine), the dashboard page re-rendered
onto it as trials end, and its closing figures once the last worker is done."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping

import optuna
from optuna.trial import TrialState

from exptrack.search import preflight
from exptrack.search.study_setup import StoredStudy
from exptrack.stores.locks import StoreLock
from exptrack.study import Study
from exptrack.study_store import study_figures
from exptrack.tracking import runs
from exptrack.tracking.tracker import Tracker

DASHBOARD_EVERY_S = 30.0  # a page inlines 4.8 MB of plotly.js: re-render at most this often, and at the end

# the study -> its dashboard's artifacts: file name -> text (the HTML page) or bytes (the PNG)
DashboardRenderer = Callable[[optuna.Study], Mapping[str, str | bytes]]


@dataclasses.dataclass(frozen=True)
class StudyRun:
    """The study's MLflow records as this process opened them (all None without tracking)."""

    experiment_id: str | None = None
    parent_run_id: str | None = None
    notes: tuple[str, ...] = ()  # what the summary must also say


def open_study_run(
    tracker: Tracker, stored: StoredStudy, spec: Study, prepared: preflight.Prepared, storage_url: str
) -> StudyRun:
    """The study's experiment and parent run (`tracking.runs`). Call under the store lock: the
    first of several workers creates them."""
    record = runs.StudyFacts(
        name=stored.name,
        uid=stored.uid,
        storage_url=storage_url,
        sampler=type(stored.study.sampler).__name__,
        pruner=type(prepared.pruner).__name__,
        objectives=spec.objectives,
        search_space=prepared.space.describe(),
        params=prepared.space.names(),
        constraints=[str(c) for c in prepared.constraints],
        files=[p for p in (spec.source_path, spec.search_space_path()) if p is not None],
        adopt_untagged=stored.adopt_untagged,
    )
    opened = runs.open_study_run(tracker, record)
    notes: tuple[str, ...] = ()
    if opened.replaced is not None:
        notes = (
            f"MLflow experiment {stored.name!r} already held parent run {opened.replaced} of another "
            f"Optuna study named {stored.name!r} (its Optuna store was reset or replaced); this "
            f"study's trials are under a new parent run {opened.run_id}",
        )
    return StudyRun(opened.experiment_id, opened.run_id, notes)


class Dashboard:
    """The study's dashboard page on its parent run as `dashboard.html`, re-rendered at most
    every DASHBOARD_EVERY_S seconds (and once more at the end, `force`). The clock starts with the
    search, so a command that ends within DASHBOARD_EVERY_S renders once, at its end: a render
    costs 1-2.6 s (plotly, matplotlib and Optuna's plots imported, the PNG drawn; a 1-trial study on
    2 cores), more than a tiny trial. A render of the trials the last one drew is skipped."""

    def __init__(self, tracker: Tracker | None, run: StudyRun, render: DashboardRenderer | None) -> None:
        self.tracker, self.run_id, self.render = tracker, run.parent_run_id, render
        self.rendered_at = time.monotonic()
        self.drawn: tuple[object, ...] | None = None  # what the last render drew (`_drawn`)

    def refresh(self, study: optuna.Study, force: bool = False) -> None:
        if self.tracker is None or self.run_id is None or self.render is None:
            return
        if not force and time.monotonic() - self.rendered_at < DASHBOARD_EVERY_S:
            return
        drawn = _drawn(study)
        if drawn == self.drawn:  # e.g. the end's render right after the last trial's
            return
        self.rendered_at, self.drawn = time.monotonic(), drawn
        for name, content in self.render(study).items():
            self.tracker.artifacts.content(self.run_id, content, name)


def _drawn(study: optuna.Study) -> tuple[object, ...]:
    """What a dashboard draws of the study: each trial's state, values, params, per-epoch values
    and user attributes (its costs); the same tuple, the same page."""
    return tuple(
        (t.number, t.state, t.values, sorted(t.params.items()), sorted(t.intermediate_values.items()),
         repr(sorted(t.user_attrs.items())))
        for t in study.get_trials(deepcopy=False)
    )  # fmt: skip


def close_if_last(
    tracker: Tracker | None, run: StudyRun, study: optuna.Study, spec: Study, lock: StoreLock, status: str
) -> None:
    """The last worker out, on any machine, closes the study's run: none of its trials runs."""
    if tracker is None or run.parent_run_id is None:
        return
    with lock:
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        runs.close_study_run(tracker, run.parent_run_id, status, study_figures(study, spec.objectives))
