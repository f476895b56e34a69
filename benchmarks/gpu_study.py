"""The same study two ways, side by side: `exp search studies/finetune_gpu.py` against the plain
Optuna + MLflow script a user would write (benchmarks/baseline_optuna_mlflow.py), then a
compute-bound arm (benchmarks/throughput.py's loops). Results as JSON in --out.

    python benchmarks/gpu_study.py --out results/          # the GPU setting: 50 trials, 5 epochs, 32 px
    python benchmarks/gpu_study.py --out results/ --tiny   # a rehearsal on CPU in about a minute

Per arm: wall time of the whole command (imports included), trials finished, best val_accuracy,
each trial's end and first training step (Optuna's timestamps + the first step each arm stores),
so the gap between one trial's end and the next one's first step; the GPU's busy fraction sampled
with NVML (or nvidia-smi) over the arm's wall time. Figures that need a GPU are null with a reason
elsewhere, never estimated. Each arm gets --arm-timeout seconds; the speed-up is also given at the
trial count both arms reached, so a cut-off arm still compares like with like.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]  # exptrack from this checkout; the sibling scripts
from gpu_sampler import GpuSampler  # noqa: E402
from trial_timeline import read_trials, summarize_arm  # noqa: E402

GOALS = {"speedup": 10.0, "busy_fraction": 0.9, "gap_s": 1.0, "resnet50_samples_per_s": 5000.0}
TINY = {  # a rehearsal that runs every step on 2 CPU cores
    "trials": 2,
    "epochs": 1,
    "image_size": 16,
    "subset": 96,
    "compute_model": "resnet18",
    "compute_image_size": 16,
    "compute_batch": 8,
    "compute_steps": 2,
    "compute_warmup": 1,
}


def run_arm(
    name: str,
    command: list[str],
    work: Path,
    out: Path,
    timeout: float,
    extra_env: dict[str, str] | None = None,
    checkout: Path = REPO,
) -> dict[str, Any]:
    """Run one arm's command in `work`, with `extra_env` added to this process's environment (an
    arm's lever, e.g. OMP_WAIT_POLICY) and exptrack imported from `checkout` (another commit's
    worktree, for a before/after arm); its output goes to out/NAME.log."""
    work.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        **(extra_env or {}),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(checkout), os.environ.get("PYTHONPATH")])),
    }
    sampler = GpuSampler()
    started = time.time()
    with (out / f"{name}.log").open("w") as log, sampler.window():
        try:
            code: int | str = subprocess.run(
                command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            code = f"killed after {timeout:.0f} s"
    return {
        "command": command,
        "returncode": code,
        "started_at": started,
        "wall_s": time.time() - started,
        "gpu": sampler.summary(),
    }


def compare(ours: dict[str, Any], base: dict[str, Any], cuda: bool) -> dict[str, Any]:
    """Speed-up (baseline time / exptrack time) overall and at the trial count both reached."""
    n = min(ours["finished_trials"], base["finished_trials"])
    result: dict[str, Any] = {"equal_trials": n, "speedup_wall": base["wall_s"] / ours["wall_s"]}
    if n:
        result["speedup_at_equal_trials"] = base["finish_s"][n - 1] / ours["finish_s"][n - 1]
        result["best_at_equal_trials"] = {
            "exptrack": ours["best_by_trial"][n - 1],
            "baseline": base["best_by_trial"][n - 1],
        }
    result["goals"] = goals(ours, result, cuda)
    return result


def goals(ours: dict[str, Any], comparison: dict[str, Any], cuda: bool) -> dict[str, Any]:
    """Each of the issue's goals: met (true/false) with the figure, or null on CPU."""
    if not cuda:
        return {"met": None, "reason": "no CUDA device: the goals are for one GPU"}
    gap = ours["between_trials_s"]["median"]
    return {
        f"speedup>={GOALS['speedup']:g}x": comparison.get("speedup_at_equal_trials", 0) >= GOALS["speedup"],
        f"busy>={GOALS['busy_fraction']:g}": (ours["gpu"]["busy_fraction"] or 0) >= GOALS["busy_fraction"],
        f"gap<={GOALS['gap_s']:g}s (median)": gap is not None and gap <= GOALS["gap_s"],
    }


