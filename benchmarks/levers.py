"""One speed lever alone: the same `exp search` twice, A-B-B-A, with one setting changed.

    python benchmarks/levers.py --out /tmp/lever-omp --lever omp_wait        # PASSIVE vs libgomp's spin
    python benchmarks/levers.py --out /tmp/lever-cache --lever feature_cache  # the cache on vs off

Arm A is exptrack as shipped; arm B turns the lever off. Both run studies/finetune.py with the same
sizes, `--seed 0` and `weights: none` in fresh sqlite stores, so they draw the same configs (TPE's
first 10 trials are random under the seed) and their best values should agree; each run is a real
process timed from its start. Prints per run: wall time, summed trial seconds (Optuna's start to
end, imports and study set-up excluded), trials finished, best val_accuracy and the 1-minute load
average before and after (the machine may be shared: read the figures beside it); then the mean
per arm and B / A. Figures go to OUT/levers.json, each run's output to OUT/<arm>-<round>.log.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]  # exptrack from this checkout; the sibling scripts
from gpu_study import run_arm  # noqa: E402
from trial_timeline import read_trials, summarize_arm  # noqa: E402

# arm B of each lever: (environment added, `exp search` arguments added)
LEVERS: dict[str, tuple[dict[str, str], list[str]]] = {
    # libgomp's own default when no wait policy is set: spin 300,000 times (~3 ms) at a barrier
    "omp_wait": ({"GOMP_SPINCOUNT": "300000"}, []),
    "feature_cache": ({}, ["--set", "feature_cache=off"]),
}


def command(args: argparse.Namespace, folder: Path, extra: list[str]) -> list[str]:
    sets = {"epochs": args.epochs, "image_size": args.image_size, "subset": args.subset, "weights": "none"}
    line = [sys.executable, "-m", "exptrack", "search", str(REPO / "studies" / "finetune.py")]
    line += ["--trials", str(args.trials), "--seed", "0"]
    line += ["--storage", f"sqlite:///{folder}/optuna.db", "--tracking-uri", f"sqlite:///{folder}/mlflow.db"]
    return line + [x for k, v in sets.items() for x in ("--set", f"{k}={v}")] + extra


def run_once(args: argparse.Namespace, arm: str, tag: str) -> dict[str, Any]:
    """One run of arm `A` or `B` in fresh stores, with the load average around it."""
    env, extra = LEVERS[args.lever] if arm == "B" else ({}, [])
    folder = args.out / "work" / tag
    load_before = os.getloadavg()[0]
    run = run_arm(tag, command(args, folder, extra), folder, args.out, 24 * 3600, env)
    trials = read_trials(f"sqlite:///{folder}/optuna.db", "finetune")
    summary = summarize_arm(run, trials)
    summary["trial_s"] = sum(t["end"] - t["start"] for t in trials if t["end"] and t["start"])
    summary["load_1min"] = [load_before, os.getloadavg()[0]]
    return summary


def report(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    mean = {
        arm: {k: statistics.fmean(r[k] for r in rs) for k in ("wall_s", "trial_s")}
        for arm, rs in runs.items()
    }
    best = {arm: [r["best_val_accuracy"] for r in rs] for arm, rs in runs.items()}
    ratio = {k: mean["B"][k] / mean["A"][k] for k in ("wall_s", "trial_s")}
    return {"mean": mean, "best_val_accuracy": best, "B_over_A": ratio}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lever", choices=sorted(LEVERS), required=True)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=24)
    parser.add_argument("--subset", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2, help="A-B, then B-A, ...")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
    results: dict[str, Any] = {"command": [sys.executable, *sys.argv], "lever": args.lever, "runs": runs}
    for round_ in range(args.rounds):
        for arm in ("A", "B") if round_ % 2 == 0 else ("B", "A"):
            run = run_once(args, arm, f"{arm}-{round_ + 1}")
            runs[arm].append(run)
            print(
                f"round {round_ + 1} {arm}: {run['wall_s']:.1f} s wall, {run['trial_s']:.1f} s in trials, "
                f"{run['finished_trials']} trials, best {run['best_val_accuracy']}, "
                f"load {run['load_1min'][0]:.1f} -> {run['load_1min'][1]:.1f}",
                flush=True,
            )
            (args.out / "levers.json").write_text(json.dumps(results, indent=2))
    results["summary"] = report(runs)
    (args.out / "levers.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results["summary"], indent=2))


if __name__ == "__main__":
    main()
