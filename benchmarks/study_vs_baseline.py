"""The CPU study against the plain Optuna + MLflow script a user would write
(benchmarks/baseline_optuna_mlflow.py), on the same search space, data (digits at 24 px, the same
80/20 train/validation share: `test_fraction=0`), epochs, pruner and sampler seed, with exptrack's
speed levers turned off one at a time, all in one run.

    python benchmarks/study_vs_baseline.py --out results/                   # 10 trials, 300 digits, 4 arms x 2 rounds: ~10 min on 2 shared cores
    python benchmarks/study_vs_baseline.py --out results/ --full            # studies/finetune.py's sizes: 50 trials, 900 digits
    python benchmarks/study_vs_baseline.py --out results/ --device cuda --arms exptrack baseline   # gpu_check.sh

Arms (`--arms`), each a real process timed from its start (imports included) in fresh sqlite stores:
- exptrack: `exp search studies/finetune.py` as shipped;
- no_cache: the same with `--set feature_cache=off` (every epoch runs the frozen stages);
- no_fused: the same with `--set fused_optimizer=off` (torch's default AdamW: a per-tensor loop on CPU);
- workers2: `exp search --workers 2` (two processes, the cores split between them); off by default:
  parallelism, not shared computation, and a seeded study's configs then depend on timing;
- baseline: the plain script with OMP_WAIT_POLICY=PASSIVE, the fair baseline: exptrack sets that
  for its own processes, and libgomp's default spin costs a plain script 5x on oversubscribed cores
  (benchmarks/README.md), which no user should be told is exptrack's doing;
- baseline_spin: the plain script as users run it (libgomp's default wait policy); off by default.
Rounds alternate the order (A-B-C-D, then D-C-B-A), so a drift in the machine's load hits all arms
alike. With at most 10 trials every arm draws the same configs (TPE's random start-up trials under
`--seed 0`); pruning may differ.

Prints, per run: wall time, summed trial seconds, finished trials, best val_accuracy and the load
average before and after; then per arm the mean wall time, the ratio exptrack / baseline (goal
<= 1/3) and the best-value gap (goal: within 1 point), and the saving split into levers, each
measured by its own arm: `cache_s` = no_cache - exptrack, `optimizer_s` = no_fused - exptrack,
`other_s` = the rest of baseline - exptrack (batching without a DataLoader, no per-step `.item()`,
the model copy per trial, the cached MLflow schema, ...; negative where exptrack spends more, e.g.
on its records and dashboard). The cache's own per-trial record (`feature_cache_seconds_saved`) is
summed beside it. Both arms use `weights: none` by default: the benchmark machine has no network for
ImageNet weights. Figures go to `study_vs_baseline.json`, each run's output to `<arm>-<round>.log`.
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
from gpu_study import environment, run_arm  # noqa: E402
from trial_timeline import read_trials, summarize_arm  # noqa: E402

from exptrack import records, study_store  # noqa: E402

FULL = {"trials": 50, "epochs": 2, "image_size": 24, "subset": 900}  # studies/finetune.py's sizes
# The default run: 10 trials (all TPE start-up trials, so every arm draws the same configs) of 300
# digits; 4 arms x 2 rounds took 10 min 13 s on 2 cores shared with other agents (README)
DEFAULT = {"trials": 10, "epochs": 2, "image_size": 24, "subset": 300}
REDUCED = {"trials": 20, "epochs": 2, "image_size": 24, "subset": 300}  # the README's earlier figures
GOALS = {"ratio": 1 / 3, "best_gap_points": 1.0}
PASSIVE = {"OMP_WAIT_POLICY": "PASSIVE"}
# arm -> (script, environment added, `exp search` arguments added)
ARMS: dict[str, tuple[str, dict[str, str], list[str]]] = {
    "exptrack": ("exptrack", {}, []),
    "no_cache": ("exptrack", {}, ["--set", "feature_cache=off"]),
    "no_fused": ("exptrack", {}, ["--set", "fused_optimizer=off"]),
    "workers2": ("exptrack", {}, ["--workers", "2"]),
    "baseline": ("baseline", PASSIVE, []),
    "baseline_spin": ("baseline", {}, []),
}
DEFAULT_ARMS = ["exptrack", "no_cache", "no_fused", "baseline"]
# lever -> the arm that turns it off
LEVER_ARMS = {"cache_s": "no_cache", "optimizer_s": "no_fused"}


def command(args: argparse.Namespace, arm: str, folder: Path) -> list[str]:
    """One arm's command line, with its own fresh stores in `folder`."""
    script, _, extra = ARMS[arm]
    stores = ["--storage", f"sqlite:///{folder}/optuna.db", "--tracking-uri", f"sqlite:///{folder}/mlflow.db"]
    if script == "baseline":
        line = [sys.executable, str(REPO / "benchmarks" / "baseline_optuna_mlflow.py")]
        line += ["--trials", str(args.trials), "--epochs", str(args.epochs), "--image-size", str(args.image_size)]
        line += ["--subset", str(args.subset), "--weights", args.weights, "--seed", "0", "--device", args.device]
        return line + stores
    sets = {"epochs": args.epochs, "image_size": args.image_size, "subset": args.subset}
    sets |= {"weights": args.weights, "device": args.device, "test_fraction": 0}  # the baseline's 80/20
    line = [sys.executable, "-m", "exptrack", "search", str(REPO / "studies" / "finetune.py")]
    line += ["--trials", str(args.trials), "--seed", "0", *stores]
    return line + [x for k, v in sets.items() for x in ("--set", f"{k}={v}")] + extra + args.exptrack_arg


