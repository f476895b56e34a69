"""A torch.profiler trace of a few steady-state training steps, only when asked (`exp search
--profile-trials K`, `exp train --profile`): a Chrome/Perfetto trace with shapes and memory, and a
table of the operators that took the most self time on CPU and CUDA. A run not traced gets a step
hook that does nothing, so it pays nothing for this.
"""

from __future__ import annotations

import contextlib
import csv
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity

from exptrack import records

SKIP_STEPS = 10  # at most: the first steps warm the allocator, cuDNN's autotuner and lazy imports
WARMUP_STEPS = 2  # traced but discarded: the profiler's own start-up
ACTIVE_STEPS = 5  # recorded
TOP_OPERATORS = 50  # rows of ops.csv


def no_step() -> None:
    """The step hook of a run that is not traced."""


@contextlib.contextmanager
def window(folder: Path | None, device: torch.device, steps_per_epoch: int) -> Iterator[Callable[[], None]]:
    """Yields the hook to call after each training step. With a `folder`, the profiler records
    ACTIVE_STEPS steps after up to SKIP_STEPS + WARMUP_STEPS (inside the first epoch when it is long
    enough) and writes `trace.json.gz` and `ops.csv` there; a run too short for the warm-up writes
    nothing."""
    if folder is None:
        yield no_step
        return
    skip = max(0, min(SKIP_STEPS, steps_per_epoch - WARMUP_STEPS - ACTIVE_STEPS))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    schedule = torch.profiler.schedule(
        skip_first=skip, wait=0, warmup=WARMUP_STEPS, active=ACTIVE_STEPS, repeat=1
    )
    with torch.profiler.profile(
        activities=activities,
        schedule=schedule,
        record_shapes=True,
        profile_memory=True,
        on_trace_ready=functools.partial(_write, folder, device),
    ) as profiler:
        yield profiler.step


def _write(folder: Path, device: torch.device, profiler: torch.profiler.profile) -> None:
    profiler.export_chrome_trace(str(folder / records.TRACE_FILE))  # gzipped by its name
    write_operators(profiler, folder / records.OPS_FILE, cuda=device.type == "cuda")


def _top(events: list[Any], cuda: bool) -> list[Any]:
    """The top operators by self CPU time and, on CUDA, by self GPU time (first): the ones that
    keep the GPU busy and the ones whose launches keep it waiting."""
    by_cpu = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:TOP_OPERATORS]
    if not cuda:
        return by_cpu
    by_gpu = sorted(events, key=lambda e: e.self_device_time_total, reverse=True)[:TOP_OPERATORS]
    return by_gpu + [e for e in by_cpu if all(e is not g for g in by_gpu)]


def write_operators(profiler: torch.profiler.profile, path: Path, cuda: bool) -> None:
    """The top operators by self time (`_top`), in ms and MB, summed over the recorded steps."""
    events = profiler.key_averages()
    ms, mb = 1e-3, 2.0**-20  # the profiler counts microseconds and bytes
    with path.open("w", newline="") as file:
        out = csv.writer(file)
        out.writerow(
            [
                "operator",
                "calls",
                "self_cpu_ms",
                "cpu_total_ms",
                "self_cuda_ms",
                "cuda_total_ms",
                "self_cpu_memory_mb",
                "self_cuda_memory_mb",
            ]
        )
        for e in _top(events, cuda):
            out.writerow(
                [
                    e.key,
                    e.count,
                    f"{e.self_cpu_time_total * ms:.3f}",
                    f"{e.cpu_time_total * ms:.3f}",
                    f"{e.self_device_time_total * ms:.3f}",
                    f"{e.device_time_total * ms:.3f}",
                    f"{e.self_cpu_memory_usage * mb:.3f}",
                    f"{e.self_device_memory_usage * mb:.3f}",
                ]
            )
