"""Every run link `exp` prints opens MLflow's model-training layout (issue 19, item 5): MLflow 3's
UI opens a bare `#/experiments/N/runs/ID` under GenAI "Evaluations". On a tracking server `exp
search` prints the study's links and `exp train` its run's; MLflow's own "View run" lines, which
carry no layout, are never printed. The `exp train` run stays apart from the trials (item 4): its
own name prefix and role tag, the study's saved view lists trials only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import TINY
from tests.faultkit import MlflowServer

LINK = re.compile(r"https?://\S*#/experiments/\S+")


@pytest.mark.slow
def test_every_run_link_exp_prints_opens_the_model_training_layout(project: Path, exp) -> None:  # type: ignore[no-untyped-def]
    server = MlflowServer(project / "server")
    server.start()
    try:
        store = ["--tracking-uri", server.uri]
        searched = exp("search", "studies/finetune.py", *TINY, "--trials", "1", "--study-name", "links", *store)
        assert searched.returncode == 0, searched.stderr
        exported = exp("export", "links", "--top", "1", "--out", "best")
        assert exported.returncode == 0, exported.stderr
        (config,) = (project / "best").glob("*.yaml")
        trained = exp("train", str(config), *store)
        assert trained.returncode == 0, trained.stderr
    finally:
        server.stop()
    printed = searched.stdout + searched.stderr + trained.stdout + trained.stderr
    links = LINK.findall(printed)
    assert "View run" not in printed
    assert len(links) >= 3, printed  # the runs view, the study run, the exp train run
    assert all(link.split("?", 1)[1].startswith("workflowType=machine_learning") for link in links), links
    run_id = re.search(r"MLflow run (\w+)", trained.stdout)[1]  # type: ignore[index]
    assert any(f"/runs/{run_id}?workflowType=machine_learning" in link for link in links), links
    server.start()
    try:
        run = MlflowClient(server.uri).get_run(run_id)
    finally:
        server.stop()
    assert run.info.run_name.startswith("train-") and run.data.tags["exptrack.role"] == "train"
