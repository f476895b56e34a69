"""Cost figures of one training run, cheap enough for every trial: phase times, throughput, FLOPs
and utilisation (`flops`), this trial's peak memory and the parameter counts.

Phase times (`data`, `compute`, `eval`) use the host clock on CPU and CUDA events on CUDA, where
kernels run asynchronously and a host clock would time the launches, not the GPU. The figures keep
bare names (`seconds_per_epoch`); the tracker files them under `profile/` on MLflow.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from exptrack import records
from exptrack.training import flops

PHASES = ("data", "compute", "eval")
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclasses.dataclass
class Profile:
    device: torch.device
    seconds: dict[str, float] = dataclasses.field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    train_seconds: float = 0.0  # host wall clock of the training steps; each epoch's ends synchronized
    train_samples: int = 0
    epoch_seconds: list[float] = dataclasses.field(default_factory=list)
    flops_per_sample: float | None = None  # forward + backward of one training sample, once counted
    _events: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = dataclasses.field(default_factory=list)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self.device.type != "cuda":
            start = time.perf_counter()
            try:
                yield
            finally:
                self.seconds[name] += time.perf_counter() - start
            return
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        try:
            yield
        finally:
            end.record()  # read in `settle`, after the epoch's synchronize: no sync per step
            self._events.append((name, begin, end))

    def settle(self) -> None:
        """Add up the CUDA event pairs recorded since the last call; call after a synchronize."""
        for name, begin, end in self._events:
            self.seconds[name] += begin.elapsed_time(end) / 1000.0
        self._events.clear()

    def summary(self, trainable: int, frozen: int, memory: TrialMemory) -> dict[str, float]:
        """The figures logged on a trial's run."""
        self.settle()
        figures = {
            "seconds_per_epoch": sum(self.epoch_seconds) / max(1, len(self.epoch_seconds)),
            "train_seconds": self.train_seconds,
            "train_samples_per_second": self.train_samples / self.train_seconds
            if self.train_seconds
            else 0.0,
            **{f"{phase}_seconds": seconds for phase, seconds in self.seconds.items()},
            "trainable_params": float(trainable),
            "frozen_params": float(frozen),
            # CPU results are bit-identical only at the same intra-op thread count: `exp train` reuses it
            records.TORCH_THREADS: float(torch.get_num_threads()),
        }
        if self.flops_per_sample:
            figures.update(
                flops.utilisation(self.flops_per_sample, self.train_samples, self.train_seconds, self.device)
            )
        figures.update(memory.figures())
        return figures


class TrialMemory:
    """Peak memory of this trial, not of the process so far: started before the trial builds
    anything. On CUDA the allocator's peak statistics are reset; on Linux the process's resident
    high-water mark (VmHWM) is reset too, after handing the previous trials' freed heap back to the
    system (`malloc_trim`), so the peak measures what this trial held. Where VmHWM cannot be reset
    (macOS, a locked-down /proc) the figure is the process's peak since it started, and named so."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _trim_heap()
        self.start_rss_mb = _status_mb("VmRSS")
        self.per_trial = self.start_rss_mb is not None and _reset_rss_peak()

    def figures(self) -> dict[str, float]:
        figures: dict[str, float] = {}
        if self.device.type == "cuda":
            figures["peak_cuda_allocated_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
            figures["peak_cuda_reserved_mb"] = torch.cuda.max_memory_reserved(self.device) / 2**20
        peak = _status_mb("VmHWM") if self.per_trial else None
        if peak is not None and self.start_rss_mb is not None:
            figures["peak_rss_mb"] = peak  # the process's resident memory at its highest in this trial
            figures["peak_rss_growth_mb"] = max(0.0, peak - self.start_rss_mb)  # above what it held before
        else:
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
            figures["process_peak_rss_mb"] = rss / (2**20 if sys.platform == "darwin" else 2**10)
        return figures


def _status_mb(field: str) -> float | None:
    """A `VmRSS:  123 kB` line of /proc/self/status in MiB; None off Linux."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_rss_peak() -> bool:
    """Linux >= 4.0: writing 5 to clear_refs sets VmHWM to the current RSS (proc(5))."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def _trim_heap() -> None:
    """glibc keeps freed heap pages; give them back so the next peak starts from live memory."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def physical_gpu(device_name: str) -> str | None:
    """The GPU a run with `device=device_name` trains on, as `CUDA_VISIBLE_DEVICES` names it (so
    workers on one host stay apart in the system metrics); None on CPU."""
    if device_name == "cpu" or not torch.cuda.is_available():
        return None
    ordinal = torch.cuda.current_device()
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return visible[ordinal] if ordinal < len(visible) else str(ordinal)