def run_once(args: argparse.Namespace, arm: str, tag: str) -> dict[str, Any]:
    """One arm's run in fresh stores, with the load average around it; for exptrack's arms, its
    trials' cache records."""
    script, env, _ = ARMS[arm]
    folder = args.work / tag
    load_before = os.getloadavg()[0]
    run = run_arm(tag, command(args, arm, folder), folder, args.out, 24 * 3600, env)
    study = "finetune" if script == "exptrack" else "baseline"
    trials = read_trials(f"sqlite:///{folder}/optuna.db", study)
    summary = summarize_arm(run, trials)
    summary["trial_s"] = sum(t["end"] - t["start"] for t in trials if t["end"] and t["start"])
    summary["load_1min"] = [load_before, os.getloadavg()[0]]
    summary["trials"] = finished_trials(f"sqlite:///{folder}/optuna.db", study)
    return summary


def finished_trials(storage: str, study: str) -> list[dict[str, Any]]:
    """Per finished trial: its number, config (batch size, freeze depth, lr), epochs run, seconds
    (Optuna's start to end) and, for exptrack, the feature cache's record."""
    import optuna

    rows = []
    for t in optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False):
        if t.state.name not in ("COMPLETE", "PRUNED") or not t.datetime_complete:
            continue
        profile = study_store.record(t).costs
        rows.append(
            {
                "number": t.number,
                "config": [t.params["batch_size"], t.params["freeze_depth"], round(t.params["lr"], 12)],
                "freeze_depth": t.params["freeze_depth"],
                "epochs_run": len(t.intermediate_values),
                "seconds": (t.datetime_complete - t.datetime_start).total_seconds(),
                "feature_cache": profile.get(records.FEATURE_CACHE),
                "saved_s": profile.get(records.FEATURE_CACHE_SAVED, 0.0),
            }
        )
    return rows


def by_depth(runs: dict[str, list[dict[str, Any]]], arm: str) -> dict[int, dict[str, Any]]:
    """`arm`'s trial seconds over the baseline's for the same trial (same number and config, the
    same epochs run), per freeze depth: median ratio and the pairs it is taken over."""
    ratios: dict[int, list[float]] = {}
    for ours, theirs in zip(runs[arm], runs["baseline"], strict=False):
        base = {t["number"]: t for t in theirs["trials"]}
        for t in ours["trials"]:
            other = base.get(t["number"])
            if other and other["config"] == t["config"] and other["epochs_run"] == t["epochs_run"]:
                ratios.setdefault(t["freeze_depth"], []).append(t["seconds"] / other["seconds"])
    return {d: {"median": statistics.median(r), "pairs": len(r)} for d, r in sorted(ratios.items())}


