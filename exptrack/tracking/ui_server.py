"""`exp ui`: the MLflow UI as a child process over the tracking store a search wrote, the URLs
of each study's runs table and study run (`ui_links`), and a stop that comes whatever the moment
of the signal. The server runs under `ui_child`, so it never outlives exp ui, even one SIGKILLed.
"""

from __future__ import annotations

import contextlib
import importlib
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

from exptrack import processes, records
from exptrack.errors import UserError, first_line, redact
from exptrack.stores import backends
from exptrack.stores.url import parse, resolve_tracking
from exptrack.tracking import store_setup, ui_links

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 120.0  # a cold `mlflow server` on 2 busy cores takes ~10-30 s
STOP_GRACE_S = 10.0  # SIGTERM, then SIGKILL to the server's process group
SIGNAL_EXIT_CODES = (128 + signal.SIGINT, 128 + signal.SIGTERM)  # the shell's 130 and 143


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port_free(host: str, port: int) -> None:
    """A listener on the port is refused; connections a stopped server left in TIME_WAIT are not
    (SO_REUSEADDR, as the server's uvicorn binds: else the next `exp ui` failed for a minute)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port} ({exc.strerror}); pass another --port") from exc


def server_command(tracking_uri: str, host: str, port: int) -> list[str]:
    """`mlflow server` under `ui_child` (which stops it when exp ui dies). A local store keeps its
    artifacts where the search's client put them (`./mlruns` beside it, recorded per experiment as
    an absolute path), which the server reads directly; only experiments created in the UI use the
    root given here. The store URI itself goes through the environment (`server_environment`)."""
    if parse(tracking_uri).backend == "server" or parse(tracking_uri).scheme == "databricks":
        raise UserError(
            f"tracking URI {redact(tracking_uri)} is already a server: open it in a browser instead of exp ui"
        )
    root = Path("mlruns").resolve().as_uri()
    return [
        sys.executable, "-m", "exptrack.tracking.ui_child", str(os.getpid()), "--",
        "--default-artifact-root", root,
        "--no-serve-artifacts",
        "--host", host,
        "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip


def server_environment(tracking_uri: str) -> dict[str, str]:
    """The server's environment: the store URI, which may hold a database password, goes here and
    not on the command line, which `ps` shows to every user of the machine."""
    env = dict(os.environ)
    env["MLFLOW_BACKEND_STORE_URI"] = tracking_uri
    # MLflow's GenAI job runner (a runner and 7 huey consumer processes) serves no runs table
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return env


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


def listed_studies(tracking_uri: str, base: str) -> list[str]:
    """`study: URL` lines for the UI's banner; the links are a convenience, so a store that cannot
    be read gives one line saying so, and the UI serves on."""
    try:
        found = study_urls(tracking_uri, base)
    except Exception as exc:
        return [f"(studies not listed: {type(exc).__name__}: {first_line(exc)})"]
    lines = []
    for study, table, study_run in found:
        lines.append(f"{study}: {table}")
        if study_run:
            lines.append(f"{study} study run (dashboard.html under Artifacts): {study_run}")
    return lines


def wait_until_up(
    process: subprocess.Popen[Any], base: str, log: Path, timeout: float, stop: StopSignals | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stop:
            stop.check()
        if process.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise UserError(f"mlflow server exited with code {process.returncode}: {redact(tail[0])}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{base}/health", timeout=2) as reply:
            if reply.status == 200:
                return
        time.sleep(0.3)
    raise UserError(f"mlflow server did not answer on {base} within {timeout:.0f} s; see {log}")


def _check_serves_as_is(uri: str) -> None:
    """The server would create, or refuse, what is not a current MLflow store: say so first."""
    if not parse(uri).is_database:
        return
    why = store_setup.unreadable_mlflow(uri)
    if why == "new":
        raise UserError(f"no MLflow records in {redact(uri)} yet; run exp search with it first, or fix --tracking-uri")
    if why:
        raise UserError(f"MLflow store {redact(uri)} cannot be served as it is: {why}")


@contextlib.contextmanager
def running_server(
    tracking_uri: str | None,
    host: str,
    port: int,
    stop: StopSignals | None = None,
) -> Iterator[tuple[subprocess.Popen[Any], str]]:
    """Start `mlflow server`, wait until it answers, yield (process, base URL); always stop it.
    MLflow's client is imported while the server boots (10-20 s), for the study listing after it."""
    uri = resolve_tracking(tracking_uri)
    missing = parse(uri).missing_file()
    if missing:
        raise UserError(f"no MLflow store at {missing}; run exp search here first, or pass --tracking-uri")
    backends.check_store(uri, "MLflow tracking store", "--tracking-uri", write=False)
    _check_serves_as_is(uri)
    check_port_free(host, port)
    base = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    log = Path(tempfile.mkstemp(prefix="exptrack-ui-", suffix=".log")[1])
    process = None
    try:
        with log.open("w") as sink:
            # Its own process group: Ctrl-C reaches us only, and we stop the server and its workers.
            # stdin: a pipe only we write to; its EOF tells ui_child that we are gone.
            process = subprocess.Popen(
                server_command(uri, host, port), stdin=subprocess.PIPE, stdout=sink,
                stderr=subprocess.STDOUT, env=server_environment(uri), start_new_session=True,
            )  # fmt: skip
        importlib.import_module("mlflow.tracking")
        if stop:
            stop.check()
        wait_until_up(process, base, log, START_TIMEOUT_S, stop)
        yield process, base
    finally:
        if process is not None:
            terminate(process)
        log.unlink(missing_ok=True)


