"""Fault-injection helpers for the reliability tests: the faulty study, `exp search` as a real
background process, waiting on the Optuna store, and a real `mlflow server` that can be stopped
and started again on the same port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
from mlflow import MlflowClient

from tests.conftest import REPO, TINY, exp_env

FAULTY = str(REPO / "tests" / "studies" / "faulty.py")
# Smaller still than TINY (the faulty study already has weights=none): ~0.8 s a trial on one core.
SMALL = [*TINY[:-2], "--set", "subset=32", "--set", "image_size=8"]


def start_search(
    cwd: Path,
    *args: str,
    faults: str = "",
    gate_dir: Path | None = None,
    env: dict[str, str] | None = None,
    prefix: tuple[str, ...] = (),
) -> subprocess.Popen[str]:
    """`exp search FAULTY ARGS` as a background process, faults injected through the environment;
    `env` adds variables, `prefix` wraps the command (e.g. in `unshare` for another host)."""
    environment = exp_env(cwd)
    environment["EXPTRACK_FAULTS"] = faults
    environment["OMP_NUM_THREADS"] = "1"  # 2 cores shared by the test and its processes
    if gate_dir is not None:
        environment["EXPTRACK_GATE_DIR"] = str(gate_dir)
    environment.update(env or {})
    return subprocess.Popen(
        [*prefix, sys.executable, "-m", "exptrack", "search", FAULTY, *SMALL, *args],
        cwd=cwd,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_search(
    cwd: Path, *args: str, faults: str = "", timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    process = start_search(cwd, *args, faults=faults, env=env)
    out, err = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def wait_for(
    condition: Callable[[], bool],
    what: str,
    timeout: float = 120,
    process: subprocess.Popen[str] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"exp exited {process.returncode} before {what}:\n{out}\n{err}")
        try:
            if condition():
                return
        except (KeyError, IndexError, ValueError, optuna.exceptions.OptunaError):
            pass  # the store is not written yet
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def trials(cwd: Path, name: str = "faulty") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{cwd}/optuna.db").get_trials()


def trial_state(cwd: Path, number: int, name: str = "faulty") -> str:
    found = [t for t in trials(cwd, name) if t.number == number]
    return found[0].state.name if found else "ABSENT"


def wait_running(cwd: Path, number: int, process: subprocess.Popen[str]) -> None:
    """Until trial `number` is RUNNING with its MLflow run open (so a fault hits it mid-training)."""

    def ready() -> bool:
        found = [t for t in trials(cwd) if t.number == number]
        return bool(found) and found[0].state.name == "RUNNING" and "config" in found[0].user_attrs

    wait_for(ready, f"trial {number} to run", process=process)


def send(process: subprocess.Popen[str], signum: int) -> None:
    os.kill(process.pid, signum)


def runs_by_trial(tracking_uri: str, experiment: str = "faulty") -> dict[int, list]:
    """Trial runs by number. Pass an absolute sqlite URI: MLflow caches a store per URI string,
    so a relative one would keep reading the first test's file."""
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id]) if found else []
    grouped: dict[int, list] = {}
    for run in runs:
        if run.data.tags.get("exptrack.role") == "trial":
            grouped.setdefault(int(run.data.tags["exptrack.trial"]), []).append(run)
    return grouped


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MlflowServer:
    """A real `mlflow server` on a loopback port, restartable on the same port: over a sqlite file
    in `root` unless `backend` names another store; with `serve_artifacts`, clients write their
    artifacts over HTTP (what workers on other machines need)."""

    def __init__(self, root: Path, backend: str | None = None, serve_artifacts: bool = False) -> None:
        self.root, self.port = root, free_port()
        self.backend = backend or f"sqlite:///{root}/server.db"
        self.serve_artifacts = serve_artifacts
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> None:
        mlflow = Path(sys.executable).with_name("mlflow")
        command = [
            str(mlflow), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            "--backend-store-uri", self.backend, "--artifacts-destination", str(self.root / "artifacts"),
            *(["--serve-artifacts"] if self.serve_artifacts else []),
        ]  # fmt: skip
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - the server process owns it
        # MLflow's GenAI job runner (a runner and 7 huey consumers) serves nothing the tests use
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.process = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True, env=env)
        wait_for(self._answers, f"mlflow server on port {self.port}", timeout)

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError((self.root / "server.log").read_text()[-3000:])
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                pass
        except OSError:
            return False
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the server and every process it started (it runs in a session of its own)."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        wait_for(lambda: not _port_open(self.port), f"port {self.port} to close", 30)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# Runs each case through the CLI's real entry point (`exptrack.cli.main`) in its own working
# directory, all in one interpreter: importing torch and MLflow once instead of per case.
# `run_case(args)` runs one `exp ARGS` through the real entry point, in this interpreter, and
# returns its exit code and output; test_hostile_inputs' long-lived loop uses it too.
RUN_CASE = r"""
import contextlib, io, json, os, sys
from exptrack import cli


def run_case(args):
    out, err, code = io.StringIO(), io.StringIO(), 0
    sys.argv = ["exp", *args]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli.main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}
"""
_BATCH = RUN_CASE + r"""
results = []
for case in json.load(sys.stdin):
    os.chdir(case["cwd"])
    results.append(run_case(case["args"]))
print(json.dumps(results))
"""


# Root writes any file whatever its mode; without these capabilities it is bound by the modes
# like any user, so a read-only store is read-only for real.
_ROOT_OVERRIDES = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


def run_cli_batch(
    cases: list[tuple[Path, list[str]]],
    timeout: float = 300,
    env: dict[str, str] | None = None,
    without_root_override: bool = False,
) -> list[subprocess.CompletedProcess[str]]:
    """(cwd, args) cases through `exp`'s entry point in one process; a result per case, in order."""
    import json

    env = {**exp_env(cases[0][0]), **(env or {})}
    env["OMP_NUM_THREADS"] = "1"
    env["COLUMNS"] = "400"  # one-line messages stay on one line
    payload = json.dumps([{"cwd": str(cwd), "args": args} for cwd, args in cases])
    prefix = _ROOT_OVERRIDES if without_root_override and os.geteuid() == 0 else []
    done = subprocess.run(
        [*prefix, sys.executable, "-c", _BATCH],
        input=payload,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    return [
        subprocess.CompletedProcess(args, r["code"], r["stdout"], r["stderr"])
        for (_, args), r in zip(cases, results, strict=True)
    ]