def levers(wall: dict[str, float], runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The saving (baseline - exptrack, mean wall seconds) split by the lever arms: each lever's
    share is its arm's mean less exptrack's (None where its arm did not run); `other_s` the rest."""
    shares: dict[str, Any] = {"saving_s": wall["baseline"] - wall["exptrack"]}
    for lever, arm in LEVER_ARMS.items():
        shares[lever] = wall[arm] - wall["exptrack"] if arm in wall else None
    shares["other_s"] = shares["saving_s"] - sum(v for k, v in shares.items() if k in LEVER_ARMS and v)
    if shares["saving_s"]:
        for lever in (*LEVER_ARMS, "other_s"):
            if shares[lever] is not None:
                shares[lever.replace("_s", "_share")] = shares[lever] / shares["saving_s"]
    cached = [sum(t["saved_s"] for t in r["trials"]) for r in runs["exptrack"]]
    shares["cache_record_s"] = statistics.fmean(cached)  # the trials' own feature_cache_seconds_saved
    return shares


def report(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    wall = {arm: statistics.fmean(r["wall_s"] for r in rs) for arm, rs in runs.items() if rs}
    trial_s = {arm: statistics.fmean(r["trial_s"] for r in rs) for arm, rs in runs.items() if rs}
    best = {arm: max((r["best_val_accuracy"] or 0.0) for r in rs) for arm, rs in runs.items() if rs}
    summary: dict[str, Any] = {"wall_s": wall, "trial_s": trial_s, "best_val_accuracy": best}
    cache_status = [str(t["feature_cache"]) for r in runs["exptrack"] for t in r["trials"]]
    summary["feature_cache_status"] = {s: cache_status.count(s) for s in sorted(set(cache_status))}
    if "baseline" not in wall:
        return summary
    ratio = wall["exptrack"] / wall["baseline"]
    gap_points = 100 * (best["baseline"] - best["exptrack"])
    summary |= {"ratio": ratio, "speedup": 1 / ratio, "best_gap_points": gap_points}
    summary["trial_s_ratio"] = trial_s["exptrack"] / trial_s["baseline"]  # without start-up and close
    summary["per_round_ratio"] = [
        ours["wall_s"] / theirs["wall_s"] for ours, theirs in zip(runs["exptrack"], runs["baseline"], strict=False)
    ]
    summary["goals_met"] = {"ratio<=1/3": ratio <= GOALS["ratio"], "best within 1 point": gap_points <= 1.0}
    summary["levers"] = levers(wall, runs)
    summary["trial_ratio_by_freeze_depth"] = by_depth(runs, "exptrack")
    if "baseline_spin" in wall:
        summary["ratio_vs_baseline_spin"] = wall["exptrack"] / wall["baseline_spin"]
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for study_vs_baseline.json and logs")
    parser.add_argument("--work", type=Path, default=None, help="the arms' stores (default: OUT/work)")
    parser.add_argument("--full", action="store_true", help="studies/finetune.py's sizes: " + json.dumps(FULL))
    parser.add_argument("--reduced", action="store_true", help="earlier figures' sizes: " + json.dumps(REDUCED))
    parser.add_argument("--trials", type=int, default=DEFAULT["trials"])
    parser.add_argument("--epochs", type=int, default=DEFAULT["epochs"])
    parser.add_argument("--image-size", type=int, default=DEFAULT["image_size"])
    parser.add_argument("--subset", type=int, default=DEFAULT["subset"])
    parser.add_argument("--weights", default="none", choices=["none", "imagenet"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=DEFAULT_ARMS)
    parser.add_argument("--rounds", type=int, default=2, help="the arms in order, then reversed, ...")
    parser.add_argument("--exptrack-arg", action="append", default=[], help="extra `exp search` argument")
    args = parser.parse_args(argv)
    for chosen, sizes in ((args.full, FULL), (args.reduced, REDUCED)):
        for key, value in sizes.items() if chosen else ():
            setattr(args, key, value)
    if "exptrack" not in args.arms:
        parser.error("--arms must include exptrack: every other arm is compared with it")
    args.work = args.work or args.out / "work"
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"command": [sys.executable, *sys.argv], "environment": environment()}
    results["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in args.arms}
    path = args.out / "study_vs_baseline.json"
    for round_ in range(args.rounds):
        for arm in args.arms if round_ % 2 == 0 else args.arms[::-1]:
            run = run_once(args, arm, f"{arm}-{round_ + 1}")
            runs[arm].append(run)
            print(
                f"round {round_ + 1} {arm}: {run['wall_s']:.1f} s wall, {run['trial_s']:.1f} s in trials, "
                f"{run['finished_trials']} trials, best {run['best_val_accuracy']}, "
                f"load {run['load_1min'][0]:.1f} -> {run['load_1min'][1]:.1f}",
                flush=True,
            )
            results["runs"] = runs
            path.write_text(json.dumps(results, indent=2))  # after each run: a cut-off run keeps what it has
    results["summary"] = report(runs)
    path.write_text(json.dumps(results, indent=2))
    print(json.dumps(results["summary"], indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
