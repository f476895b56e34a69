"""What a trial asks of a real tracking server (issue 20 item 5), counted in the server's own access
log: its run created with its tags, its config.yaml uploaded, its dataset input linked, its params,
setup tags, epoch metrics, system metrics and close figures in one `log_batch` per LINGER_S (one
for a trial shorter than that), its close; never a `runs/get` (11 requests a trial before, with 2
of them; benchmarks/README.md). The run still holds every record."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from exptrack import records
from exptrack.search import loop
from exptrack.search.options import SearchOptions
from exptrack.study import load_study_file
from exptrack.tracking.tracker import Tracker
from exptrack.tracking.writer import LINGER_S
from tests.conftest import REPO

FAULTY = REPO / "tests" / "studies" / "faulty.py"
REQUEST = re.compile(r'"(GET|POST|PUT|PATCH|DELETE) /(?:api/2\.0/)?([^ ?"]+)')


def requests_since(log: Path, offset: int, until: str) -> list[str]:
    """The requests the server logged after `offset`, once the one named `until` is among them
    (the server writes a line once it has answered: the client may see the answer first)."""
    for _ in range(200):  # up to 20 s for the last line to be written
        found = [" ".join(m.groups()) for m in REQUEST.finditer(log.read_bytes()[offset:].decode())]
        if any(until in line for line in found):
            return [line for line in found if "/health" not in line]
        time.sleep(0.1)
    raise AssertionError(f"{until} never logged; logged: {found}")


@pytest.mark.slow
def test_a_trial_sends_the_tracking_server_five_requests_and_its_run_holds_every_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tracking_server
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("EXPTRACK_FAULTS", raising=False)
    spec = load_study_file(FAULTY).with_overrides({"subset": 96, "image_size": 16, "epochs": 2})
    options = SearchOptions(trials=5, storage=f"sqlite:///{tmp_path}/optuna.db", study_name="requests")
    search = loop.open_search(spec, options.resolved(), Tracker(tracking_server.uri, warn=lambda _: None))
    tracking = loop.open_tracking(search)
    log = tracking_server.root / "server.log"
    offset, started = log.stat().st_size, time.monotonic()
    outcome = loop.run_one(search, tracking)
    seconds = time.monotonic() - started
    assert outcome is not None and outcome.state == "COMPLETE" and outcome.recorded
    sent = requests_since(log, offset, "runs/update")
    batches = [line for line in sent if line.endswith("runs/log-batch")]
    rest = sorted(line.split("/artifacts/")[0] for line in sent if line not in batches)
    assert rest == [
        "POST mlflow/runs/create",
        "POST mlflow/runs/log-inputs",
        "POST mlflow/runs/update",
        "PUT mlflow-artifacts",  # config.yaml, straight to where the run's creation said
    ], sent
    # a log_batch per LINGER_S the trial lasted, and one with its close (one in all when short)
    assert 1 <= len(batches) <= 1 + int(seconds / LINGER_S), (seconds, sent)
    run = MlflowClient(tracking_server.uri).get_run(search.study.trials[0].user_attrs[records.RUN_ID_ATTR])
    history = MlflowClient(tracking_server.uri).get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in history] == [1, 2]  # each epoch, at its step
    assert run.info.status == "FINISHED" and run.data.tags[records.STATE_TAG] == "COMPLETE"
    assert run.data.params["lr"] and records.profile_tag(records.TORCH_THREADS) in run.data.tags
    assert any(key.startswith("system/") for key in run.data.metrics)  # the last sample rode along
    assert run.inputs.dataset_inputs and run.data.tags.get("exptrack.device") == "cpu"
