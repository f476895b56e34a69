"""Hosts starting together on one tracking server log the same new dataset at once: MLflow looks
it up, then inserts it, so all but one insert fail on `dataset_pk` (UniqueViolation on PostgreSQL).
Every run still gets its dataset input."""

from __future__ import annotations

import threading
import uuid

import pytest
from mlflow import MlflowClient

from exptrack import records
from exptrack.tracking.dataset_inputs import log_dataset_input
from tests.pgserver import MlflowPgServer

RUNS = 6  # one per simulated host; a few rounds, each with a dataset no run logged before


def _race(client: MlflowClient, run_ids: list[str], facts: dict[str, str]) -> list[Exception]:
    """Each run logs `facts`' dataset at the same moment, from its own thread; the errors raised."""
    start, errors = threading.Barrier(len(run_ids)), []

    def log(run_id: str) -> None:
        start.wait()
        try:
            log_dataset_input(client, run_id, facts)
        except Exception as exc:  # what a host's dropped write was
            errors.append(exc)

    threads = [threading.Thread(target=log, args=(run_id,)) for run_id in run_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


@pytest.mark.slow
def test_runs_logging_one_new_dataset_at_once_each_get_the_input(tracking_server: MlflowPgServer) -> None:
    client = MlflowClient(tracking_server.uri)
    experiment = client.create_experiment(f"dataset-race-{uuid.uuid4().hex[:8]}")
    for round_ in range(3):
        digest = f"{round_}-{uuid.uuid4().hex[:8]}"
        facts = {records.DATASET_FACT: "digits", records.DATASET_DIGEST_FACT: digest}
        run_ids = [client.create_run(experiment).info.run_id for _ in range(RUNS)]
        assert _race(client, run_ids, facts) == []
        for run_id in run_ids:
            (found,) = client.get_run(run_id).inputs.dataset_inputs
            assert found.dataset.digest == digest
