"""What the stores cost a trial when many workers share a study: sqlite files vs PostgreSQL with an
MLflow tracking server over it, 1 worker vs 16, plus the time from a worker's death to its retry.

    python benchmarks/scale.py                      # sqlite and PostgreSQL, 1 and 16 workers
    python benchmarks/scale.py --workers 1 4 --trials 32 --backends sqlite
    python benchmarks/scale.py --trial-kind sleep --workers 1 4 16 64 --forked   # the stores alone

Each worker is its own process running `run_search` (the code `exp search` runs) on a study of
very short trials: synthetic 8 px images, 64 of them, one epoch of a ResNet-18 from scratch.
`--trial-kind sleep` keeps every Optuna and MLflow call of a trial (ask, sampling, the run with
its params, config and setup facts, the epoch's metrics and report, the tell, the figures and the
close) but its `fit` sleeps `--sleep` seconds an epoch instead of training: with trials that use
no CPU, the store time is the stores', not the workers' contention for cores. `--forked` starts
the workers as forks of one process that imported everything and ran one warm-up trial (a worker
that imports torch, Optuna and MLflow itself holds ~460 MB of private memory, a fork ~190 MB once
running). Workers start their trials together, once all have imported what they need. Besides
the store time, each line gives the CPU a trial cost the worker and, on PostgreSQL, the servers.
"Store time" is a trial's wall time from ask to its closed MLflow run minus the time inside `fit`:
the ask under the store lock, sampling, the MLflow run with its params and config, the per-epoch
metrics, the tell and the run's close. The PostgreSQL arms start a throw-away server as the
`postgres` user and `mlflow server` over it (as the tests do; root and Debian's postgresql needed).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
TINY = {"dataset": "synthetic:64,4", "image_size": 8, "epochs": 1, "subset": 64}
KINDS = ("compute", "sleep")


@dataclasses.dataclass
class WorkerArgs:
    """What a worker process is told on its command line (as JSON)."""

    storage: str
    tracking: str
    trials: int
    out: str  # its records, as JSON; forked copies add `-<k>` to the name
    grace: int
    kind: str = "compute"
    sleep: float = 1.0  # seconds an epoch of a sleeping trial
    go: str = ""  # a file: once it exists, start (after writing `<go>.<pid>.ready`); "" starts at once
    copies: int = 1  # >1: fork this many workers after the imports


def sleeping_fit(seconds: float):  # type: ignore[no-untyped-def]
    """`fit` for the sleep kind: the reporter gets the same calls as from a real `fit` (setup facts,
    then each epoch's metrics, which log to MLflow and report to Optuna's pruner) and the result
    the same figures (`Profile.summary`, the cache's), but each epoch is a `time.sleep`. The
    metrics are a fixed function of the sampled config, so TPE and the pruner have values to use."""
    import torch

    from exptrack import records
    from exptrack.training import fit, profiling

    def fit_asleep(config, reporter=None, *_, **__):  # type: ignore[no-untyped-def]  # as fit.fit is called
        reporter = reporter or fit.NullReporter()
        memory = profiling.TrialMemory(torch.device("cpu"))
        reporter.on_setup(_sleeping_facts(config))
        profile, history = profiling.Profile(torch.device("cpu")), []
        score = random.Random(json.dumps(config.flat_params(), sort_keys=True)).random()
        for epoch in range(1, config.epochs + 1):
            time.sleep(seconds)
            profile.epoch_seconds.append(seconds)
            profile.train_seconds += seconds
            metrics = {
                "train_loss": 2.0 - score * epoch / config.epochs,
                "val_loss": 2.0 - score,
                "val_accuracy": score * epoch / config.epochs,
            }
            history.append({"epoch": epoch, **metrics})
            if reporter.on_epoch(epoch, metrics):
                break
        figures = {
            **profile.summary(0, 0, memory),
            records.FEATURE_CACHE: "off:sleeping trial",
            records.FEATURE_CACHE_SAVED: 0.0,
        }
        stopped = len(history) < config.epochs
        return fit.FitResult(history, figures, stopped, config.weights, torch.nn.Identity())

    return fit_asleep


def _sleeping_facts(config) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """The setup facts a real `fit` gives its reporter (they become the run's tags)."""
    from exptrack import records

    return {
        "weights_source": config.weights,
        "device": "cpu",
        "batching": "Sleeping",
        records.DATASET_FACT: config.dataset,
        records.DATASET_DIGEST_FACT: "0" * 16,
        "train_samples": 64,
        "val_samples": 16,
        "test_samples": 16,
        "num_classes": 4,
        "trainable_params": 0,
        "frozen_params": 0,
    }


class StoreCalls:
    """What this worker process asks of the stores, counted as it happens: each HTTP request to the
    tracking server by method and endpoint (`requests.Session.request`, which MLflow's REST client
    and its artifact uploads both go through), each Optuna storage call made from outside the
    storage (`optuna_private.storage_calls()`: each is one transaction or more; the heartbeat
    thread's included) and each SQL statement the Optuna database is sent. Wrappers that count and
    pass through: every call still reaches the real store."""

    def __init__(self) -> None:
        import collections
        import threading

        self.counts: collections.Counter[str] = collections.Counter()
        self.lock, self.depth = threading.Lock(), threading.local()

    @classmethod
    def installed(cls) -> StoreCalls:
        """The process's counter, installed once (the warm-up's worker and the fork's share it)."""
        global _CALLS
        if _CALLS is None:
            _CALLS = cls()
            _CALLS.install()
        return _CALLS

    def add(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n

    @contextlib.contextmanager
    def cpu(self, kind: str) -> Iterator[None]:
        """The calling thread's CPU inside the block, in µs, under `cpu <kind>`."""
        start = time.thread_time_ns()
        try:
            yield
        finally:
            self.add(f"cpu {kind}", (time.thread_time_ns() - start) // 1000)

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.counts)

    def install(self) -> None:
        import requests
        from sqlalchemy import event
        from sqlalchemy.engine import Engine
        from sqlalchemy.pool import Pool

        from exptrack.stores import optuna_private
        from exptrack.stores.optuna_storage import ResilientStorage

        plain_request = requests.Session.request

        def request(session, method, url, *args, **kwargs):  # type: ignore[no-untyped-def]
            self.add(f"http {method.upper()} {_endpoint(str(url))}")
            with self.cpu("http"):
                return plain_request(session, method, url, *args, **kwargs)

        requests.Session.request = request  # type: ignore[method-assign]
        batched = [
            n
            for n in ("set_trial_user_attrs", "set_trial_system_attrs", "set_trial_params")
            if hasattr(ResilientStorage, n)
        ]  # exptrack's own
        for name in [*optuna_private.storage_calls(), *batched]:
            if name != "check_trial_is_updatable":  # a check of a state already read: no round trip
                setattr(ResilientStorage, name, self._counted(name, getattr(ResilientStorage, name)))

        @event.listens_for(Engine, "before_cursor_execute")
        def statement(conn, cursor, text, *_):  # type: ignore[no-untyped-def]
            if "optuna" in str(conn.engine.url.database):
                self.add(f"sql {text.split(None, 1)[0].upper()}")

        @event.listens_for(Engine, "commit")
        def commit(conn):  # type: ignore[no-untyped-def]
            if "optuna" in str(conn.engine.url.database):
                self.add("sql COMMIT")

        @event.listens_for(Engine, "rollback")
        def rollback(conn):  # type: ignore[no-untyped-def]
            if "optuna" in str(conn.engine.url.database):
                self.add("sql ROLLBACK")

        @event.listens_for(Pool, "checkout")
        def checkout(dbapi_connection, record, proxy):  # type: ignore[no-untyped-def]
            self.add("sql checkout (pre-ping)")  # one ping round trip per checkout (pool_pre_ping)

    def _counted(self, name: str, method):  # type: ignore[no-untyped-def]
        import functools

        from exptrack.stores import optuna_storage

        @functools.wraps(method)
        def call(storage, *args, **kwargs):  # type: ignore[no-untyped-def]
            held = getattr(getattr(optuna_storage, "_holding", None), "held", None)
            if held is not None and held.takes(storage, name, args):  # held: written by set_trial_params
                return method(storage, *args, **kwargs)
            depth = getattr(self.depth, "n", 0)
            if depth == 0:  # a storage method calling another is one round trip of its caller's
                self.add(f"optuna {name}")
            self.depth.n = depth + 1
            try:
                with self.cpu(f"optuna {name}") if depth == 0 else contextlib.nullcontext():
                    return method(storage, *args, **kwargs)
            finally:
                self.depth.n = depth

        return call


_CALLS: StoreCalls | None = None


def calls_per_trial(records: list[dict[str, Any]]) -> dict[str, float]:
    """Each call's mean count per trial: the trial's own (ask to closed run) plus the loop's
    between it and the next trial (over the trials that have a next one)."""
    means: dict[str, float] = {}
    for part in ("calls", "between"):
        having = [r[part] for r in records if part in r]
        for key in {k for counts in having for k in counts}:
            means[key] = means.get(key, 0.0) + sum(c.get(key, 0) for c in having) / len(having)
    return dict(sorted(means.items()))


def calls_line(means: dict[str, float]) -> str:
    """Per trial: HTTP requests, Optuna storage calls, SQL statements, the worker's CPU in the
    first two; then each call (the CPU of each Optuna call in ms)."""
    total = {
        kind: sum(v for k, v in means.items() if k.startswith(kind)) for kind in ("http", "optuna", "sql")
    }
    cpu = {
        kind: sum(v for k, v in means.items() if k.startswith(f"cpu {kind}")) / 1000
        for kind in ("http", "optuna")
    }
    each = ", ".join(
        f"{k} {v:.2f}" + (f" ({means[f'cpu {k}'] / 1000:.1f} ms)" if f"cpu {k}" in means else "")
        for k, v in means.items()
        if not k.startswith("cpu")
    )
    return (
        f"per trial: {total['http']:.1f} HTTP requests ({cpu['http']:.0f} ms of the worker's CPU in them), "
        f"{total['optuna']:.1f} Optuna storage calls ({cpu['optuna']:.0f} ms), "
        f"{total['sql']:.1f} SQL statements to the Optuna db ({each})"
    )


def _endpoint(url: str) -> str:
    """`/api/2.0/mlflow/runs/log-batch` -> `runs/log-batch`; an artifact's upload -> `artifacts`."""
    from urllib.parse import urlparse

    path = urlparse(url).path
    if "/mlflow-artifacts/" in path:
        return "mlflow-artifacts (upload)"
    return path.split("/mlflow/", 1)[-1]


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def worker_process(args: WorkerArgs) -> None:
    """Import what a worker needs, fork `copies - 1` more of it, wait for `go`, then `worker`."""
    if args.copies > 1:
        _warm_up(args)
    index, children = 0, []
    for k in range(1, args.copies):
        pid = os.fork()
        if pid == 0:
            index, children = k, []
            break
        children.append(pid)
    if args.go:
        Path(f"{args.go}.{os.getpid()}.ready").touch()
        while not Path(args.go).exists():
            time.sleep(0.01)
    out = Path(args.out)
    out = out if args.copies == 1 else out.with_name(f"{out.stem}-{index}.json")
    try:
        worker(dataclasses.replace(args, out=str(out)))
    except BaseException:
        if index:
            os._exit(1)
        raise
    if index:
        os._exit(0)
    failed = [pid for pid in children if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0]
    assert not failed, f"forked workers failed: {failed}"


def _warm_up(args: WorkerArgs) -> None:
    """One sleeping trial in throw-away sqlite stores before the fork, so the copies share what a
    search imports on its way (1,760 modules: MLflow's stores, SQLAlchemy, pandas...; 2.4 CPU-s a
    worker, measured) instead of each importing it. Without it, 64 forks had not created a study
    5 minutes after their start (load average 68). The forks leave through `os._exit`, so the
    warm-up's idle writer thread, absent in them, is never joined."""
    with tempfile.TemporaryDirectory(prefix="scale-warm-up-") as folder:
        stores = sqlite_stores(Path(folder))
        worker(
            WorkerArgs(stores["storage"], stores["tracking"], 1, f"{folder}/r.json", args.grace, "sleep", 0.0)
        )


def worker(args: WorkerArgs) -> None:
    """One worker: the search loop with `fit` and each trial timed, written to `args.out`."""
    from exptrack.search import loop
    from exptrack.search.options import SearchOptions
    from exptrack.search.run import run_search
    from exptrack.training import fit

    records: list[dict[str, Any]] = []
    fit_seconds, fit_cpu = [0.0], [0.0]
    calls = StoreCalls.installed()
    ended: list[dict[str, int]] = []  # the counts when the previous trial ended
    real_fit = fit.fit
    plain_fit = sleeping_fit(args.sleep) if args.kind == "sleep" else real_fit
    plain_run_one = loop.run_one

    def timed_fit(*args, **kwargs):  # type: ignore[no-untyped-def]
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return plain_fit(*args, **kwargs)
        finally:
            fit_seconds[0], fit_cpu[0] = time.perf_counter() - start, time.process_time() - cpu

    def timed_run_one(*args, **kwargs):  # type: ignore[no-untyped-def]
        fit_seconds[0] = fit_cpu[0] = 0.0
        counted = calls.snapshot()
        if ended and records:  # the loop's own calls between two trials go to the one before
            records[-1]["between"] = _delta(counted, ended[-1])
        start, cpu = time.perf_counter(), time.process_time()
        outcome = plain_run_one(*args, **kwargs)
        if outcome is not None:
            wall = time.perf_counter() - start
            store_cpu = time.process_time() - cpu - fit_cpu[0]  # all this process's threads
            ended.append(calls.snapshot())
            records.append(
                {
                    "start": time.time() - wall, "wall": wall, "fit": fit_seconds[0], "cpu": store_cpu,
                    "calls": _delta(ended[-1], counted),
                }
            )  # fmt: skip
        return outcome

    fit.fit, loop.run_one = timed_fit, timed_run_one
    options = SearchOptions(
        trials=args.trials,
        storage=args.storage,
        tracking_uri=args.tracking,
        study_name="scale",
        grace_period=args.grace,
        seed=None,
    )
    try:
        run_search(REPO / "studies" / "synthetic.py", options, TINY, warn=lambda _: None)
    finally:  # the warm-up's worker leaves the real ones to the forks
        fit.fit, loop.run_one = real_fit, plain_run_one
    Path(args.out).write_text(json.dumps(records))


def start_workers(
    count: int, template: WorkerArgs, folder: Path, forked: bool = False, prefix: list[str] | None = None
) -> list[subprocess.Popen[bytes]]:
    """`count` worker processes, or with `forked` one process that forks into `count` workers."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "TMPDIR": str(folder)}
    copies = count if forked else 1
    return [
        subprocess.Popen(
            [
                *(prefix or []),
                sys.executable,
                __file__,
                "--worker",
                json.dumps(
                    dataclasses.asdict(
                        dataclasses.replace(
                            template,
                            out=str(folder / f"worker-{i}-{time.monotonic_ns()}.json"),
                            copies=copies,
                        )
                    )
                ),
            ],
            cwd=folder,
            env=env,
            stderr=subprocess.DEVNULL,
        )
        for i in range(count // copies)
    ]


def _release(processes: list[subprocess.Popen[bytes]], go: Path, workers: int) -> None:
    """Start the workers' trials together, once every worker has done its imports."""
    while len(list(go.parent.glob(f"{go.name}.*.ready"))) < workers:
        assert all(p.poll() is None for p in processes), "a worker died before its first trial"
        time.sleep(0.05)
    go.touch()


def measure(
    backend: str,
    workers: int,
    template: WorkerArgs,
    folder: Path,
    forked: bool,
    count_connections=None,
    servers_cpu=None,
) -> str:
    """Run `workers` workers to `template.trials` trials; one line of figures, and a check nothing
    was lost. `count_connections()`, sampled while they run, gives (Optuna's, MLflow's) open
    connections; `servers_cpu()` the CPU seconds PostgreSQL and the tracking server have used so
    far (two figures). The wall
    time counts from the moment all workers were ready."""
    import optuna
    from mlflow import MlflowClient

    trials, go = template.trials, folder / "go"
    processes = start_workers(workers, dataclasses.replace(template, go=str(go)), folder, forked)
    _release(processes, go, workers)
    started, load = time.monotonic(), os.getloadavg()[0]
    servers_before = servers_cpu() if servers_cpu else (0.0, 0.0)
    peak = (0, 0)
    while any(p.poll() is None for p in processes):
        if count_connections is not None:
            peak = tuple(map(max, zip(peak, count_connections(), strict=True)))  # type: ignore[assignment]
        time.sleep(0.2)
    assert all(p.returncode == 0 for p in processes), f"a worker failed ({backend})"
    wall = time.monotonic() - started
    servers = None
    if servers_cpu:
        servers = [
            (after - before) / trials for after, before in zip(servers_cpu(), servers_before, strict=True)
        ]
    records = [r for path in folder.glob("worker-*.json") for r in json.loads(path.read_text())]
    store = [r["wall"] - r["fit"] for r in records]
    span = max(r["start"] + r["wall"] for r in records) - min(r["start"] for r in records)
    study = optuna.load_study(study_name="scale", storage=template.storage)
    states = [t.state.name for t in study.trials]
    client = MlflowClient(template.tracking)
    experiment = client.get_experiment_by_name("scale")
    runs = client.search_runs([experiment.experiment_id], "tags.`exptrack.role` = 'trial'", max_results=5000)
    finished = sum(r.info.status == "FINISHED" for r in runs)
    lost = f"{states.count('COMPLETE')}/{trials} COMPLETE, {finished} runs FINISHED"
    return (
        f"{backend:10} {workers:2} workers: store time per trial median {1000 * statistics.median(store):6.0f} ms, "
        f"p90 {1000 * sorted(store)[int(0.9 * len(store))]:6.0f} ms, "
        f"of it the worker's CPU {1000 * statistics.median(r['cpu'] for r in records):4.0f} ms; fit median {statistics.median(r['fit'] for r in records):.2f} s; "
        f"{trials / span:5.2f} trials/s while trials ran ({wall:.0f} s); {lost}"
        + (f"; peak connections: Optuna db {peak[0]}, MLflow db {peak[1]}" if count_connections else "")
        + (
            f"; servers' CPU per trial {1000 * sum(servers):.0f} ms (PostgreSQL {1000 * servers[0]:.0f}, "
            f"mlflow server {1000 * servers[1]:.0f})"
            if servers is not None
            else ""
        )
        + f"; load average {load:.1f} at start, {os.getloadavg()[0]:.1f} at end"
        + f"\n{'':10} {calls_line(calls_per_trial(records))}"
    )


def _tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children so far: theirs while they live, and those the
    kernel added to it when it reaped them (PostgreSQL's backends end with their connections)."""
    import psutil

    root = psutil.Process(pid)
    total = sum(root.cpu_times()[:4])  # user, system, children's user, children's system
    for child in root.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += sum(child.cpu_times()[:2])
    return total


def death_to_retry(stores: dict[str, str], folder: Path, other_host: bool, grace: int) -> str:
    """Two workers; one is SIGKILLed in the middle of a trial: seconds until that trial's
    parameters start again as its retry (`retry_of`)."""
    prefix = ["unshare", "--uts", "sh", "-c", 'hostname far-away && exec "$@"', "sh"] if other_host else []
    template = WorkerArgs(stores["storage"], stores["tracking"], 8, "", grace)
    doomed = start_workers(1, template, folder, prefix=prefix)[0]
    survivor = start_workers(1, template, folder)[0]
    victim = _wait(
        lambda trials: [t for t in trials if t.state.name == "RUNNING" and _pid(t) == doomed.pid], stores
    )
    doomed.send_signal(signal.SIGKILL)
    killed_at = time.time()
    doomed.wait()
    number = victim[0].number
    retry = _wait(  # queued first (WAITING, no start yet), then asked by the survivor
        lambda trials: [
            t for t in trials if t.user_attrs.get("retry_of") == number and t.datetime_start is not None
        ],
        stores,
    )
    assert survivor.wait() == 0
    seconds = retry[0].datetime_start.timestamp() - killed_at
    where = f"another host (heartbeat, --grace-period {grace})" if other_host else "the same host (pid check)"
    return f"worker SIGKILLed on {where}: its trial retried {seconds:.1f} s later"


def _pid(trial) -> int | None:  # type: ignore[no-untyped-def]
    worker = str(trial.user_attrs.get("worker", "")).split(":")
    return int(worker[1]) if len(worker) > 1 and "config" in trial.user_attrs else None


def _wait(found, stores: dict[str, str]):  # type: ignore[no-untyped-def]
    """Poll the study until `found(trials)` is non-empty; return it."""
    import optuna

    while True:
        try:
            hits = found(optuna.load_study(study_name="scale", storage=stores["storage"]).trials)
        except KeyError:  # the study is not created yet
            hits = []
        if hits:
            return hits
        time.sleep(0.02)


def sqlite_stores(folder: Path) -> dict[str, str]:
    return {"storage": f"sqlite:///{folder}/optuna.db", "tracking": f"sqlite:///{folder}/mlflow.db"}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 16])  # none: the deaths only
    parser.add_argument("--trials", type=int, help="trials per run (default: 64, or 4 per worker if more)")
    parser.add_argument(
        "--backends", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"]
    )
    parser.add_argument("--grace", type=int, default=6, help="--grace-period of the death-to-retry runs")
    parser.add_argument("--trial-kind", choices=KINDS, default="compute", help="sleep: trials that sleep")
    parser.add_argument("--sleep", type=float, default=1.0, help="seconds an epoch of a sleeping trial")
    parser.add_argument("--forked", action="store_true", help="workers forked from one process")
    parser.add_argument("--no-deaths", action="store_true", help="skip the death-to-retry runs")
    args = parser.parse_args()
    kind = f"{args.trial_kind} ({args.sleep:g} s an epoch)" if args.trial_kind == "sleep" else "compute"
    lines = [
        f"{os.cpu_count()} cores; trials: {TINY}, {kind}; workers {'forked' if args.forked else 'started'}"
    ]
    for backend in args.backends:
        server = None
        if backend == "postgres":
            from tests.pgserver import MlflowPgServer, PostgresServer

            # up to 5 connections a worker (docs/scaling.md), and the servers' and our own
            postgres = PostgresServer(max_connections=max(300, 5 * max(args.workers or [0]) + 100))
            postgres.start()
        try:
            # a fresh pair of stores for each run: a finished study would leave a new worker nothing to do
            deaths = ["death", "death-far"] if backend == "postgres" else ["death"]
            deaths = [] if args.no_deaths else deaths
            for count in [*args.workers, *deaths]:
                folder = Path(tempfile.mkdtemp(prefix=f"scale-{backend}-"))
                if backend == "postgres":
                    name = f"run_{count}_{time.monotonic_ns()}"
                    server = MlflowPgServer(postgres.create_database(f"mlflow_{name}"), folder / "artifacts")
                    server.start()
                    stores = {"storage": postgres.create_database(f"optuna_{name}"), "tracking": server.uri}
                else:
                    stores = sqlite_stores(folder)
                if count in deaths:
                    far = count == "death-far"  # on another host: only the heartbeat can tell
                    lines.append(f"{backend:10} {death_to_retry(stores, folder, far, args.grace)}")
                else:
                    counter = servers = None
                    if backend == "postgres":
                        optuna_db, mlflow_db = f"optuna_{name}", f"mlflow_{name}"

                        def counter() -> tuple[int, int]:
                            return postgres.connections(optuna_db), postgres.connections(mlflow_db)  # noqa: B023

                        def servers() -> tuple[float, float]:
                            return _tree_cpu(postgres.postmaster_pid()), _tree_cpu(server.process.pid)  # noqa: B023

                    trials = args.trials or max(64, 4 * int(count))  # a few trials each, not just the first
                    template = WorkerArgs(
                        stores["storage"], stores["tracking"], trials, "", 180, args.trial_kind, args.sleep
                    )
                    lines.append(
                        measure(backend, int(count), template, folder, args.forked, counter, servers)
                    )
                print(lines[-1], flush=True)
                if server is not None:
                    server.stop()
                    server = None
        finally:  # nothing left running, whatever failed
            if server is not None:
                server.stop()
            if backend == "postgres":
                postgres.stop()
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_process(WorkerArgs(**json.loads(sys.argv[2])))
    else:
        main()
