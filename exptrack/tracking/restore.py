"""Write one trial's journaled records (`tracking.journal`) into MLflow, idempotently: find its run
(by id, else by its study run and trial number: a create whose reply was lost made it anyway), or
create it with the same tags, nesting and name as a live one plus `exptrack.restored`; then add
only what the run lacks (params, setup tags and dataset input, per-epoch metrics by step with
their original times, artifacts) and close it with its status and end time. Running it twice, or
after a partial write, adds nothing twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from exptrack import records as keys
from exptrack.tracking.dataset_inputs import log_dataset_input
from exptrack.tracking.tracker import Tracker, _tags

Record = dict[str, Any]


def write_trial(tracker: Tracker, trial: list[Record], restored: str) -> str | None:
    """Make trial's MLflow run hold every journaled record; its run id (None: no `open` record, so
    nothing to write). `restored`: what the tag says when the run has to be created here."""
    opened = next((r for r in trial if r["k"] == "open"), None)
    if opened is None:
        return None
    run = _find_run(tracker, opened)
    if run is None:
        tags = {**opened["tags"], keys.RESTORED_TAG: restored}
        run = tracker.client.create_run(
            opened["exp"], start_time=opened["start"], tags=_tags(tags), run_name=opened["name"]
        )
        run = tracker.client.get_run(run.info.run_id)
    run_id = str(run.info.run_id)
    _params(tracker, run, opened["params"])
    for record in trial:
        _apply(tracker, run, record)
    return run_id


def _apply(tracker: Tracker, run: Any, record: Record) -> None:
    """One record onto the run, unless it holds it already."""
    run_id, kind = run.info.run_id, record["k"]
    if kind == "open":
        _artifact_text(tracker, run_id, record.get("config"), keys.CONFIG_ARTIFACT)
    elif kind == "setup":
        tracker.client.log_batch(run_id, tags=_run_tags(keys.setup_tags(dict(record["facts"]))))
        if keys.DATASET_FACT in record["facts"] and not run.inputs.dataset_inputs:
            log_dataset_input(tracker.client, run_id, record["facts"])
    elif kind == "epoch":
        _metrics(tracker, run_id, record["metrics"], record["step"], record["ts"])
    elif kind == "files":
        _artifact_folder(tracker, run_id, Path(record["dir"]), record["under"])
    elif kind == "close":
        _close(tracker, run, record)


def _find_run(tracker: Tracker, opened: Record) -> Any:
    """The trial's run: by the id its writer got, else the one run under its study run tagged with
    its number (a create that reached the store but whose reply was lost), else None."""
    if opened.get("run"):
        from mlflow.exceptions import MlflowException

        try:
            return tracker.client.get_run(opened["run"])
        except MlflowException:
            pass  # the id came from another store (one since replaced): look it up by tags
    tags = opened["tags"]
    query = (
        f"tags.`{keys.PARENT_RUN_TAG}` = '{tags[keys.PARENT_RUN_TAG]}' "
        f"and tags.`{keys.TRIAL_TAG}` = '{tags[keys.TRIAL_TAG]}'"
    )
    found = tracker.client.search_runs([opened["exp"]], filter_string=query, max_results=2)
    return found[0] if found else None


def _params(tracker: Tracker, run: Any, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    from exptrack.errors import redact

    have = run.data.params
    missing = [Param(k, redact(str(v))[:6000]) for k, v in params.items() if k not in have]
    for start in range(0, len(missing), 100):  # MLflow takes at most 100 params a batch
        tracker.client.log_batch(run.info.run_id, params=missing[start : start + 100])


def _metrics(tracker: Tracker, run_id: str, values: Mapping[str, float], step: int, at_ms: int) -> None:
    """Each metric at `step` unless the run has that metric at that step already."""
    from mlflow.entities import Metric

    missing = []
    for key, value in values.items():
        steps = {m.step for m in tracker.client.get_metric_history(run_id, key)}
        if step not in steps:
            missing.append(Metric(key, float(value), int(at_ms), int(step)))
    if missing:
        tracker.client.log_batch(run_id, metrics=missing)


def _run_tags(tags: Mapping[str, Any]) -> list[Any]:
    from mlflow.entities import RunTag

    return [RunTag(k, v) for k, v in _tags(tags).items()]


def _artifact_text(tracker: Tracker, run_id: str, text: str | None, name: str) -> None:
    if text is not None and name not in _artifacts(tracker, run_id, None):
        tracker.client.log_text(run_id, text, name)


def _artifact_folder(tracker: Tracker, run_id: str, folder: Path, under: str) -> None:
    """The kept files of a traced trial, those the run lacks; a folder gone is left out."""
    if not folder.is_dir():
        return
    have = _artifacts(tracker, run_id, under)
    for path in sorted(folder.iterdir()):
        if f"{under}/{path.name}" not in have:
            tracker.client.log_artifact(run_id, str(path), artifact_path=under)


def _artifacts(tracker: Tracker, run_id: str, under: str | None) -> set[str]:
    return {f.path for f in tracker.client.list_artifacts(run_id, under)}


def _close(tracker: Tracker, run: Any, record: Record) -> None:
    """The run's closing figures (those it lacks), tags, texts, status and end time."""
    run_id = run.info.run_id
    for name, text in record.get("texts", {}).items():
        _artifact_text(tracker, run_id, text, name)
    fresh = tracker.client.get_run(run_id).data.metrics
    figures = {k: v for k, v in record["metrics"].items() if k not in fresh}
    if figures:
        _metrics(tracker, run_id, figures, 0, record["end"])
    tags = {keys.STATE_TAG: record["state"], **record["tags"]}
    tracker.client.log_batch(run_id, tags=_run_tags(tags))
    tracker.client.set_terminated(run_id, status=keys.RUN_STATUS[record["state"]], end_time=record["end"])
