"""Take the README's pictures from a real search: the study's runs table and a trial's learning
curves in the MLflow UI (headless Chromium on `exp ui`), and the study run's `dashboard.png`.

    python scripts/docs_screenshots.py [--out docs/img]

Runs a 6-trial, 3-epoch search of studies/finetune.py on 300 digits (about 2 minutes on 2 CPU
cores) in a scratch folder, so the pictures show what a user's first study looks like.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from mlflow import MlflowClient

from exptrack.tracking.ui_links import run_url, runs_view_url

REPO = Path(__file__).resolve().parent.parent
STUDY = "finetune-quick"
SEARCH = ["--trials", "6", "--set", "epochs=3", "--set", "subset=300", "--set", "image_size=16",
          "--study-name", STUDY, "--seed", "0"]  # fmt: skip


def exp(cwd: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "exptrack", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, start_new_session=True)  # fmt: skip


def screenshot(url: str, target: Path, window: tuple[int, int]) -> None:
    """A page once its scripts ran; retried while the charts still load on a busy machine."""
    for _ in range(4):
        with tempfile.TemporaryDirectory() as profile:
            dom = subprocess.run(
                ["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                 f"--screenshot={target}", "--dump-dom", f"--window-size={window[0]},{window[1]}",
                 "--virtual-time-budget=15000", url],
                capture_output=True, text=True, timeout=300, check=True,
            ).stdout  # fmt: skip
        if "js-line" in dom or "runs" in target.name:
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    out = parser.parse_args().out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="exptrack-docs-") as scratch:
        cwd = Path(scratch)
        for folder in ("studies", "search_spaces", "dashboards"):
            shutil.copytree(REPO / folder, cwd / folder)
        if exp(cwd, "search", "studies/finetune.py", *SEARCH).wait() != 0:
            raise SystemExit("the search failed")
        client = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
        experiment = client.get_experiment_by_name(STUDY).experiment_id
        (study_run,) = client.search_runs([experiment], "tags.`exptrack.role` = 'study'")
        best = client.search_runs([experiment], "tags.`exptrack.role` = 'trial' and tags.state = 'COMPLETE'",
                                  order_by=["metrics.val_accuracy DESC"], max_results=1)[0]  # fmt: skip
        client.download_artifacts(study_run.info.run_id, "dashboard.png", str(out))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        ui = exp(cwd, "ui", "--port", str(port))
        try:
            base = next(m[1] for line in ui.stdout if (m := re.search(r"MLflow UI: (http://\S+)", line)))  # type: ignore[union-attr]
            screenshot(runs_view_url(base, experiment), out / "runs-table.png", (2200, 640))
            curves = run_url(base, experiment, best.info.run_id).replace("?", "/model-metrics?", 1)
            screenshot(curves, out / "trial-curves.png", (1400, 900))
        finally:
            os.killpg(ui.pid, signal.SIGINT)
            ui.wait(timeout=60)
    print(f"pictures in {out}")


if __name__ == "__main__":
    main()
