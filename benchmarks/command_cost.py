"""The fixed cost of `exp` commands (issue 20): two checkouts of exptrack as arms A and B, each
command a fresh process, alternating A-B-B-A per round; wall and CPU seconds per command.

    git worktree add /tmp/exptrack-before <commit>     # the arm to compare against
    python benchmarks/command_cost.py --a /tmp/exptrack-before --b . --rounds 2

Each round and arm gets a new folder with the checkout's studies/, search_spaces/ and dashboards/,
and runs there, in order: the tiny search on fresh stores (`search fresh`), one more trial on the
same stores (`search again`), `exp trials`, `exp export --top 1` and `exp --help`. CPU is the
process's user + system time (`os.wait4`). Both arms share the user's cache (MLflow's migrated
schema), warmed by one untimed pass of each arm. Prints every run, then per command the median
of each arm, B - A and B / A, and the 1-minute load average (read the figures beside it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY = ["--set", "epochs=1", "--set", "subset=200", "--set", "image_size=16", "--set", "weights=none"]
COMMANDS: dict[str, list[str]] = {
    "search fresh": ["search", "studies/finetune.py", "--trials", "1", *TINY],
    "search again": ["search", "studies/finetune.py", "--trials", "2", *TINY],
    "trials": ["trials", "finetune"],
    "export": ["export", "finetune", "--top", "1", "--out", "best"],
    "--help": ["--help"],
}


def run_one(checkout: Path, folder: Path, args: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of `exp ARGS` run from `checkout` in `folder`; a failure stops the run."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    began = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "exptrack", *args], cwd=folder, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - began
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"exp {' '.join(args)} failed in {folder}: {child.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def project(checkout: Path, scratch: Path, name: str) -> Path:
    """A new folder holding the checkout's study files, as a user's project would."""
    folder = scratch / name
    for part in ("studies", "search_spaces", "dashboards"):
        shutil.copytree(checkout / part, folder / part)
    return folder


def one_pass(checkout: Path, folder: Path) -> dict[str, tuple[float, float]]:
    return {name: run_one(checkout, folder, args) for name, args in COMMANDS.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", type=Path, required=True, help="checkout of arm A (before)")
    parser.add_argument("--b", type=Path, required=True, help="checkout of arm B (after)")
    parser.add_argument("--rounds", type=int, default=2, help="A-B-B-A rounds (2 rounds: 4 runs per arm)")
    args = parser.parse_args()
    arms = {"A": args.a.resolve(), "B": args.b.resolve()}
    figures: dict[str, dict[str, list[tuple[float, float]]]] = {a: {c: [] for c in COMMANDS} for a in arms}
    with tempfile.TemporaryDirectory() as name:
        scratch = Path(name)
        for arm, checkout in arms.items():  # caches and bytecode warmed, not timed
            one_pass(checkout, project(checkout, scratch, f"warm-{arm}"))
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        for round_ in range(args.rounds):
            for i, arm in enumerate(("A", "B", "B", "A")):
                measured = one_pass(arms[arm], project(arms[arm], scratch, f"r{round_}-{i}-{arm}"))
                for command, pair in measured.items():
                    figures[arm][command].append(pair)
                shown = "  ".join(f"{c} {w:.1f}/{u:.1f}" for c, (w, u) in measured.items())
                print(f"round {round_ + 1} {arm}: {shown}  (wall/CPU s)", flush=True)
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    report(figures)


def report(figures: dict[str, dict[str, list[tuple[float, float]]]]) -> None:
    print(
        f"{'command':14s} {'A wall':>7s} {'B wall':>7s} {'B-A':>6s} {'B/A':>5s} {'A CPU':>7s} {'B CPU':>7s} {'B-A':>6s}"
    )
    for command in COMMANDS:
        wall = {arm: statistics.median(w for w, _ in figures[arm][command]) for arm in figures}
        cpu = {arm: statistics.median(u for _, u in figures[arm][command]) for arm in figures}
        print(
            f"{command:14s} {wall['A']:7.2f} {wall['B']:7.2f} {wall['B'] - wall['A']:+6.2f} "
            f"{wall['B'] / wall['A']:5.2f} {cpu['A']:7.2f} {cpu['B']:7.2f} {cpu['B'] - cpu['A']:+6.2f}"
        )


if __name__ == "__main__":
    main()
