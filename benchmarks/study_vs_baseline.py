"""The CPU study two ways in one run: `exp search studies/finetune.py` against the plain Optuna +
MLflow script a user would write (benchmarks/baseline_optuna_mlflow.py), on the same search space,
data (digits at 24 px), epochs, pruner and sampler seed, arms alternated A-B-B-A (two rounds) so
that a machine's drift in load hits both alike.

    python benchmarks/study_vs_baseline.py --out results/                   # the study: 50 trials
    python benchmarks/study_vs_baseline.py --out results/ --reduced         # 2 shared cores: 20 trials, 300 digits
    python benchmarks/study_vs_baseline.py --out results/ --device cuda     # the GPU arm (gpu_check.sh)

Prints, per run and per arm: wall time of the whole command (imports included), finished trials and
best val_accuracy; then the ratio (exptrack / baseline wall time, goal <= 1/3) and the best-value
gap (goal: within 1 point). The saving is split into its levers:
- cache: each exptrack trial's own `feature_cache_seconds_saved` (the frozen stages' forward passes
  it did not run, timed when the features were computed), summed;
- optimizer: each trial's AdamW steps times the per-step gap between torch's default AdamW (what the
  baseline runs: a per-tensor loop on CPU, foreach on CUDA) and the fused one, measured here for the
  trial's trainable parameters (resnet18 frozen to its depth);
- other: the rest of the saving (batching without a DataLoader, no per-step `.item()`, evaluation
  without syncs, frozen batch norm...; negative where exptrack spends more, e.g. on records).
Both arms use `weights: none` by default: the benchmark machine has no network for ImageNet.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]  # exptrack from this checkout; the sibling scripts
from gpu_study import environment, run_arm  # noqa: E402
from trial_timeline import read_trials, summarize_arm  # noqa: E402

from exptrack import records  # noqa: E402

STUDY = {"trials": 50, "epochs": 2, "image_size": 24, "subset": 900}  # studies/finetune.py's sizes
REDUCED = {"trials": 20, "epochs": 2, "image_size": 24, "subset": 300}  # ~1/8 of the work, 2 cores
DIGITS_TRAIN = 1437  # digits' 1,797 images less the 20 % held out for validation
GOALS = {"ratio": 1 / 3, "best_gap_points": 1.0}


def commands(args: argparse.Namespace, work: Path) -> dict[str, list[str]]:
    """The two arms' command lines, each with its own fresh stores under `work`."""

    def stores(name: str) -> list[str]:
        return [
            "--storage",
            f"sqlite:///{work / name}/optuna.db",
            "--tracking-uri",
            f"sqlite:///{work / name}/mlflow.db",
        ]

    sets = {"epochs": args.epochs, "image_size": args.image_size, "subset": args.subset}
    sets |= {"weights": args.weights, "device": args.device}
    ours = [sys.executable, "-m", "exptrack", "search", str(REPO / "studies" / "finetune.py")]
    ours += ["--trials", str(args.trials), "--seed", "0", *stores("exptrack")]
    ours += [x for k, v in sets.items() for x in ("--set", f"{k}={v}")] + args.exptrack_arg
    base = [sys.executable, str(REPO / "benchmarks" / "baseline_optuna_mlflow.py")]
    base += ["--trials", str(args.trials), "--epochs", str(args.epochs), "--image-size", str(args.image_size)]
    base += ["--subset", str(args.subset), "--weights", args.weights, "--seed", "0", "--device", args.device]
    base += ["--storage", f"sqlite:///{work / 'baseline'}/optuna.db"]
    base += ["--tracking-uri", f"sqlite:///{work / 'baseline'}/mlflow.db"]
    return {"exptrack": ours, "baseline": base}


def run_once(name: str, command: list[str], work: Path, out: Path, tag: str) -> dict[str, Any]:
    """One arm's run in fresh stores; its summary and, for exptrack, its trials' records."""
    folder = work / tag
    command = [c.replace(str(work / name), str(folder)) for c in command]
    arm = run_arm(tag, command, folder, out, timeout=24 * 3600)
    study = "finetune" if name == "exptrack" else "baseline"
    summary = summarize_arm(arm, read_trials(f"sqlite:///{folder}/optuna.db", study))
    if name == "exptrack":
        summary["trials"] = exptrack_trials(f"sqlite:///{folder}/optuna.db")
    return summary


def exptrack_trials(storage: str) -> list[dict[str, Any]]:
    """Per finished trial: batch size, freeze depth, epochs run and the feature cache's record."""
    import optuna

    rows = []
    for t in optuna.load_study(study_name="finetune", storage=storage).get_trials(deepcopy=False):
        profile = t.user_attrs.get(records.PROFILE_ATTR) or {}
        if t.state.name not in ("COMPLETE", "PRUNED") or not profile:
            continue
        rows.append(
            {
                "batch_size": t.params["batch_size"],
                "freeze_depth": t.params["freeze_depth"],
                "epochs_run": len(t.intermediate_values),
                "feature_cache": profile.get(records.FEATURE_CACHE),
                "saved_s": profile.get(records.FEATURE_CACHE_SAVED, 0.0),
                "seconds_per_epoch": profile.get("seconds_per_epoch"),
            }
        )
    return rows