def compute_arm(args: argparse.Namespace, cuda: bool) -> dict[str, Any]:
    """Samples/s of exptrack's `fit` vs a plain fp32 DataLoader loop (benchmarks/throughput.py)."""
    import throughput
    import torch

    setting = argparse.Namespace(
        model=args.compute_model,
        image_size=args.compute_image_size,
        batch=args.compute_batch,
        steps=args.compute_steps,
        warmup=args.compute_warmup,
        device="auto",
        precision="auto",
        compile=False,
    )
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cudnn.benchmark = True  # both arms, as throughput.py does
    sampler = GpuSampler()
    with sampler.window():
        plain = throughput.plain_loop(setting, device)
        ours = throughput.exptrack_loop(setting)[0]
    result = {
        **{k: v for k, v in vars(setting).items()},
        "device": str(device),
        "plain_samples_per_s": plain,
        "exptrack_samples_per_s": ours,
        "ratio": ours / plain,
        "gpu": sampler.summary(),
    }
    goal = GOALS["resnet50_samples_per_s"]
    if cuda and args.compute_model == "resnet50" and args.compute_image_size == 224:
        result[f"goal>={goal:g}_samples_per_s"] = ours >= goal
    else:
        result[f"goal>={goal:g}_samples_per_s"] = None
        result["goal_reason"] = "the goal is for resnet50 at 224 px on one GPU"
    return result


def environment() -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "optuna": _version("optuna"),
        "mlflow": _version("mlflow") or _version("mlflow-skinny"),  # the GPU machine gets skinny
        "cuda": cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "cpus": os.cpu_count(),
        "host": platform.node(),
    }


def _version(distribution: str) -> str | None:
    """A package's version without importing it (mlflow takes seconds to import)."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def arm_commands(args: argparse.Namespace, work: Path) -> dict[str, list[str]]:
    sets = {
        "epochs": args.epochs,
        "image_size": args.image_size,
        "subset": args.subset,
        "weights": args.weights,
    }
    # both stop starting trials here, so they end before the hard limit (arm_timeout) kills them
    timeout = str(max(10, int(args.arm_timeout) - 30))
    stores = {
        arm: [
            "--storage",
            f"sqlite:///{work / arm}/optuna.db",
            "--tracking-uri",
            f"sqlite:///{work / arm}/mlflow.db",
        ]
        for arm in ("exptrack", "baseline")
    }
    ours = [
        sys.executable,
        "-m",
        "exptrack",
        "search",
        str(REPO / "studies" / "finetune_gpu.py"),
        "--trials",
        str(args.trials),
        "--seed",
        "0",
        "--timeout",
        timeout,
        *stores["exptrack"],
        *[x for k, v in sets.items() for x in ("--set", f"{k}={v}")],
        *args.exptrack_arg,
    ]
    base = [
        sys.executable,
        str(REPO / "benchmarks" / "baseline_optuna_mlflow.py"),
        "--trials",
        str(args.trials),
        "--epochs",
        str(args.epochs),
        "--image-size",
        str(args.image_size),
        "--subset",
        str(args.subset),
        "--weights",
        args.weights,
        "--seed",
        "0",
        "--timeout",
        timeout,
        *stores["baseline"],
    ]
    return {"exptrack": ours, "baseline": base}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for gpu_study.json and the arms' logs"
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="folder for the arms' stores (default: OUT/work)"
    )
    parser.add_argument("--tiny", action="store_true", help="rehearsal sizes: " + json.dumps(TINY))
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--subset", type=int, default=0)
    parser.add_argument("--weights", default="none", help="none: the GPU machine has no network for ImageNet")
    parser.add_argument("--arm-timeout", type=float, default=150.0, help="seconds per arm, hard limit")
    parser.add_argument("--exptrack-arg", action="append", default=[], help="extra `exp search` argument")
    parser.add_argument("--compute-model", default="resnet50")
    parser.add_argument("--compute-image-size", type=int, default=224)
    parser.add_argument("--compute-batch", type=int, default=256)
    parser.add_argument("--compute-steps", type=int, default=20)
    parser.add_argument("--compute-warmup", type=int, default=3)
    parser.add_argument("--skip-compute", action="store_true")
    args = parser.parse_args(argv)
    if args.tiny:
        for key, value in TINY.items():
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or args.out / "work"
    results: dict[str, Any] = {
        "command": [sys.executable, *sys.argv],
        "environment": environment(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    cuda = results["environment"]["cuda"]
    path = args.out / "gpu_study.json"
    for name, command in arm_commands(args, work).items():
        arm = run_arm(name, command, work / name, args.out, args.arm_timeout)
        study = "finetune-gpu" if name == "exptrack" else "baseline"
        results[name] = summarize_arm(arm, read_trials(f"sqlite:///{work / name}/optuna.db", study))
        path.write_text(json.dumps(results, indent=2))  # after each step: a cut-off run keeps what it has
        print(
            f"{name}: {results[name]['finished_trials']} trials in {arm['wall_s']:.1f} s, best {results[name]['best_val_accuracy']}"
        )
    results["comparison"] = compare(results["exptrack"], results["baseline"], cuda)
    path.write_text(json.dumps(results, indent=2))
    if not args.skip_compute:
        results["compute_bound"] = compute_arm(args, cuda)
        path.write_text(json.dumps(results, indent=2))
    print(
        json.dumps(
            {"comparison": results["comparison"], "compute_bound": results.get("compute_bound")}, indent=2
        )
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
