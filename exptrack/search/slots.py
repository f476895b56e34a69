"""Where each worker of `--workers K` or `--gpus ... --per-gpu K` runs: its share of the CPU cores
(torch intra-op and inter-op threads, OpenMP/MKL for anything it starts) and, on GPUs, one device
(`CUDA_VISIBLE_DEVICES`) and a share of that device's memory.

Measured on 2 cores: two workers that each ran as many threads as the machine has cores took
317 s for what one worker did in 62-66 s; with one thread each, 72 s. Planning is plain arithmetic
on (core count, GPU free/total memory), so it is tested without a GPU.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence

from exptrack.errors import UserError, redact

THREADS_ENV = "EXPTRACK_THREADS"  # a worker's thread share, applied to torch when it starts
MEMORY_FRACTION_ENV = "EXPTRACK_GPU_MEMORY_FRACTION"  # a worker's share of its GPU's memory
MIN_SLOT_BYTES = 512 * 2**20  # below this a trial cannot even hold a ResNet-18 and a batch
MEMORY_HEADROOM = 0.95  # CUDA context and allocator slack stay outside the workers' shares


@dataclasses.dataclass(frozen=True)
class Slot:
    """One worker's place: its threads, and on a GPU the device and its share of the memory."""

    threads: int
    device: int | None = None
    memory_fraction: float | None = None  # of the device's total memory

    def env(self) -> dict[str, str]:
        """The worker's environment additions."""
        threads = str(self.threads)
        env = {THREADS_ENV: threads, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        if self.device is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(self.device)
        if self.memory_fraction is not None:
            env[MEMORY_FRACTION_ENV] = f"{self.memory_fraction:.4f}"
        return env


def available_cores() -> int:
    """Cores this process may run on (its affinity mask: taskset, cgroup cpusets, Slurm)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def thread_share(workers: int, cores: int, user_setting: str | None = None) -> int:
    """Threads per worker: an OMP_NUM_THREADS the user set wins; else the cores split evenly."""
    if user_setting and user_setting.isdigit() and int(user_setting) > 0:
        return int(user_setting)
    return max(1, cores // workers)


def cpu_slots(workers: int, cores: int, user_setting: str | None = None) -> list[Slot]:
    share = thread_share(workers, cores, user_setting)
    return [Slot(share) for _ in range(workers)]


def parse_gpus(text: str, count: int) -> list[int]:
    """`all` or `0,1,3` -> device indices, each checked against the `count` GPUs present."""
    if count == 0:
        raise UserError(
            "--gpus needs CUDA, and torch sees no GPU here (torch.cuda.is_available() is False); "
            "drop --gpus, or use --workers N on the CPU"
        )
    if text.strip() == "all":
        return list(range(count))
    try:
        devices = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(
            f"--gpus {text!r} is not a list of GPU indices; use e.g. --gpus 0,1 or --gpus all"
        ) from None
    wrong = [d for d in devices if not 0 <= d < count]
    if not devices or wrong or len(set(devices)) != len(devices):
        raise UserError(
            f"--gpus {text!r}: this machine has GPUs 0-{count - 1}; list each once, or use --gpus all"
        )
    return devices


def gpu_slots(
    devices: Sequence[int],
    per_gpu: int,
    free_bytes: Mapping[int, int],
    total_bytes: Mapping[int, int],
    cores: int,
) -> list[Slot]:
    """`per_gpu` workers on each device, each limited to an equal share of what is free on it now."""
    if per_gpu < 1:
        raise UserError(f"--per-gpu must be at least 1, got {per_gpu}")
    threads = max(1, cores // (len(devices) * per_gpu))
    slots = []
    for device in devices:
        share = free_bytes[device] * MEMORY_HEADROOM / per_gpu
        if share < MIN_SLOT_BYTES:
            raise UserError(
                f"GPU {device} has {free_bytes[device] / 2**30:.1f} GiB free: too little for {per_gpu} "
                f"workers (each needs {MIN_SLOT_BYTES / 2**30:.1f} GiB); lower --per-gpu or free the GPU"
            )
        fraction = share / total_bytes[device]
        slots += [Slot(threads, device, fraction) for _ in range(per_gpu)]
    return slots


def plan(workers: int, gpus: str | None, per_gpu: int) -> list[Slot]:
    """The slots of this machine for `--workers` or `--gpus`/`--per-gpu`."""
    if gpus is None:
        if per_gpu != 1:
            raise UserError("--per-gpu needs --gpus (e.g. --gpus all --per-gpu 2)")
        return cpu_slots(workers, available_cores(), os.environ.get("OMP_NUM_THREADS"))
    if workers != 1:
        raise UserError("--gpus starts one worker per GPU slot; drop --workers (use --per-gpu for more)")
    from exptrack.training.devices import cuda_device_count  # loads torch: only for --gpus

    devices = parse_gpus(gpus, cuda_device_count())
    memory = gpu_memory(devices)
    free = {d: m[0] for d, m in memory.items()}
    total = {d: m[1] for d, m in memory.items()}
    return gpu_slots(devices, per_gpu, free, total, available_cores())


def gpu_memory(devices: Sequence[int]) -> dict[int, tuple[int, int]]:
    """(free, total) bytes of each device, asked in a short process of its own: asking here would
    keep a CUDA context (a few hundred MB) on every GPU for as long as the coordinator waits."""
    query = (
        "import json, sys, torch; print(json.dumps([torch.cuda.mem_get_info(int(d)) for d in sys.argv[1:]]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", query, *map(str, devices)], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]  # the exception, after its traceback
        raise UserError(f"cannot read the GPUs' free memory ({redact(last)[:200]}); check nvidia-smi")
    return {d: (int(m[0]), int(m[1])) for d, m in zip(devices, json.loads(done.stdout), strict=True)}


def apply_in_worker() -> None:
    """In a worker process, before it trains: its thread share and GPU memory share."""
    threads, fraction = os.environ.get(THREADS_ENV), os.environ.get(MEMORY_FRACTION_ENV)
    if not threads and not fraction:
        return
    from exptrack.training.devices import take_share

    take_share(int(threads) if threads else None, float(fraction) if fraction else None)
