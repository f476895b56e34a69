"""Is `--workers K` ever slower than one worker on the same machine? Wall time of one seeded study
run by 1 and by K worker processes, each arm in a fresh folder, plus how many trials repeated
another's configuration (identical seed streams used to make the workers propose the same points).

    python benchmarks/workers.py                       # the issue's setting: 10 trials x 3 epochs,
                                                       # full digits (1,797), 32 px, on 2 cores
    python benchmarks/workers.py --workers 1 2 4 --trials 8

Every arm runs the real command, `exp search studies/finetune.py --seed 0 --workers K`, with
OMP_NUM_THREADS unset (the coordinator splits the cores). `--oversubscribe` adds the arm from
before the split: each of K workers running as many threads as the machine has cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(workers: int, trials: int, sets: list[str], threads: str | None) -> tuple[float, int]:
    """(wall seconds, trials whose parameters repeat an earlier trial's)."""
    import optuna

    folder = Path(tempfile.mkdtemp(prefix=f"workers-{workers}-"))
    for part in ("studies", "search_spaces", "dashboards"):
        shutil.copytree(REPO / part, folder / part)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = str(REPO)
    if threads:
        env["OMP_NUM_THREADS"] = threads
    command = [sys.executable, "-m", "exptrack", "search", "studies/finetune.py", "--trials", str(trials)]
    command += ["--seed", "0", "--workers", str(workers), "--pruner", "none", *sets]
    started = time.monotonic()
    subprocess.run(command, cwd=folder, env=env, check=True, capture_output=True)
    wall = time.monotonic() - started
    study = optuna.load_study(study_name="finetune", storage=f"sqlite:///{folder}/optuna.db")
    seen, repeats = set(), 0
    for trial in study.trials:
        key = tuple(sorted(trial.params.items()))
        repeats += key in seen
        seen.add(key)
    shutil.rmtree(folder, ignore_errors=True)
    return wall, repeats


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--oversubscribe", action="store_true", help="also run each worker on every core")
    args = parser.parse_args()
    sets = ["--set", f"epochs={args.epochs}", "--set", f"image_size={args.image_size}"]
    sets += ["--set", "subset=0", "--set", "weights=none"]  # full digits, offline
    cores = len(os.sched_getaffinity(0))
    print(f"{cores} cores, {args.trials} trials x {args.epochs} epochs, full digits, {args.image_size} px")
    arms = [(k, None) for k in args.workers]
    if args.oversubscribe:
        arms += [(k, str(cores)) for k in args.workers if k > 1]
    for workers, threads in arms:
        wall, repeats = run(workers, args.trials, sets, threads)
        how = f"{threads} threads each (oversubscribed)" if threads else "cores split"
        print(f"--workers {workers}: {wall:6.1f} s  ({how}; {repeats} trials repeated another's config)")


if __name__ == "__main__":
    main()
