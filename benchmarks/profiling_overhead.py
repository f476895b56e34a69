"""What the always-on cost figures and MLflow's system metrics cost a trial, side by side.

    python benchmarks/profiling_overhead.py --trials 6 --set epochs=2 --set subset=400

Three arms train the same configs (random sampler, same seed), every one tracked to MLflow, in one
process; the arms take turns trial by trial, in a rotating order, so machine noise hits all alike:

- `plain`: no FLOP count (the step's FLOPs taken as known) and no system metrics;
- `figures`: the FLOPs of a training step counted with `torch.utils.flop_counter` on every trial,
  the worst case (a search counts once per backbone, freezing depth and input shape per process);
- `system`: MLflow's SystemMetricsMonitor sampling the trial's run (CPU, memory, disk, network).

Prints per-trial seconds for each arm, and each arm's extra seconds over `plain` as a share of a
plain trial (median of paired differences: the same config in every arm), against the target of 2 %.
The other always-on figures (phase timers, the per-trial memory peak) run in every arm: they are a
few clock reads and one write to /proc per trial.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Hashable, Iterator
from pathlib import Path

from exptrack import config as cfg
from exptrack.search import loop
from exptrack.search.options import SearchOptions
from exptrack.study import load_study_file
from exptrack.tracking.tracker import Tracker
from exptrack.training import fit, flops

REPO = Path(__file__).resolve().parent.parent
ARMS = ("plain", "figures", "system")
TARGET = 0.02  # the bound on what profiling may add to a trial


class _EveryStepKnown(dict[Hashable, float]):
    """A FLOP cache that claims to know every step, so no trial counts: the `plain` arm."""

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: Hashable) -> float:
        return 0.0


@contextlib.contextmanager
def arm_settings(arm: str) -> Iterator[None]:
    """The FLOP cache and MLflow's system-metrics switch as `arm` runs its trial."""
    saved_cache, saved_switch = flops._PER_SAMPLE, os.environ.get("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING")
    flops._PER_SAMPLE = {} if arm == "figures" else _EveryStepKnown()  # type: ignore[misc]
    os.environ["MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"] = "true" if arm == "system" else "false"
    try:
        yield
    finally:
        flops._PER_SAMPLE = saved_cache  # type: ignore[misc]
        if saved_switch is None:
            os.environ.pop("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", None)
        else:
            os.environ["MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"] = saved_switch


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
    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory() as tmp:
        searches, runs = {}, {}
        for arm in ARMS:  # random sampler, same seed: every arm trains the same configs
            options = SearchOptions(
                trials=args.trials,
                storage=f"sqlite:///{tmp}/{arm}.db",
                sampler="random",
                pruner="none",
                seed=7,
            )
            tracker = Tracker(f"sqlite:///{tmp}/mlflow-{arm}.db")
            searches[arm] = loop.open_search(spec, options, tracker, warn=lambda m: None)
            runs[arm] = loop.open_tracking(searches[arm])
        fit.fit(
            cfg.from_dict(spec.fixed), warn=lambda m: None
        )  # warm-up: first-touch allocations, lazy imports
        for number in range(args.trials):
            order = ARMS[number % 3 :] + ARMS[: number % 3]
            for arm in order:
                with arm_settings(arm):
                    start = time.perf_counter()
                    loop.run_one(searches[arm], runs[arm])
                    times[arm].append(time.perf_counter() - start)
    report(args, times)


def report(args: argparse.Namespace, times: dict[str, list[float]]) -> None:
    plain = statistics.median(times["plain"])
    print(f"trials per arm: {args.trials} ({', '.join(args.overrides) or 'study defaults'})")
    for arm in ARMS:
        print(
            f"  {arm:8s} {statistics.median(times[arm]):7.3f} s per trial (median; all: {_fmt(times[arm])})"
        )
    for arm, what in (("figures", "FLOP count on every trial"), ("system", "system metrics")):
        extra = statistics.median(a - b for a, b in zip(times[arm], times["plain"], strict=True))
        share = extra / plain
        verdict = "within" if share <= TARGET else "over"
        print(f"{what + ':':27s} {extra:+.3f} s per trial = {share:+.1%} of a plain trial ({verdict} 2 %)")


def _fmt(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    main()
