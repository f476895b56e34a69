"""A run's files: text (config.yaml, a traceback, the confirm table), bytes (the dashboard's PNG)
and whole folders (a trace), each write guarded like every tracking step, the trial's config on
the background writer so training does not wait for it.

Apart from the `Tracker`'s metric/param/tag batches because files take MLflow's artifact path
(an artifact repository, a temporary file for bytes), not its run-data `log_batch`.
"""

from __future__ import annotations

import posixpath
import tempfile
from pathlib import Path
from typing import Any

from exptrack.tracking.writer import BackgroundWriter, Guard


class Artifacts:
    """The artifact writes of one process's `Tracker` (`tracker.artifacts`), by explicit run id;
    a None run id (its creation failed, already counted) writes nothing."""

    def __init__(self, client: Any, guard: Guard, writer: BackgroundWriter) -> None:
        self.client, self.guard, self.writer = client, guard, writer
        self.locations: dict[str, str] = {}  # run id -> artifact URI, as its creation answered

    def known(self, run_id: str, artifact_uri: str) -> None:
        """Where the run's files go, as `create_run` answered: written there directly, without
        MLflow asking the server for the run first (a `runs/get` a trial). Until `forget`."""
        self.locations[run_id] = artifact_uri

    def forget(self, run_id: str) -> None:
        self.locations.pop(run_id, None)

    def text(self, run_id: str | None, text: str, artifact_file: str) -> None:
        """A text file as an artifact (config.yaml, a traceback, the dashboard page)."""
        if run_id is not None:
            with self.guard(f"log {artifact_file}"):
                self._write_text(run_id, text, artifact_file)

    def text_later(self, run_id: str, text: str, artifact_file: str, what: str) -> None:
        """`text`, on the background writer (`what`: its failure's name); the run's close waits for it."""
        self.writer.later(run_id, what, self._write_text, run_id, text, artifact_file)

    def _write_text(self, run_id: str, text: str, artifact_file: str) -> None:
        """`MlflowClient.log_text`, through the run's artifact repository when its location is known."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        location = self.locations.get(run_id)
        if location is None:
            self.client.log_text(run_id, text, artifact_file)
            return
        path = posixpath.normpath(artifact_file)
        repository = get_artifact_repository(location, tracking_uri=self.client.tracking_uri)
        with tempfile.TemporaryDirectory() as folder:
            local = Path(folder) / posixpath.basename(path)
            local.write_text(text, encoding="utf-8")
            repository.log_artifact(str(local), posixpath.dirname(path) or None)

    def content(self, run_id: str | None, content: str | bytes, artifact_file: str) -> None:
        """Text or bytes (the dashboard's page and its PNG) as the artifact `artifact_file`."""
        if isinstance(content, str):
            self.text(run_id, content, artifact_file)
            return
        if run_id is not None:
            with self.guard(f"log {artifact_file}"), tempfile.TemporaryDirectory() as folder:
                (Path(folder) / artifact_file).write_bytes(content)
                self.client.log_artifact(run_id, str(Path(folder) / artifact_file))

    def folder(self, run_id: str | None, folder: Path, artifact_path: str) -> None:
        """Every file in `folder` as an artifact under `artifact_path` (a trace, its table)."""
        if run_id is None or not any(folder.iterdir()):
            return
        with self.guard(f"log {artifact_path}/"):
            self.client.log_artifacts(run_id, str(folder), artifact_path=artifact_path)
