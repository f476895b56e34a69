"""What the tracking journal costs a trial while the server is up: the same trials with and
without it, arms alternating trial by trial, in one process.

    python benchmarks/journal_overhead.py --trials 8 --set epochs=3 --set subset=300 --set image_size=16

Both arms are tracked (sqlite MLflow store, or `--tracking-uri` a server) with the same sampler
seed, so they train the same configs. Prints each arm's per-trial seconds, their paired difference,
and the seconds the trial's own thread spent inside the journal (every record is appended there
before it is sent; a background thread fsyncs it): that figure is the journal's cost on the trial's
path, measured directly, without the noise of training time; it is also shown as a share of a
3-second trial. The background fsyncs' cost shows only in the paired difference.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from exptrack import config as cfg
from exptrack.search import loop
from exptrack.search.options import SearchOptions
from exptrack.study import load_study_file
from exptrack.tracking.journal import Journal
from exptrack.tracking.tracker import Tracker
from exptrack.training import fit

REPO = Path(__file__).resolve().parent.parent
TRIAL_S = 3.0  # the yardstick: the journal must cost under 1 % of a 3-second trial


class TimedJournal(Journal):
    """A journal that counts the seconds and records its appends take (on the trial's thread)."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.seconds, self.appends = 0.0, 0

    def append(self, record: Any) -> None:
        start = time.perf_counter()
        super().append(record)
        self.seconds += time.perf_counter() - start
        self.appends += 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--study", default=str(REPO / "studies" / "finetune.py"))
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    overrides = {"weights": "none", **cfg.parse_overrides(args.overrides)}
    spec = load_study_file(Path(args.study)).with_overrides(overrides)
    with tempfile.TemporaryDirectory(dir=".") as tmp:  # the journal on the disk a study would use
        uri = args.tracking_uri or f"sqlite:///{Path(tmp).resolve()}/mlflow.db"
        searches, runs = {}, {}
        for arm in ("journal", "none"):
            options = SearchOptions(
                trials=args.trials, storage=f"sqlite:///{tmp}/{arm}.db", sampler="random", pruner="none",
                seed=7, study_name=f"journal-bench-{arm}",
            )  # fmt: skip
            searches[arm] = loop.open_search(spec, options, Tracker(uri), warn=lambda m: None)
            runs[arm] = loop.open_tracking(searches[arm])
        journal = TimedJournal(Path(tmp) / "exptrack-journal" / "bench")
        fit.fit(cfg.from_dict(spec.fixed), warn=lambda m: None)  # warm-up: first-touch allocations
        times: dict[str, list[float]] = {"journal": [], "none": []}
        spent, appends = [], []
        for _ in range(args.trials):
            for arm in ("journal", "none"):  # alternating: machine noise hits both alike
                before, count = journal.seconds, journal.appends
                start = time.perf_counter()
                loop.run_one(searches[arm], runs[arm], mine=journal if arm == "journal" else None)
                times[arm].append(time.perf_counter() - start)
                if arm == "journal":
                    spent.append(journal.seconds - before)
                    appends.append(journal.appends - count)
        journal.close()
    report(args, times, spent, appends)


def report(args: Any, times: dict[str, list[float]], spent: list[float], appends: list[int]) -> None:
    with_journal, without = statistics.median(times["journal"]), statistics.median(times["none"])
    paired = statistics.median(a - b for a, b in zip(times["journal"], times["none"], strict=True))
    cost = statistics.median(spent)
    print(f"trials per arm:                 {args.trials} ({', '.join(args.overrides) or 'study defaults'})")
    print(f"per-trial seconds, journal:     {with_journal:.3f} (median; all: {_fmt(times['journal'])})")
    print(f"per-trial seconds, no journal:  {without:.3f} (median; all: {_fmt(times['none'])})")
    print(f"paired difference:              {paired:+.3f} s per trial (median; training noise included)")
    print(f"records per trial:              {statistics.median(appends):.0f} (each appended; fsynced in the background)")
    print(
        f"journal time per trial:         {cost * 1000:.2f} ms (median; all: {_fmt([s * 1000 for s in spent])} ms)"
    )
    print(f"share of a {TRIAL_S:.0f}-second trial:       {100 * cost / TRIAL_S:.3f} % (target: under 1 %)")


def _fmt(values: list[float], digits: int = 2) -> str:
    return " ".join(f"{v:.{digits}f}" for v in values)


if __name__ == "__main__":
    main()