def adamw_step_gap(device: str, repeats: int = 5, steps: int = 5) -> dict[int, float]:
    """Seconds a step saved by fused AdamW over torch's default, per freeze depth of resnet18."""
    import torch

    from exptrack.training import backbones

    gaps = {}
    for depth in range(backbones.stage_count("resnet18") + 1):
        model = backbones.build_model("resnet18", "none", 10, depth, image_size=24).model.to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        for p in params:
            p.grad = torch.randn_like(p)
        times = {}
        for label, kwargs in (("default", {}), ("fused", {"fused": True})):
            optimizer = torch.optim.AdamW(params, lr=1e-3, **kwargs)
            optimizer.step()  # state allocated outside the timing
            runs = []
            for _ in range(repeats):
                start = time.perf_counter()
                for _ in range(steps):
                    optimizer.step()
                if device == "cuda":
                    torch.cuda.synchronize()
                runs.append((time.perf_counter() - start) / steps)
            times[label] = statistics.median(runs)
        gaps[depth] = times["default"] - times["fused"]
    return gaps


def levers(
    ours: list[dict[str, Any]], saving: float, gaps: dict[int, float], args: argparse.Namespace
) -> dict[str, Any]:
    """The exptrack arm's saving over the baseline split into cache, optimizer and other (seconds,
    mean over exptrack's runs)."""
    train = min(args.subset or DIGITS_TRAIN, DIGITS_TRAIN)
    cache, optimizer = [], []
    for run in ours:
        cache.append(sum(t["saved_s"] for t in run["trials"]))
        steps = [(t["epochs_run"] * -(-train // t["batch_size"]), t["freeze_depth"]) for t in run["trials"]]
        optimizer.append(sum(n * gaps[depth] for n, depth in steps))
    shares = {"cache_s": statistics.fmean(cache), "optimizer_s": statistics.fmean(optimizer)}
    shares["other_s"] = saving - shares["cache_s"] - shares["optimizer_s"]
    shares["saving_s"] = saving
    return shares


def report(
    runs: dict[str, list[dict[str, Any]]], gaps: dict[int, float], args: argparse.Namespace
) -> dict[str, Any]:
    wall = {name: statistics.fmean(r["wall_s"] for r in arm) for name, arm in runs.items()}
    best = {name: max((r["best_val_accuracy"] or 0.0) for r in arm) for name, arm in runs.items()}
    ratio = wall["exptrack"] / wall["baseline"]
    gap_points = 100 * (best["baseline"] - best["exptrack"])
    cache_status = [t["feature_cache"] for r in runs["exptrack"] for t in r["trials"]]
    return {
        "wall_s": wall,
        "best_val_accuracy": best,
        "ratio": ratio,
        "speedup": 1 / ratio,
        "best_gap_points": gap_points,
        "goals_met": {"ratio<=1/3": ratio <= GOALS["ratio"], "best within 1 point": gap_points <= 1.0},
        "levers": levers(runs["exptrack"], wall["baseline"] - wall["exptrack"], gaps, args),
        "feature_cache_status": {s: cache_status.count(s) for s in sorted(set(map(str, cache_status)))},
        "adamw_step_gap_s_by_depth": gaps,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for study_vs_baseline.json and logs")
    parser.add_argument("--work", type=Path, default=None, help="the arms' stores (default: OUT/work)")
    parser.add_argument(
        "--reduced", action="store_true", help="sizes for 2 shared cores: " + json.dumps(REDUCED)
    )
    parser.add_argument("--trials", type=int, default=STUDY["trials"])
    parser.add_argument("--epochs", type=int, default=STUDY["epochs"])
    parser.add_argument("--image-size", type=int, default=STUDY["image_size"])
    parser.add_argument("--subset", type=int, default=STUDY["subset"])
    parser.add_argument("--weights", default="none", choices=["none", "imagenet"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--rounds", type=int, default=2, help="A-B then B-A per two rounds")
    parser.add_argument("--exptrack-arg", action="append", default=[], help="extra `exp search` argument")
    args = parser.parse_args(argv)
    if args.reduced:
        for key, value in REDUCED.items():
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or args.out / "work"
    arms = commands(args, work)
    results: dict[str, Any] = {"command": [sys.executable, *sys.argv], "environment": environment()}
    results["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    runs: dict[str, list[dict[str, Any]]] = {"exptrack": [], "baseline": []}
    path = args.out / "study_vs_baseline.json"
    for round_ in range(args.rounds):
        order = ("exptrack", "baseline") if round_ % 2 == 0 else ("baseline", "exptrack")
        for name in order:
            run = run_once(name, arms[name], work, args.out, f"{name}-{round_ + 1}")
            runs[name].append(run)
            print(
                f"round {round_ + 1} {name}: {run['finished_trials']} trials in {run['wall_s']:.1f} s, best {run['best_val_accuracy']}",
                flush=True,
            )
            results["runs"] = runs
            path.write_text(json.dumps(results, indent=2))  # after each run: a cut-off run keeps what it has
    results["summary"] = report(runs, adamw_step_gap(args.device), args)
    path.write_text(json.dumps(results, indent=2))
    print(json.dumps(results["summary"], indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
