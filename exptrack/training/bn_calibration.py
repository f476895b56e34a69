"""Frozen batch norm of a randomly initialised backbone gets the training split's statistics.

Frozen stages keep batch norm in eval mode (that is what makes the frozen-feature cache exact), so
they normalise with their running statistics. ImageNet weights and a user's state dict carry real
ones; a random init (`weights: none`, or ImageNet unavailable offline) holds torch's defaults
(mean 0, var 1), and the frozen stages then pass on unnormalised activations: on digits a trial
reached 0.267 val accuracy as shipped against 0.710 with batch norm left in train mode
(benchmarks/README.md). So before training, one no-grad pass over the unaugmented train split
through the frozen prefix, with only its batch-norm layers in train mode, sets their statistics;
then they go back to eval mode and stay fixed, as frozen stages do.

The pass is a function of the frozen weights, the data and the image geometry, never of the
trial (fixed batches of `BATCH` in split order), so it is bit-identical for every trial sharing
the feature cache's key (same init seed, size, data, depth): it runs once per key and process,
later trials load the stored statistics. Stage j's statistics depend only on stages 1..j, so a
depth-e calibration equals the first e stages of any deeper one (the cache's seeding stays exact).

Only the batch-norm layers are put in train mode, not the whole prefix as
`torch.optim.swa_utils.update_bn` does: EfficientNet's stochastic depth would then drop blocks
at random, drawing from the trial's RNG. Each batch's `momentum` is its share of the samples
seen so far, so the running mean is the split's sample-weighted mean (momentum=None would weight
the short last batch like a full one).
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Hashable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from exptrack.training import weights

BATCH = 256  # samples per calibration forward, whatever the trial's batch size (as evaluation batches)
_KEEP = 64  # calibrations remembered per process: a resnet18's batch-norm buffers are 38 KB
_STORE: collections.OrderedDict[Hashable, list[dict[str, torch.Tensor]]] = collections.OrderedDict()
STATE = "calibrated on the train split"  # the trial's `frozen_batchnorm` setup fact (one tag)


def needed(weights_source: str) -> bool:
    """Whether the frozen statistics were never fitted to data: a random init. ImageNet weights
    and a state dict from a file or URI keep their own."""
    return weights_source in ("none", weights.RANDOM_FALLBACK)


def calibrate(
    key: Hashable,
    prefix: list[nn.Module],
    train_x: torch.Tensor,
    normalize: Callable[[torch.Tensor], torch.Tensor],
    amp: torch.dtype | None,
) -> bool:
    """Set the batch-norm statistics of the frozen `prefix` from the train images `train_x`
    (stored for `key` after the first time); False where it has no batch norm or too few images."""
    layers = [m for runner in prefix for m in runner.modules() if isinstance(m, _BatchNorm)]
    if not layers or len(train_x) < 2:  # train-mode batch norm needs two values per channel
        return False
    if key not in _STORE:
        _fit(layers, prefix, train_x, normalize, amp)
        _STORE[key] = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in layers]
        while len(_STORE) > _KEEP:
            _STORE.popitem(last=False)
    _STORE.move_to_end(key)
    for layer, state in zip(layers, _STORE[key], strict=True):
        layer.load_state_dict(state)
    return True


@torch.no_grad()
def _fit(
    layers: list[_BatchNorm],
    prefix: list[nn.Module],
    train_x: torch.Tensor,
    normalize: Callable[[torch.Tensor], torch.Tensor],
    amp: torch.dtype | None,
) -> None:
    """One pass over `train_x` in fixed batches with only `layers` in train mode."""
    for runner in prefix:
        runner.eval()
    momenta = [m.momentum for m in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.train()
    seen = 0
    try:
        for start, stop in batch_bounds(len(train_x)):
            seen += stop - start
            for layer in layers:  # the first batch's share is 1: it replaces the defaults
                layer.momentum = (stop - start) / seen
            x = normalize(train_x[start:stop])
            with _autocast(x.device, amp):
                for runner in prefix:
                    x = runner(x)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
            layer.eval()


def batch_bounds(n: int) -> list[tuple[int, int]]:
    """(start, stop) of batches of `BATCH` over n samples; a last batch of one sample joins the one
    before (train-mode batch norm on a 1x1 feature map needs two samples)."""
    bounds = [(start, min(start + BATCH, n)) for start in range(0, n, BATCH)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def _autocast(device: torch.device, amp: torch.dtype | None) -> contextlib.AbstractContextManager[object]:
    return torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()


def clear() -> None:
    """Forget every stored calibration of this process."""
    _STORE.clear()
