"""`exp ui` as a real process: the MLflow REST API answers with the study's runs, the printed
URLs show the trial runs table with the metric, state and searched parameters as columns and the
study run in the model-training layout (headless Chromium: screenshot and DOM), and Ctrl-C stops
it cleanly."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from exptrack.tracking.ui_links import run_url, runs_url, runs_view_url, server_base
from exptrack.tracking.ui_server import is_loopback
from tests.conftest import REPO, exp_env
from tests.fixtures_search import STUDY, Searched

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# ignored by git; kept for a human to look at
SCREENSHOT, RUN_SCREENSHOT = (
    REPO / "test-artifacts" / f"exp-ui-{page}.png" for page in ("runs", "study-run")
)
WINDOW = (2400, 900)  # wide: the runs table draws only the columns in view


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_until(process: subprocess.Popen[str], pattern: str, timeout: float) -> re.Match[str]:
    """The first stdout line matching `pattern`; fails with everything seen so far."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()  # type: ignore[union-attr]
        if not line and process.poll() is not None:
            break
        seen.append(line)
        if match := re.search(pattern, line):
            return match
    raise AssertionError(f"no line matching {pattern!r}; got:\n{''.join(seen)}{process.stderr.read()}")  # type: ignore[union-attr]


def search_runs(base: str, experiment_id: str) -> list[dict]:
    body = json.dumps({"experiment_ids": [experiment_id], "max_results": 1000}).encode()
    request = urllib.request.Request(
        f"{base}/api/2.0/mlflow/runs/search", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.load(reply)["runs"]


def browse(url: str, target: Path) -> str:
    """Open `url` in headless Chromium: a screenshot to `target`, and the page's DOM once its
    scripts have run (one browser start for both)."""
    target.parent.mkdir(exist_ok=True)
    target.unlink(missing_ok=True)
    # A profile of its own: chromium runs that share one (the default) wait on each other's lock.
    with tempfile.TemporaryDirectory(prefix="exptrack-chromium-") as profile:
        done = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
             f"--screenshot={target}", "--dump-dom", f"--window-size={WINDOW[0]},{WINDOW[1]}",
             "--virtual-time-budget=8000", url],
            capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
    assert_rendered(target)
    return done.stdout


def assert_rendered(path: Path) -> None:
    """A screenshot at the window's size with a drawn page on it: a blank or error page has a
    handful of colours, the runs table (text, icons, links) hundreds."""
    from PIL import Image

    with Image.open(path) as shot:
        assert shot.size == WINDOW
        colours = shot.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 100, f"the page in {path} looks blank ({len(colours)} colours)"


def test_ui_serves_the_study_runs_and_stops_cleanly_on_ctrl_c(searched: Searched) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "exptrack", "ui", "--port", str(port)],
        cwd=searched.cwd, env=exp_env(searched.cwd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        base = read_until(process, r"MLflow UI: (http://127\.0\.0\.1:\d+)", timeout=120)[1]
        url = read_until(process, rf"{STUDY}: (http\S+)", timeout=30)[1]
        study_run_url = read_until(process, rf"{STUDY} study run .*: (http\S+)", timeout=30)[1]
        experiment_id = re.search(r"#/experiments/(\d+)/runs\?workflowType=machine_learning", url)[1]  # type: ignore[index]
        assert url == runs_view_url(base, experiment_id)  # the study's saved view of its runs
        runs = search_runs(base, experiment_id)
        trial_ids = {t.user_attrs["mlflow_run_id"] for t in searched.study().trials}
        assert trial_ids <= {r["info"]["run_id"] for r in runs}
        names = {r["info"]["run_name"] for r in runs}
        assert {f"trial-{t.number:03d}" for t in searched.study().trials} <= names

        if not Path(CHROMIUM).exists():
            pytest.skip("chromium is not installed (scripts/test.sh installs it): no screenshot taken")
        table = browse(url, SCREENSHOT)
        print(f"screenshot of {url}: {SCREENSHOT}")
        assert f"{STUDY}: trials" in table  # the saved view is the one open
        # the metric, each trial's state and every searched parameter are columns, not hidden
        searched_params = {p for t in searched.study().trials for p in t.params}
        wanted = {"metrics.`val_accuracy`", "tags.`state`", *(f"params.`{p}`" for p in searched_params)}
        assert wanted <= set(re.findall(r'col-id="([^"]+)"', table)), table[-3000:]
        assert "COMPLETE" in table and "trial-000" in table

        # the study run opens in the model-training layout, not under GenAI evaluations
        study_run = browse(study_run_url, RUN_SCREENSHOT)
        assert STUDY in study_run and ">Runs<" in study_run
        assert "Evaluation runs" not in study_run and "Evaluations" not in study_run
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=60)
    stderr = process.stderr.read()  # type: ignore[union-attr]
    assert code == 130 and "Traceback" not in stderr, stderr
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{base}/health", timeout=2)


def test_ui_url_lands_on_the_model_training_runs_table_sorted_by_the_metric() -> None:
    url = runs_url("http://127.0.0.1:5000", "7", "val_loss", maximize=False)
    assert url == (
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
        "&orderByKey=metrics.%60val_loss%60&orderByAsc=true"
    )
    assert (
        run_url("http://h:5000", "7", "abc")
        == "http://h:5000/#/experiments/7/runs/abc?workflowType=machine_learning"
    )
    # a tracking server's address is linked to without its password; a database store is not a page
    assert server_base("https://user:secret@mlflow.example:8443/") == "https://mlflow.example:8443"
    assert server_base("sqlite:///mlflow.db") is None
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
