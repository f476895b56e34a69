"""What MLflow tracking costs a trial: the same trials run with and without it, in one process.

    python benchmarks/tracking_overhead.py --trials 6 --set epochs=2 --set subset=400

Both arms use the same sampler seed, so they train the same configs; the arms alternate trial by
trial so machine noise hits both alike. Prints per-trial seconds for each arm and their ratio, and
each trial's fixed cost: its wall time less the epochs it trained (ask, sampling, model build,
run creation, params, tags, config.yaml, tell, close), where tracking's writes show without the
noise of training time, and how long the trial's own thread waited inside tracking calls.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exptrack import config as cfg
from exptrack import study_store
from exptrack.search import loop
from exptrack.search.loop import Search
from exptrack.search.options import SearchOptions
from exptrack.search.study_run import StudyRun
from exptrack.study import load_study_file
from exptrack.tracking.tracker import Tracker
from exptrack.training import fit

REPO = Path(__file__).resolve().parent.parent


class WaitClock:
    """Seconds the trial's own thread spends inside `Tracker` calls: the part of tracking that
    training (or the next trial) waits for. Writes on the tracker's background thread overlap
    training and do not count, unless `close_run` has to wait for them."""

    def __init__(self, tracker: Tracker) -> None:
        self.seconds, self._depth = 0.0, 0
        self.by_call: dict[str, float] = collections.defaultdict(float)
        for name in dir(Tracker):
            if not name.startswith("_") and callable(getattr(Tracker, name)):
                setattr(tracker, name, self._timed(name, getattr(tracker, name)))

    def _timed(self, name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is not threading.main_thread() or self._depth:
                return call(*args, **kwargs)
            self._depth, start = 1, time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                took = time.perf_counter() - start
                self._depth, self.seconds = 0, self.seconds + took
                self.by_call[name] += took

        return timed


def timed_trial(search: Search, tracking: StudyRun) -> tuple[float, float]:
    """(seconds of one trial, ask to closed run; of those, the seconds outside its epochs)."""
    start = time.perf_counter()
    loop.run_one(search, tracking)
    wall = time.perf_counter() - start
    trial = search.study.get_trials(deepcopy=False)[-1]
    profile = study_store.record(trial).costs
    epochs = len(trial.intermediate_values)
    return wall, wall - profile.get("seconds_per_epoch", 0.0) * epochs


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
                trials=args.trials,
                storage=f"sqlite:///{tmp}/{arm}.db",
                sampler="random",
                pruner="none",
                seed=7,
            )
            tracker = Tracker(f"sqlite:///{tmp}/mlflow.db") if arm == "tracked" else None
            arms[arm] = loop.open_search(spec, options, tracker, warn=lambda m: None)
        runs = {"tracked": loop.open_tracking(arms["tracked"]), "untracked": StudyRun()}
        assert arms["tracked"].tracker is not None
        clock = WaitClock(arms["tracked"].tracker)
        waits: list[float] = []
        fit.fit(
            cfg.from_dict(spec.fixed), warn=lambda m: None
        )  # warm-up: first-touch allocations, lazy imports
        times: dict[str, list[float]] = {arm: [] for arm in arms}
        fixed: dict[str, list[float]] = {arm: [] for arm in arms}
        for _ in range(args.trials):
            for arm, search in arms.items():
                waited = clock.seconds
                wall, outside = timed_trial(search, runs[arm])
                if arm == "tracked":
                    waits.append(clock.seconds - waited)
                times[arm].append(wall)
                fixed[arm].append(outside)
    tracked, untracked = statistics.median(times["tracked"]), statistics.median(times["untracked"])
    fixed_tracked, fixed_untracked = (
        statistics.median(fixed["tracked"]),
        statistics.median(fixed["untracked"]),
    )
    print(f"trials per arm:              {args.trials} ({', '.join(args.overrides) or 'study defaults'})")
    print(f"per-trial seconds, tracked:   {tracked:.3f} (median; all: {_fmt(times['tracked'])})")
    print(f"per-trial seconds, untracked: {untracked:.3f} (median; all: {_fmt(times['untracked'])})")
    print(
        f"tracking overhead ratio:      {tracked / untracked:.3f}x ({tracked - untracked:+.3f} s per trial)"
    )
    print(f"fixed seconds, tracked:       {fixed_tracked:.3f} (median; all: {_fmt(fixed['tracked'])})")
    print(f"fixed seconds, untracked:     {fixed_untracked:.3f} (median; all: {_fmt(fixed['untracked'])})")
    # same config in both arms, trial by trial: the paired difference cancels model-build noise
    paired = statistics.median(a - b for a, b in zip(fixed["tracked"], fixed["untracked"], strict=True))
    print(f"tracking's fixed cost:        {paired:+.3f} s per trial (median of paired differences)")
    print(
        f"trial waits on tracking:      {statistics.median(waits):.3f} s per trial (median; all: {_fmt(waits, 3)})"
    )
    calls = ", ".join(f"{k} {v / args.trials:.3f}" for k, v in sorted(clock.by_call.items()))
    print(f"  of which, per trial (mean): {calls}")


def _fmt(values: list[float], digits: int = 2) -> str:
    return " ".join(f"{v:.{digits}f}" for v in values)


if __name__ == "__main__":
    main()
