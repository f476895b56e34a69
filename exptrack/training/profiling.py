"""Phase timings, throughput, memory and parameter counts of one training run.

Cheap enough for every step: a perf_counter pair per phase. On CUDA the phases are host time
(kernels run asynchronously); each epoch ends with a synchronize so epoch totals are exact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import resource
import sys
import time
from collections.abc import Iterator

import torch

from exptrack import records


@dataclasses.dataclass
class Profile:
    data_seconds: float = 0.0  # gathering and moving batches
    compute_seconds: float = 0.0  # forward + backward + optimizer step
    eval_seconds: float = 0.0
    train_samples: int = 0
    epoch_seconds: list[float] = dataclasses.field(default_factory=list)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            field = f"{name}_seconds"
            setattr(self, field, getattr(self, field) + time.perf_counter() - start)

    def summary(self, device: torch.device, trainable: int, frozen: int) -> dict[str, float]:
        """The figures logged on a trial's run."""
        train_seconds = self.data_seconds + self.compute_seconds
        figures = {
            "seconds_per_epoch": sum(self.epoch_seconds) / max(1, len(self.epoch_seconds)),
            "train_samples_per_second": self.train_samples / train_seconds if train_seconds else 0.0,
            "data_seconds": self.data_seconds,
            "compute_seconds": self.compute_seconds,
            "eval_seconds": self.eval_seconds,
            "trainable_params": float(trainable),
            "frozen_params": float(frozen),
            # CPU results are bit-identical only at the same intra-op thread count: `exp train` reuses it
            records.TORCH_THREADS: float(torch.get_num_threads()),
        }
        figures.update(peak_memory(device))
        return figures


def peak_memory(device: torch.device) -> dict[str, float]:
    if device.type == "cuda":
        return {"peak_cuda_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return {"peak_process_rss_mb": rss / (2**20 if sys.platform == "darwin" else 2**10)}


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
