"""A run's files: text (config.yaml, a traceback, the confirm table), bytes (the dashboard's PNG)
and whole folders (a trace), each write guarded like every tracking step, the trial's config on
the background writer so training does not wait for it.

Apart from the `Tracker`'s metric/param/tag batches because files take MLflow's artifact path
(an artifact repository, a temporary file for bytes), not its run-data `log_batch`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from exptrack.tracking.writer import BackgroundWriter, Guard


class Artifacts:
    """The artifact writes of one process's `Tracker` (`tracker.artifacts`), by explicit run id;
    a None run id (its creation failed, already counted) writes nothing."""

    def __init__(self, client: Any, guard: Guard, writer: BackgroundWriter) -> None:
        self.client, self.guard, self.writer = client, guard, writer

    def text(self, run_id: str | None, text: str, artifact_file: str) -> None:
        """A text file as an artifact (config.yaml, a traceback, the dashboard page)."""
        if run_id is not None:
            with self.guard(f"log {artifact_file}"):
                self.client.log_text(run_id, text, artifact_file)

    def text_later(self, run_id: str, text: str, artifact_file: str, what: str) -> None:
        """`text`, on the background writer (`what`: its failure's name); the run's close waits for it."""
        self.writer.later(run_id, what, self.client.log_text, run_id, text, artifact_file)

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
