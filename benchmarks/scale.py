"""What the stores cost a trial when many workers share a study: sqlite files vs PostgreSQL with an
MLflow tracking server over it, 1 worker vs 16, plus the time from a worker's death to its retry.

    python benchmarks/scale.py                      # sqlite and PostgreSQL, 1 and 16 workers
    python benchmarks/scale.py --workers 1 4 --trials 32 --backends sqlite

Each worker is its own process running `run_search` (the code `exp search` runs) on a study of
very short trials: synthetic 8 px images, 64 of them, one epoch of a ResNet-18 from scratch.
"Store time" is a trial's wall time from ask to its closed MLflow run minus the time inside `fit`:
the ask under the store lock, sampling, the MLflow run with its params and config, the per-epoch
metrics, the tell and the run's close. The PostgreSQL arms start a throw-away server as the
`postgres` user and `mlflow server` over it (as the tests do; root and Debian's postgresql needed).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
TINY = {"dataset": "synthetic:64,4", "image_size": 8, "epochs": 1, "subset": 64}


def worker(storage: str, tracking: str, trials: int, out: Path, grace: int) -> None:
    """One worker process: the search loop with `fit` and each trial timed, written to `out`."""
    from exptrack.search import loop
    from exptrack.search.options import SearchOptions
    from exptrack.search.run import run_search
    from exptrack.training import fit

    records: list[dict[str, float]] = []
    fit_seconds = [0.0]
    plain_fit, plain_run_one = fit.fit, loop.run_one

    def timed_fit(*args, **kwargs):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            return plain_fit(*args, **kwargs)
        finally:
            fit_seconds[0] = time.perf_counter() - start

    def timed_run_one(*args, **kwargs):  # type: ignore[no-untyped-def]
        fit_seconds[0] = 0.0
        start = time.perf_counter()
        outcome = plain_run_one(*args, **kwargs)
        if outcome is not None:
            wall = time.perf_counter() - start
            records.append({"start": time.time() - wall, "wall": wall, "fit": fit_seconds[0]})
        return outcome

    fit.fit, loop.run_one = timed_fit, timed_run_one
    options = SearchOptions(
        trials=trials,
        storage=storage,
        tracking_uri=tracking,
        study_name="scale",
        grace_period=grace,
        seed=None,
    )
    run_search(REPO / "studies" / "synthetic.py", options, TINY, warn=lambda _: None)
    out.write_text(json.dumps(records))


def start_workers(
    count: int,
    storage: str,
    tracking: str,
    trials: int,
    folder: Path,
    grace: int,
    prefix: list[str] | None = None,
) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "TMPDIR": str(folder)}
    return [
        subprocess.Popen(
            [
                *(prefix or []),
                sys.executable,
                __file__,
                "--worker",
                storage,
                tracking,
                str(trials),
                str(folder / f"worker-{i}-{time.monotonic_ns()}.json"),
                str(grace),
            ],
            cwd=folder,
            env=env,
            stderr=subprocess.DEVNULL,
        )
        for i in range(count)
    ]


def measure(
    backend: str, workers: int, trials: int, stores: dict[str, str], folder: Path, count_connections=None
) -> str:
    """Run `workers` workers to `trials` trials; one line of figures, and a check nothing was lost.
    `count_connections()`, sampled while they run, gives (Optuna's, MLflow's) open connections."""
    import optuna
    from mlflow import MlflowClient

    started = time.monotonic()
    processes = start_workers(workers, stores["storage"], stores["tracking"], trials, folder, 180)
    peak = (0, 0)
    while any(p.poll() is None for p in processes):
        if count_connections is not None:
            peak = tuple(map(max, zip(peak, count_connections(), strict=True)))  # type: ignore[assignment]
        time.sleep(0.2)
    assert all(p.returncode == 0 for p in processes), f"a worker failed ({backend})"
    wall = time.monotonic() - started
    records = [r for path in folder.glob("worker-*.json") for r in json.loads(path.read_text())]
    store = [r["wall"] - r["fit"] for r in records]
    span = max(r["start"] + r["wall"] for r in records) - min(r["start"] for r in records)
    study = optuna.load_study(study_name="scale", storage=stores["storage"])
    states = [t.state.name for t in study.trials]
    client = MlflowClient(stores["tracking"])
    experiment = client.get_experiment_by_name("scale")
    runs = client.search_runs([experiment.experiment_id], "tags.`exptrack.role` = 'trial'", max_results=5000)
    finished = sum(r.info.status == "FINISHED" for r in runs)
    lost = f"{states.count('COMPLETE')}/{trials} COMPLETE, {finished} runs FINISHED"
    return (
        f"{backend:10} {workers:2} workers: store time per trial median {1000 * statistics.median(store):6.0f} ms, "
        f"p90 {1000 * sorted(store)[int(0.9 * len(store))]:6.0f} ms; fit median {statistics.median(r['fit'] for r in records):.2f} s; "
        f"{trials / span:5.2f} trials/s while trials ran ({wall:.0f} s with start-up); {lost}"
        + (f"; peak connections: Optuna db {peak[0]}, MLflow db {peak[1]}" if count_connections else "")
    )


def death_to_retry(stores: dict[str, str], folder: Path, other_host: bool, grace: int) -> str:
    """Two workers; one is SIGKILLed in the middle of a trial: seconds until that trial's
    parameters start again as its retry (`retry_of`)."""
    prefix = ["unshare", "--uts", "sh", "-c", 'hostname far-away && exec "$@"', "sh"] if other_host else []
    doomed = start_workers(1, stores["storage"], stores["tracking"], 8, folder, grace, prefix)[0]
    survivor = start_workers(1, stores["storage"], stores["tracking"], 8, folder, grace)[0]
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
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument(
        "--backends", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"]
    )
    parser.add_argument("--grace", type=int, default=6, help="--grace-period of the death-to-retry runs")
    args = parser.parse_args()
    lines = [f"{os.cpu_count()} cores; trials: {TINY}"]
    for backend in args.backends:
        server = None
        if backend == "postgres":
            from tests.pgserver import MlflowPgServer, PostgresServer

            postgres = PostgresServer()
            postgres.start()
        try:
            # a fresh pair of stores for each run: a finished study would leave a new worker nothing to do
            deaths = ["death", "death-far"] if backend == "postgres" else ["death"]
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
                    counter = None
                    if backend == "postgres":
                        optuna_db, mlflow_db = f"optuna_{name}", f"mlflow_{name}"

                        def counter() -> tuple[int, int]:
                            return postgres.connections(optuna_db), postgres.connections(mlflow_db)  # noqa: B023

                    lines.append(measure(backend, int(count), args.trials, stores, folder, counter))
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
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), Path(sys.argv[5]), int(sys.argv[6]))
    else:
        main()
