"""A tracking server's password is never shown: not in MLflow's own "View run ... at: URL" lines on
stdout, not on stderr, not on any command line in the process table, not in either store.
(`test_bad_inputs` covers a password with an unencoded `/` in error lines, `test_ui` the database
password `exp ui` hands its server.)"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import pytest

from tests.faultkit import MlflowServer, start_search, trials

PASSWORD = "Hunter2-tracking-pw"


def command_lines() -> list[bytes]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):  # it exited while we looked
                found.append((entry / "cmdline").read_bytes())
    return found


def files_holding(root: Path, secret: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret in p.read_bytes()]


@pytest.mark.slow
def test_a_tracking_password_appears_in_no_output_process_or_store(project: Path) -> None:
    server = MlflowServer(project / "server")
    (project / "server").mkdir()
    server.start()
    try:
        url = server.uri.replace("http://", f"http://alice:{PASSWORD}@")
        # MLflow's own "View run ... at: URL" lines, which exptrack turns off, turned back on
        shown = {"MLFLOW_TRACKING_URI": url, "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "false"}
        search = start_search(project, "--trials", "2", env=shown)
        shown_in_ps: list[bytes] = []
        while search.poll() is None:  # the search and whatever it starts, for as long as it runs
            shown_in_ps += [c for c in command_lines() if PASSWORD.encode() in c]
            with contextlib.suppress(subprocess.TimeoutExpired):
                search.wait(0.2)
        out, err = search.communicate()
    finally:
        server.stop()
    assert search.returncode == 0, err
    assert [t.state.name for t in trials(project)] == ["COMPLETE", "COMPLETE"]
    assert f"View run trial-000 at: {server.uri}/#/experiments/" in out  # MLflow's line, password-free
    assert PASSWORD not in out + err
    assert shown_in_ps == []
    assert files_holding(project, PASSWORD.encode()) == []  # optuna.db, server.db, the artifacts
