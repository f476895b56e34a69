"""A run's dataset as its MLflow input (the UI's Datasets column: name and digest, sizes as its
profile), written by a live trial's `Tracker.log_setup` and by the journal's restore alike.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from exptrack import records


def log_dataset_input(client: Any, run_id: str, facts: Mapping[str, Any]) -> None:
    """The run's dataset as its MLflow input: name and digest, sizes as its profile. Idempotent
    across hosts: two runs logging one new dataset at once race on MLflow's insert of it (the
    loser's transaction fails on `dataset_pk`, UNIQUE on experiment, name and digest), so the
    loser logs again and links the dataset the winner stored."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    spec = str(facts[records.DATASET_FACT])  # digits, imagefolder:/data/pets, ...
    sizes = {key: facts[key] for key in records.DATASET_SIZE_FACTS if key in facts}
    dataset = Dataset(
        name=spec.partition(":")[0],
        digest=str(facts.get(records.DATASET_DIGEST_FACT, "")),
        source_type="exptrack",
        source=json.dumps({"dataset": spec}),
        profile=json.dumps(sizes),
    )
    tags = [InputTag(records.DATASET_CONTEXT_TAG, "training")]
    try:
        client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags=tags)])
    except Exception as exc:
        if not _lost_dataset_race(exc):
            raise
        client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags=tags)])


def _lost_dataset_race(exc: Exception) -> bool:
    """Did another run store the same dataset between MLflow's look-up and its insert? PostgreSQL
    says UniqueViolation on "dataset_pk", sqlite "UNIQUE constraint failed: datasets..."."""
    text = str(exc)
    return "dataset_pk" in text or "UNIQUE constraint failed: datasets" in text
