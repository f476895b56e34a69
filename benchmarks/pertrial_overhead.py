"""Per-trial overhead of `exp search` from two checkouts of exptrack, alternated A-B-B-A in one run.

    python benchmarks/pertrial_overhead.py --a /path/to/main --b . --out results/
    python benchmarks/pertrial_overhead.py --a ../main --b . --out results/ --set freeze_depth=4

Each run is the same command (`exp search studies/finetune.py`, 12 trials, TPE seed 0, 300 digits at
24 px, 2 epochs, `weights=none`, `test_fraction=0`, plus `--set`s given here) in fresh sqlite
stores, with PYTHONPATH set to the run's checkout. Read back from the Optuna store
(`trial_timeline`): per trial, ask -> first training step (set-up: sampling, the run's opening,
the model, the feature cache) and end -> next ask (the tell's records, the run's close, the next
ask), both medians over the run's trials; the wall time of the command; each trial's value, which
must be the same in both checkouts (same configs, same seeds: a change that keeps records exact
keeps them). Prints one line per run and the medians per checkout; writes pertrial_overhead.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
from gpu_study import run_arm  # noqa: E402
from trial_timeline import gaps, read_trials  # noqa: E402

SETS = {"weights": "none", "subset": 300, "image_size": 24, "epochs": 2, "test_fraction": 0}


def command(checkout: Path, folder: Path, args: argparse.Namespace) -> list[str]:
    """The 12-trial search with its own stores in `folder`, the study file of `checkout`."""
    line = [sys.executable, "-m", "exptrack", "search", str(checkout / "studies" / "finetune.py")]
    line += ["--trials", str(args.trials), "--seed", "0"]
    line += ["--storage", f"sqlite:///{folder}/optuna.db", "--tracking-uri", f"sqlite:///{folder}/mlflow.db"]
    sets = [f"{k}={v}" for k, v in SETS.items()] + args.set
    return line + [x for s in sets for x in ("--set", s)]


def run(checkout: Path, tag: str, args: argparse.Namespace) -> dict[str, Any]:
    """One search from `checkout`; its wall time and its trials' timeline."""
    folder = args.out / tag
    load = os.getloadavg()[0]
    arm = run_arm("search", command(checkout, folder, args), folder, folder, 24 * 3600, checkout=checkout)
    trials = sorted(read_trials(f"sqlite:///{folder}/optuna.db", "finetune"), key=lambda t: t["number"])
    return {"tag": tag, "checkout": str(checkout), "returncode": arm["returncode"], "wall_s": arm["wall_s"],
            "load_1min": [load, os.getloadavg()[0]], **timeline(trials)}  # fmt: skip


def timeline(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of ask -> first step (`trial_timeline.gaps`) and of end -> next ask, and each
    trial's state and value."""
    between = [b["start"] - a["end"] for a, b in itertools.pairwise(trials) if a["end"] and b["start"]]
    return {
        "ask_to_first_step_s": gaps(trials)["ask_to_first_step_s"]["median"],
        "end_to_next_ask_s": statistics.median(between) if between else None,
        "trial_s": sum(t["end"] - t["start"] for t in trials if t["end"] and t["start"]),
        "values": [[t["number"], t["state"], t["value"]] for t in trials],
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per checkout, the median of each run's figures; whether every run's values agree."""
    out: dict[str, Any] = {}
    for name in ("a", "b"):
        mine = [r for r in runs if r["tag"].startswith(name)]
        out[name] = {
            key: statistics.median(r[key] for r in mine)
            for key in ("wall_s", "ask_to_first_step_s", "end_to_next_ask_s", "trial_s")
        }
    out["same_values"] = all(r["values"] == runs[0]["values"] for r in runs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", type=Path, required=True, help="checkout A (before)")
    parser.add_argument("--b", type=Path, required=True, help="checkout B (after)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=1, help="A-B-B-A blocks")
    parser.add_argument("--set", action="append", default=[], help="an extra --set KEY=VALUE for both")
    args = parser.parse_args()
    args.out = args.out.resolve()
    runs = []
    for block, order in itertools.product(range(args.rounds), ["abba"]):
        for i, name in enumerate(order):
            checkout = (args.a if name == "a" else args.b).resolve()
            result = run(checkout, f"{name}-{block}-{i}", args)
            runs.append(result)
            print(json.dumps({k: v for k, v in result.items() if k != "values"}), flush=True)
    summary = summarize(runs)
    print(json.dumps(summary, indent=1))
    (args.out / "pertrial_overhead.json").write_text(json.dumps({"runs": runs, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
