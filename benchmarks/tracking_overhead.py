"""What MLflow tracking costs a trial: the same trials run with and without it, in one process.

    python benchmarks/tracking_overhead.py --trials 6 --set epochs=2 --set subset=400

Both arms use the same sampler seed, so they train the same configs; the arms alternate trial by
trial so machine noise hits both alike. Prints per-trial seconds for each arm and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from exptrack import config as cfg
from exptrack.search.loop import Search, SearchOptions
from exptrack.study import load_study_file
from exptrack.tracking.tracker import Tracker
from exptrack.training import fit

REPO = Path(__file__).resolve().parent.parent


def timed_trials(search: Search, count: int) -> list[float]:
    """Seconds of each of `count` trials, ask to closed run."""
    times = []
    for _ in range(count):
        start = time.perf_counter()
        search.run_trial()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--study", default=str(REPO / "studies" / "finetune.py"))
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    overrides = {"weights": "none", **cfg.parse_overrides(args.overrides)}
    spec = load_study_file(Path(args.study)).with_overrides(overrides)
    with tempfile.TemporaryDirectory() as tmp:
        arms = {}
        for arm in ("tracked", "untracked"):  # random sampler, same seed: both arms train the same configs
            options = SearchOptions(
                args.trials, storage=f"sqlite:///{tmp}/{arm}.db", sampler="random", pruner="none", seed=7
            )
            tracker = Tracker(f"sqlite:///{tmp}/mlflow.db") if arm == "tracked" else None
            arms[arm] = Search(spec, options, tracker, warn=lambda m: None)
        arms["tracked"].open()
        fit.fit(
            cfg.from_dict(spec.fixed), warn=lambda m: None
        )  # warm-up: first-touch allocations, lazy imports
        times: dict[str, list[float]] = {arm: [] for arm in arms}
        for _ in range(args.trials):
            for arm, search in arms.items():
                times[arm] += timed_trials(search, 1)
    tracked, untracked = statistics.median(times["tracked"]), statistics.median(times["untracked"])
    print(f"trials per arm:              {args.trials} ({', '.join(args.overrides) or 'study defaults'})")
    print(f"per-trial seconds, tracked:   {tracked:.3f} (median; all: {_fmt(times['tracked'])})")
    print(f"per-trial seconds, untracked: {untracked:.3f} (median; all: {_fmt(times['untracked'])})")
    print(
        f"tracking overhead ratio:      {tracked / untracked:.3f}x ({tracked - untracked:+.3f} s per trial)"
    )


def _fmt(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    main()
