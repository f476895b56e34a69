"""Profiling: cost figures on every trial, and what they are measured against."""

from __future__ import annotations

import pytest

from exptrack.config import TrialConfig
from exptrack.training import flops

TINY = TrialConfig(epochs=1, subset=96, image_size=16, weights="none", batch_size=32)


def test_the_bf16_peak_is_read_from_the_device_name_and_unknown_devices_have_none() -> None:
    assert flops.bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert flops.bf16_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert flops.bf16_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert flops.bf16_peak_tflops("NVIDIA L40S") == 362.0 and flops.bf16_peak_tflops("NVIDIA L4") == 121.0
    assert flops.bf16_peak_tflops("NVIDIA A10G") is None  # not in the table: no MFU, not a guess
    assert flops.bf16_peak_tflops("NVIDIA GeForce GTX 1080") is None


@pytest.mark.gpu
def test_on_cuda_a_trial_reports_gpu_phase_times_its_own_memory_peaks_and_mfu() -> None:
    import torch

    from exptrack.training import fit

    small = fit.fit(TINY.replace(device="cuda"), warn=lambda _: None).profile
    big = fit.fit(TINY.replace(device="cuda", batch_size=96, image_size=64), warn=lambda _: None).profile
    again = fit.fit(TINY.replace(device="cuda"), warn=lambda _: None).profile
    for figures in (small, big, again):
        assert figures["compute_seconds"] > 0 and figures["eval_seconds"] > 0
        assert 0 < figures["peak_cuda_allocated_mb"] <= figures["peak_cuda_reserved_mb"]
        assert figures["flops_per_sample"] > 0 and figures["achieved_tflops"] > 0
    # peaks are reset per trial: the small trial after the big one is back to its own level
    assert again["peak_cuda_allocated_mb"] < big["peak_cuda_allocated_mb"]
    if flops.bf16_peak_tflops(torch.cuda.get_device_name()) is not None:
        assert 0 < big["mfu"] < 1
