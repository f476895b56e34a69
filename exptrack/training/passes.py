"""What runs per batch: one epoch's training pass, one optimiser step and the evaluation pass,
over the parts a run builds once (`Trainer`).

Apart from `fit.py`, which builds those parts and walks the epochs (setup facts, warm-up,
checkpoints, figures); these functions know nothing of a trial or a config.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import torch
from torch import nn

from exptrack.training import flops, tracing
from exptrack.training.profiling import Profile


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite: the run stops, it is never a success."""


@dataclasses.dataclass
class Trainer:
    """What one training step needs, built once per run. `model` is what the batches go through:
    the whole model, or with the feature cache the stages after the frozen ones."""

    model: nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]  # the model, or torch.compile of it
    frozen: list[nn.Module]
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    amp: torch.dtype | None
    profile: Profile
    flop_key: tuple[Hashable, ...]
    on_step: Callable[[], None] = tracing.no_step  # the trace window's step hook
    save: Callable[[int, list[dict[str, float]]], None] | None = None  # an epoch end's checkpoint


def train_epoch(trainer: Trainer, batches: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> float:
    t, profile = trainer, trainer.profile
    t.model.train()
    for module in t.frozen:  # frozen stages keep their batch-norm statistics
        module.eval()
    total: torch.Tensor | None = None
    count = 0
    for step in range(1, 1 << 62):
        with profile.phase("data"):
            batch = next(batches, None)
            if batch is None:
                break
            x, y = batch
        with profile.phase("compute"):
            if profile.flops_per_sample is None:  # the run's first step, counted on the eager model
                step_fn = functools.partial(_step, t.model, t.loss_fn, t.optimizer, x, y, t.amp)
                loss, profile.flops_per_sample = flops.counted_step(
                    (*t.flop_key, *x.shape[1:]), step_fn, len(y)
                )
            else:
                loss = _step(t.forward, t.loss_fn, t.optimizer, x, y, t.amp)
            total = loss.detach() * len(y) if total is None else total + loss.detach() * len(y)
            count += len(y)
            # On CUDA a per-step finiteness check would sync every step; check every 16 steps.
            if (step % 16 == 0 or not x.is_cuda) and not torch.isfinite(total):
                raise NonFiniteLossError(f"training loss is not finite at step {step}")
        t.on_step()
    profile.train_samples += count
    with profile.phase("compute"):  # float() waits for the queued CUDA steps: count them as compute
        mean = float(total) / count if total is not None and count else math.nan
    if not math.isfinite(mean):
        raise NonFiniteLossError("training loss is not finite at the end of the epoch")
    return mean


def _step(
    forward: Callable[[torch.Tensor], torch.Tensor],
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    amp: torch.dtype | None,
) -> torch.Tensor:
    with autocast(x.device, amp):
        loss = loss_fn(forward(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: nn.Module,
    amp: torch.dtype | None,
) -> tuple[float, float]:
    """(mean loss, accuracy) over the validation batches."""
    model.eval()
    total_loss, correct, n = 0.0, 0.0, 0
    sums: list[torch.Tensor] = []
    for x, y in batches:
        with autocast(x.device, amp):
            logits = model(x)
        # kept on the device and summed once at the end: no sync per batch
        sums.append(torch.stack([loss_fn(logits.float(), y) * len(y), (logits.argmax(1) == y).sum().float()]))
        n += len(y)
    if sums:
        total_loss, correct = torch.stack(sums).sum(0).tolist()
    return total_loss / max(1, n), correct / max(1, n)


def autocast(device: torch.device, amp: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp)
