"""`exp ui`: the MLflow UI as a child process over the tracking store a search wrote, the URLs
of each study's runs table and study run (`ui_links`), and a clean stop on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from exptrack import records
from exptrack.errors import UserError, redact
from exptrack.study_store import missing_sqlite_file
from exptrack.tracking import ui_links
from exptrack.tracking.tracker import resolve_tracking_uri

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 120.0  # a cold `mlflow server` on 2 busy cores takes ~10-30 s


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port} ({exc.strerror}); pass another --port") from exc


def server_command(tracking_uri: str, host: str, port: int) -> list[str]:
    """`mlflow server` over the same backend store. A local store keeps its artifacts where the
    search's client put them (`./mlruns` beside it, recorded per experiment as an absolute path),
    which the server reads directly; only experiments created in the UI use the root given here."""
    if tracking_uri.startswith(("http://", "https://", "databricks")):
        raise UserError(
            f"tracking URI {redact(tracking_uri)} is already a server: open it in a browser instead of exp ui"
        )
    root = Path("mlruns").resolve().as_uri()
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", tracking_uri,
        "--default-artifact-root", root,
        "--no-serve-artifacts",
        "--host", host,
        "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip


def study_urls(tracking_uri: str, base: str) -> list[tuple[str, str, str | None]]:
    """(study, runs-table URL, study-run URL) for every experiment a search created: the table
    opens on the study's saved view (or, for a study searched before views, sorted by its metric)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    urls = []
    for experiment in client.search_experiments(order_by=["creation_time DESC"]):
        if records.STUDY_TAG not in experiment.tags:
            continue
        parents = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`{records.ROLE_TAG}` = '{records.ROLE_STUDY}'",
            max_results=1,
        )
        tags = parents[0].data.tags if parents else {}
        if records.RUNS_VIEW_TAG in experiment.tags:
            table = ui_links.runs_view_url(base, experiment.experiment_id)
        else:
            maximize = tags.get(records.DIRECTION_TAG) != "minimize"
            table = ui_links.runs_url(base, experiment.experiment_id, tags.get(records.METRIC_TAG), maximize)
        study_run = (
            ui_links.run_url(base, experiment.experiment_id, parents[0].info.run_id) if parents else None
        )
        urls.append((experiment.name, table, study_run))
    return urls


def wait_until_up(process: subprocess.Popen[Any], base: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise UserError(f"mlflow server exited with code {process.returncode}: {redact(tail[0])}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{base}/health", timeout=2) as reply:
            if reply.status == 200:
                return
        time.sleep(0.3)
    raise UserError(f"mlflow server did not answer on {base} within {timeout:.0f} s; see {log}")


@contextlib.contextmanager
def running_server(
    tracking_uri: str | None, host: str, port: int, meanwhile: Callable[[str], Any] = lambda base: None
) -> Iterator[tuple[subprocess.Popen[Any], str, Any]]:
    """Start `mlflow server`, run `meanwhile(base URL)` while it boots (it takes 10-20 s), wait
    until it answers, yield (process, base URL, what `meanwhile` returned); always stop it."""
    uri = resolve_tracking_uri(tracking_uri)
    missing = missing_sqlite_file(uri)
    if missing:
        raise UserError(f"no MLflow store at {missing}; run exp search here first, or pass --tracking-uri")
    check_port_free(host, port)
    base = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    log = Path(tempfile.mkstemp(prefix="exptrack-ui-", suffix=".log")[1])
    with log.open("w") as sink:
        # Its own process group: Ctrl-C reaches us only, and we stop the server and its workers.
        process = subprocess.Popen(
            server_command(uri, host, port), stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        found = meanwhile(base)
        wait_until_up(process, base, log, START_TIMEOUT_S)
        yield process, base, found
    finally:
        stop(process)
        log.unlink(missing_ok=True)


def stop(process: subprocess.Popen[Any], grace: float = 10.0) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def serve(tracking_uri: str | None, host: str, port: int, say: Callable[[str], None]) -> int:
    """Run the UI until Ctrl-C (or SIGTERM); returns the server's exit code if it dies by itself.
    A tracking server already is the UI: its study pages are listed, nothing is started."""
    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):
        say(f"MLflow UI: {redact(uri)}  (the tracking server's own)")
        _list_studies(study_urls(uri, redact(uri).rstrip("/")), say)
        return 0
    if not is_loopback(host):
        say(f"warning: binding to {host}: anyone who can reach this machine can read and edit the runs")
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        urls = functools.partial(study_urls, resolve_tracking_uri(tracking_uri))
        with running_server(tracking_uri, host, port, urls) as (process, base, found):
            say(f"MLflow UI: {base}  (Ctrl-C stops it)")
            _list_studies(found, say)
            return process.wait()
    except KeyboardInterrupt:
        say("MLflow UI stopped")  # the server is down by now: running_server's exit stopped it
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def _list_studies(found: list[tuple[str, str, str | None]], say: Callable[[str], None]) -> None:
    for study, table, study_run in found:
        say(f"  {study}: {table}")
        if study_run:
            say(f"  {study} study run (dashboard.html under Artifacts): {study_run}")


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
