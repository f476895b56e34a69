"""Pruning efficiency on the CPU study: the median and hyperband pruners against none, same seeds.

    python benchmarks/pruning.py --out /tmp/pruning                   # 12 trials x 4 epochs, 300 digits
    python benchmarks/pruning.py --out /tmp/pruning --trials 20 --rounds 2

Each arm is `exp search studies/finetune.py --pruner P --seed 0` (weights: none, fresh sqlite
stores), a real process; arms run in a rotating order (none, median, hyperband, then reversed) so
that a drift in the machine's load hits them alike. The target is the unpruned arm's best
val_accuracy less 0.5 point; per arm:

- `trial_s_to_target`: the trials' own seconds (Optuna's start to end), summed in the order the
  trials finished, up to the first trial that reaches the target (None: never reached);
- `cpu_s_to_target`: the process's CPU seconds (user + system, from the kernel's accounting of the
  finished child) times the share of its trial seconds spent up to that trial: a machine shared
  with other work stretches wall time but not the CPU a study uses;
- the number of trials, pruned trials and epochs trained, and the best value reached.

Epochs default to 4 (the study's 2 leave a pruner one decision point, after epoch 1). Figures go
to OUT/pruning.json, each run's output to OUT/<pruner>-<round>.log.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]  # exptrack from this checkout; the sibling scripts
from trial_timeline import read_trials  # noqa: E402

PRUNERS = ("none", "median", "hyperband")
TOLERANCE = 0.005  # the "within 0.5 point" of the unpruned best, in val_accuracy


def command(args: argparse.Namespace, pruner: str, folder: Path) -> list[str]:
    sets = {"epochs": args.epochs, "image_size": args.image_size, "subset": args.subset, "weights": "none"}
    line = [sys.executable, "-m", "exptrack", "search", str(REPO / "studies" / "finetune.py")]
    line += ["--trials", str(args.trials), "--seed", "0", "--pruner", pruner]
    line += ["--storage", f"sqlite:///{folder}/optuna.db", "--tracking-uri", f"sqlite:///{folder}/mlflow.db"]
    return line + [x for k, v in sets.items() for x in ("--set", f"{k}={v}")]


def run_once(args: argparse.Namespace, pruner: str, tag: str) -> dict[str, Any]:
    """One arm in fresh stores: its wall and CPU seconds, load average and trials."""
    folder = args.out / "work" / tag
    folder.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    before, load = resource.getrusage(resource.RUSAGE_CHILDREN), os.getloadavg()[0]
    started = time.time()
    with (args.out / f"{tag}.log").open("w") as log:
        code = subprocess.run(
            command(args, pruner, folder), cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT
        ).returncode
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    trials = [t for t in read_trials(f"sqlite:///{folder}/optuna.db", "finetune") if t["end"] and t["start"]]
    return {
        "pruner": pruner,
        "returncode": code,
        "wall_s": time.time() - started,
        "cpu_s": cpu,
        "load_1min": [load, os.getloadavg()[0]],
        "trials": sorted(trials, key=lambda t: t["end"]),
        "epochs_trained": _epochs(folder),
    }


def _epochs(folder: Path) -> int:
    import optuna

    study = optuna.load_study(study_name="finetune", storage=f"sqlite:///{folder}/optuna.db")
    return sum(len(t.intermediate_values) for t in study.get_trials(deepcopy=False))


def to_target(run: dict[str, Any], target: float) -> dict[str, Any]:
    """Trial and CPU seconds until the first finished trial at or above `target`."""
    trials = run["trials"]
    spent, total = 0.0, sum(t["end"] - t["start"] for t in trials)
    reached = None
    for t in trials:
        spent += t["end"] - t["start"]
        if t["state"] == "COMPLETE" and t["value"] is not None and t["value"] >= target:
            reached = spent
            break
    values = [t["value"] for t in trials if t["state"] == "COMPLETE" and t["value"] is not None]
    return {
        "trial_s_to_target": reached,
        "cpu_s_to_target": None if reached is None else run["cpu_s"] * reached / total,
        "trial_s_total": total,
        "cpu_s": run["cpu_s"],
        "wall_s": run["wall_s"],
        "trials": len(trials),
        "pruned": sum(t["state"] == "PRUNED" for t in trials),
        "epochs_trained": run["epochs_trained"],
        "best": max(values) if values else None,
        "load_1min": run["load_1min"],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=24)
    parser.add_argument("--subset", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=1, help="each round runs every pruner once")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    results: dict[str, Any] = {"command": [sys.executable, *sys.argv], "runs": runs}
    for round_ in range(args.rounds):
        for pruner in PRUNERS if round_ % 2 == 0 else PRUNERS[::-1]:
            runs.append(run_once(args, pruner, f"{pruner}-{round_ + 1}"))
            (args.out / "pruning.json").write_text(json.dumps(results, indent=2))
    bests = [to_target(r, 0.0)["best"] for r in runs if r["pruner"] == "none"]
    target = max(b for b in bests if b is not None) - TOLERANCE
    results["target"] = target
    results["summary"] = [{"pruner": r["pruner"], **to_target(r, target)} for r in runs]
    (args.out / "pruning.json").write_text(json.dumps(results, indent=2))
    for row in results["summary"]:
        print(json.dumps(row))
    print(f"target val_accuracy >= {target:.4f} (unpruned best - {TOLERANCE})")


if __name__ == "__main__":
    main()
