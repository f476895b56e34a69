"""Links into the MLflow UI that open where a search's records read best: the experiment's runs
table as a saved view (sorted by the study's metric, with the metric, each trial's state and the
searched parameters as columns, instead of "64 columns hidden") and run pages in the
model-training layout.

MLflow 3's UI keeps its GenAI / model-training switch per browser and opens experiments and run
pages as GenAI (a run under "Evaluations") unless the URL says `workflowType=machine_learning`;
the experiment's `mlflow.experimentKind` tag is not consulted while that switch exists (UI 3.17).
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Sequence

from exptrack import records
from exptrack.stores.url import parse

ML_LAYOUT = "workflowType=machine_learning"


def runs_url(base: str, experiment_id: str, metric: str | None = None, maximize: bool = True) -> str:
    """The experiment's runs table in the model-training layout, sorted by `metric` (sorting by
    a metric also lists the trial runs flat; by start time MLflow folds them under the study run)."""
    url = f"{base}/#/experiments/{experiment_id}/runs?{ML_LAYOUT}"
    if metric:
        key = urllib.parse.quote(f"metrics.`{metric}`")
        url += f"&orderByKey={key}&orderByAsc={str(not maximize).lower()}"
    return url


def runs_view_url(base: str, experiment_id: str) -> str:
    """The runs table opened on the saved view `runs_view_tag` wrote. Nothing else may ride along:
    the UI ignores a saved view when the URL carries its own sorting or filter."""
    return f"{base}/#/experiments/{experiment_id}/runs?{ML_LAYOUT}&viewStateShareKey={records.RUNS_VIEW_KEY}"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """A run's page in the model-training layout (not under GenAI evaluations)."""
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{ML_LAYOUT}"


def server_base(tracking_uri: str) -> str | None:
    """The UI's address when the tracking store is an MLflow server (without any user:password),
    so links can be written down; None for a database or file store (`exp ui` serves those)."""
    return parse(tracking_uri).server_base()


def runs_view_tag(
    study: str, column: str, maximize: bool, params: Sequence[str], also: Sequence[str] = ()
) -> tuple[str, str]:
    """(experiment tag, value) that saves the study's runs view the way the UI's "Save view" does:
    an envelope {name, createdAt, state} whose state holds the sort and the selected columns.
    `column` sorts (``metrics.`val_accuracy` ``); `also`: more columns after it (a study's other
    objectives)."""
    metric_key = column
    columns = [
        metric_key,
        *also,
        f"tags.`{records.STATE_TAG}`",
        f"tags.`{records.PRUNED_EPOCH_TAG}`",
        *(f"params.`{name}`" for name in params),
        "attributes.`Dataset`",
    ]
    # trials only: `exp train` runs of the study (`train-trial-NNN`, role train) stay out of the
    # ranking, found by that filter or their own printed link
    only_trials = f"tags.`{records.ROLE_TAG}` = '{records.ROLE_TRIAL}'"
    state = {
        "orderByKey": metric_key,
        "orderByAsc": not maximize,
        "selectedColumns": columns,
        "searchFilter": only_trials,
    }
    envelope = {"name": f"{study}: trials", "createdAt": int(time.time() * 1000), "state": json.dumps(state)}
    return records.RUNS_VIEW_TAG, json.dumps(envelope)
