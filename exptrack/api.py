"""The Python API: run a study and read its trials from a notebook or a script, without the CLI.
`exptrack.run_search(...)` and `exptrack.trials(...)` call the same functions `exp search` and
`exp trials` call (`search.run.run_search`, `results.tables.trials_table`): no second code path.

Imported on first use, so `import exptrack` (which every study file does) stays light.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exptrack.errors import UserError
from exptrack.stores.url import parse
from exptrack.study import Study

if TYPE_CHECKING:
    import pandas as pd

    from exptrack.search.loop import SearchSummary

Store = str | Path | None  # a URL, or a path that names a sqlite file


def run_search(
    study: Study | str | Path,
    trials: int = 20,
    *,
    storage: Store = None,
    tracking_uri: Store = None,
    overrides: Mapping[str, Any] | None = None,
    **options: Any,
) -> SearchSummary:
    """Tune `study` (a `Study`, or the path of a study file) until the study has `trials`
    finished trials, as `exp search` does; returns the summary (`.best`: the best trials, best
    first; `.finished`, `.ran`, `.experiment_id`, `.parent_run_id`). `overrides` are `--set`
    values (`{"epochs": 2}`); `options` are `exp search`'s other flags by name (sampler, pruner,
    seed, timeout, study_name, new_study, max_failures, device, workers, gpus, per_gpu, tracking=False for
    --no-tracking). Ctrl-C ends the search as in the CLI and raises KeyboardInterrupt."""
    from exptrack import processes
    from exptrack.results import dashboards
    from exptrack.search import run
    from exptrack.search.options import SearchOptions

    processes.quiet_libraries()
    overrides = dict(overrides or {})
    if "device" in options:  # --device is a config value, as in the CLI
        overrides["device"] = options.pop("device")
    fields = {f.name for f in dataclasses.fields(SearchOptions)} - {
        "trials",
        "storage",
        "tracking_uri",
        "worker",
    }
    unknown = sorted(set(options) - fields)
    if unknown:
        valid = ", ".join(sorted(fields))
        raise UserError(f"exptrack.run_search: unknown option {unknown[0]!r}; use {valid}")
    chosen = SearchOptions(
        trials=trials, storage=store_url(storage), tracking_uri=store_url(tracking_uri), **options
    )
    source = study if isinstance(study, Study) else Path(study)
    return run.run_search(source, chosen, overrides, None, print, dashboards.renderer_for, own_signals=False)


def trials(
    study_name: str,
    *,
    storage: Store = None,
    tracking_uri: Store = None,
    state: str = "all",
    sort: str = "best",
    top: int | None = None,
    costs: bool = False,
) -> pd.DataFrame:
    """A study's trials as a DataFrame with the columns of `exp trials` (number, state, value,
    each parameter under its Optuna name, weights, duration, MLflow run id and status, cost
    figures), filtered by `state`, sorted by `sort` (best, a column, -column), cut to `top`;
    `costs` puts samples/s, seconds per epoch, peak memory and MFU beside the value (`--costs`)."""
    from exptrack.results.tables import trials_table

    return trials_table(
        study_name, store_url(storage), store_url(tracking_uri), state, sort, top, costs=costs
    )


def store_url(store: Store) -> str | None:
    """A store as a URL: a `Path` (or a string without `://`) names a sqlite file; None keeps the
    default (the flag's environment variable, else a file in the working directory)."""
    if store is None:
        return None
    if isinstance(store, Path) or not parse(store).has_scheme:
        return f"sqlite:///{Path(store).resolve()}"
    return store
