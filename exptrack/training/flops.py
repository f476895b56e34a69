"""FLOPs of a training step and what share of the hardware they used.

A step's FLOPs are counted once per model and input shape with `torch.utils.flop_counter` (on the
first real step of the first trial that needs them, ~40 ms extra on resnet18 on a CPU; then cached
for the process), so every trial can report achieved TFLOP/s, and on CUDA its model FLOPs
utilisation (MFU) against the device's dense bf16 peak. Where the peak is unknown (any CPU, a GPU
missing from the table) there is no MFU rather than one against a made-up peak.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar

import torch
from torch.utils.flop_counter import FlopCounterMode

T = TypeVar("T")

# Dense bf16 tensor-core peak in TFLOP/s (vendors' datasheets, without sparsity), by the model in
# `torch.cuda.get_device_name()` ("NVIDIA H100 80GB HBM3" -> H100; "NVIDIA H100 PCIe" -> its own).
BF16_PEAK_TFLOPS = {
    "A10": 125.0,
    "A100": 312.0,
    "L4": 121.0,
    "L40": 181.0,
    "L40S": 362.0,
    "H100": 989.0,  # SXM
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H200": 989.0,
    "H200 NVL": 835.0,
    "GH200": 989.0,
    "B200": 2250.0,
}

_PER_SAMPLE: dict[Hashable, float] = {}  # (model, freezing, input shape) -> FLOPs per training sample


def counted_step(key: Hashable, step: Callable[[], T], samples: int) -> tuple[T, float]:
    """Run one training step; (its result, FLOPs per sample), counted unless `key` was seen before.
    The count covers forward and backward as executed (frozen stages skip their weight gradients)."""
    if key in _PER_SAMPLE:
        return step(), _PER_SAMPLE[key]
    with FlopCounterMode(display=False) as counter:
        result = step()
    _PER_SAMPLE[key] = counter.get_total_flops() / max(1, samples)
    return result, _PER_SAMPLE[key]


def bf16_peak_tflops(device_name: str) -> float | None:
    """The table's peak for a CUDA device name, or None when the model is not in it."""
    tokens = device_name.replace("-", " ").split()
    for i, token in enumerate(tokens):
        variant = f"{token} {tokens[i + 1]}" if i + 1 < len(tokens) else ""
        if variant in BF16_PEAK_TFLOPS:
            return BF16_PEAK_TFLOPS[variant]
        if token in BF16_PEAK_TFLOPS:
            return BF16_PEAK_TFLOPS[token]
    return None


def utilisation(
    flops_per_sample: float, samples: int, seconds: float, device: torch.device
) -> dict[str, float]:
    """`flops_per_sample`, `achieved_tflops` (TFLOP/s over the training steps' wall time) and, on a
    CUDA device of known peak, `mfu` (achieved / dense bf16 peak, whatever the run's precision)."""
    figures = {"flops_per_sample": flops_per_sample}
    if not seconds:
        return figures
    achieved = flops_per_sample * samples / seconds / 1e12
    figures["achieved_tflops"] = achieved
    peak = bf16_peak_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    if peak:
        figures["mfu"] = achieved / peak
    return figures
