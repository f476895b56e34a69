"""The optimizer a trial trains with, built from its config: AdamW (fused where torch has the
kernel) or SGD with Nesterov momentum, over the parameters that are not frozen."""

from __future__ import annotations

import torch
from torch import nn

from exptrack.config import TrialConfig

FUSED_ADAMW_DEVICES = ("cpu", "cuda")  # torch >= 2.4 has a fused AdamW kernel for both


def build(config: TrialConfig, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, weight_decay=config.weight_decay, momentum=0.9, nesterov=True
        )
    # adamw, fused where torch has the kernel (CPU and CUDA): one pass over all parameters instead
    # of several ops per tensor. resnet18's 11.2M parameters on 2 loaded CPU cores: 176 ms a step
    # fused against 1,159 ms for the default per-tensor loop and 604 ms for foreach (min of 5x10
    # steps; benchmarks/study_vs_baseline.py's no_fused arm measures a study without it); elsewhere
    # foreach. `fused_optimizer: false` keeps torch's default.
    if not config.fused_optimizer:  # torch's own default, what a plain script runs
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    fused = device.type in FUSED_ADAMW_DEVICES
    return torch.optim.AdamW(
        params, lr=config.lr, weight_decay=config.weight_decay, fused=fused, foreach=None if fused else True
    )
