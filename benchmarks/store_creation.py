"""A new project's MLflow store: from the cached migrated schema (as shipped) against MLflow's own
~80 migrations (the cache made unwritable), alternating A-B-B-A.

    python benchmarks/store_creation.py --rounds 3

Each measurement is a fresh process that imports exptrack and MLflow first (not timed), then times
`store_setup.ensure_store` on a new sqlite file: what the first `exp search` or `exp train` in a
new folder waits for before its first trial. Arm A's cache is made before the first round (a user
pays that once per MLflow release). Prints each run, the median per arm, B / A and the 1-minute load
average (the machine may be shared: read the figures beside it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TIMED = """
import sys, time
from exptrack.tracking import store_setup
import mlflow.store.tracking.sqlalchemy_store  # imported before the clock starts
began = time.perf_counter()
store_setup.ensure_store(f"sqlite:///{sys.argv[1]}", say=lambda _: None)
print(time.perf_counter() - began)
"""


def create_once(folder: Path, cache: Path) -> float:
    """Seconds one new store took in a fresh process whose cache directory is `cache`."""
    env = {**os.environ, "EXPTRACK_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}
    store = folder / f"store-{len(list(folder.glob('store-*')))}.db"
    done = subprocess.run(
        [sys.executable, "-c", TIMED, str(store)], env=env, capture_output=True, text=True, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="A-B-B-A rounds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / "a-file").write_text("")
        arms = {"cached schema": folder / "cache", "MLflow migrations": folder / "a-file" / "cache"}
        create_once(folder, arms["cached schema"])  # the once-per-release cost, not measured
        seconds: dict[str, list[float]] = {arm: [] for arm in arms}
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        for round_ in range(args.rounds):
            for arm in (*arms, *reversed(arms)):
                seconds[arm].append(create_once(folder, arms[arm]))
                print(f"round {round_ + 1} {arm:18s} {seconds[arm][-1]:7.3f} s")
        medians = {arm: statistics.median(values) for arm, values in seconds.items()}
        for arm, median in medians.items():
            print(f"median {arm:18s} {median:7.3f} s over {len(seconds[arm])} runs")
        print(f"migrations / cached: {medians['MLflow migrations'] / medians['cached schema']:.1f}x")
        print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