def terminate(process: subprocess.Popen[Any], grace: float = STOP_GRACE_S) -> None:
    """SIGTERM to the server's process group, SIGKILL after `grace` seconds; bounded either way."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(grace)  # SIGKILL cannot be refused; a process stuck in the kernel can
    if process.stdin:
        process.stdin.close()


class StopRequested(KeyboardInterrupt):
    """SIGINT or SIGTERM asked exp ui to stop."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """SIGINT and SIGTERM stop the UI: the first unwinds at once (and is remembered, in case library
    code swallowed the exception: every wait checks it); a second exits at once (the server follows,
    see `ui_child`). Installed explicitly: started as a background job of a script, Python leaves
    SIGINT ignored as it found it, and Ctrl-C or `kill -INT` never stopped `exp ui`."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._handled = processes.stop_signals_handled(self._handle)

    def __enter__(self) -> StopSignals:
        self._handled.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._handled.__exit__(None, None, None)

    def _handle(self, signum: int, frame: Any) -> None:
        self.received.append(signum)
        if len(self.received) > 1:
            os._exit(128 + signum)
        raise StopRequested(signum)

    def check(self) -> None:
        if self.received:
            raise StopRequested(self.received[0])


def serve(tracking_uri: str | None, host: str, port: int, say: Callable[[str], None]) -> int:
    """Run the UI until SIGINT or SIGTERM (returns 130 or 143) or until the server exits by itself
    (returns its exit code). A tracking server already is the UI: its study pages are listed,
    nothing is started."""
    uri = resolve_tracking(tracking_uri)
    if parse(uri).backend == "server":
        say(f"MLflow UI: {redact(uri)}  (the tracking server's own)")
        for line in listed_studies(uri, redact(uri).rstrip("/")):
            say(f"  {line}")
        return 0
    if not is_loopback(host):
        say(f"warning: binding to {host}: anyone who can reach this machine can read and edit the runs")
    with StopSignals() as stop:
        try:
            # the studies are read once the server answers: it creates a new database store's tables
            # at start, and a reader would create them too (the two collided, IntegrityError)
            with running_server(uri, host, port, stop) as (process, base):
                say(f"MLflow UI: {base}  (Ctrl-C stops it)")
                for line in listed_studies(uri, base):
                    say(f"  {line}")
                while process.poll() is None:
                    stop.check()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(0.5)
                return process.returncode
        except StopRequested:
            pass
    say("MLflow UI stopped")  # the server is down by now: running_server's exit stopped it
    return 128 + stop.received[0]
