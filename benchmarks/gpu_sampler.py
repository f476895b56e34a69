"""`GpuSampler`: how busy the GPU was over a stretch of wall time, sampled in a thread with NVML
(pynvml, from nvidia-ml-py) or `nvidia-smi`; without either, a reason instead of a figure."""

from __future__ import annotations

import statistics
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class GpuSampler:
    """GPU utilization (% of time a kernel ran, per the driver) sampled every `period` seconds in a
    thread: NVML when pynvml imports and finds a GPU, else `nvidia-smi`, else a reason."""

    def __init__(self, period: float = 0.2) -> None:
        self.period = period
        self.samples: list[float] = []  # utilization, %
        self.memory_mb: list[float] = []
        self.source, self.reason = self._open()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _open(self) -> tuple[str | None, str | None]:
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            return "nvml", None
        except Exception as exc:
            nvml_error = f"NVML unavailable ({type(exc).__name__}: {exc})"
        try:
            self._smi()
            return "nvidia-smi", None
        except Exception as exc:
            return None, f"no GPU to sample: {nvml_error}; nvidia-smi: {type(exc).__name__}"

    def _smi(self) -> tuple[float, float]:
        query = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]
        out = subprocess.run(query, capture_output=True, text=True, check=True, timeout=10).stdout
        busy, memory = out.splitlines()[0].split(",")
        return float(busy), float(memory)

    def _read(self) -> tuple[float, float]:
        if self.source == "nvml":
            import pynvml

            rates = pynvml.nvmlDeviceGetUtilizationRates(self._handle)
            return float(rates.gpu), pynvml.nvmlDeviceGetMemoryInfo(self._handle).used / 2**20
        return self._smi()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            busy, memory = self._read()
            self.samples.append(busy)
            self.memory_mb.append(memory)

    @contextmanager
    def window(self) -> Iterator[GpuSampler]:
        if self.source:
            self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            if self.source:
                self._thread.join()

    def summary(self) -> dict[str, Any]:
        if not self.source:
            return {"busy_fraction": None, "reason": self.reason}
        if not self.samples:
            return {"busy_fraction": None, "reason": f"{self.source}: no sample taken (arm too short)"}
        return {
            "busy_fraction": statistics.fmean(self.samples) / 100,
            "samples": len(self.samples),
            "period_s": self.period,
            "source": self.source,
            "max_memory_used_mb": max(self.memory_mb),
        }
