"""The training loop: one `TrialConfig` in, per-epoch metrics out through a reporter.

No optuna or mlflow here: the search hands in a reporter that forwards to both, `exp train` one
that logs a standalone run, tests a plain list. The dataset lives on the training device as
tensors (digits at 32 px: 1.8k x 3 x 32 x 32 fp32 = 22 MB), so there are no DataLoader round trips.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import torch
from torch import nn

from exptrack import data, losses, models
from exptrack.config import TrialConfig
from exptrack.errors import UserError
from exptrack.profiling import Profile, reset_peak_memory


class Reporter(Protocol):
    """Where training sends what it learns; `on_epoch` returning True stops the run (pruning)."""

    def on_setup(self, facts: Mapping[str, Any]) -> None: ...

    def on_epoch(self, epoch: int, metrics: Mapping[str, float]) -> bool: ...


class NullReporter:
    def on_setup(self, facts: Mapping[str, Any]) -> None:
        pass

    def on_epoch(self, epoch: int, metrics: Mapping[str, float]) -> bool:
        return False


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite: the run stops, it is never a success."""


@dataclasses.dataclass
class FitResult:
    history: list[dict[str, float]]  # one entry per finished epoch, with "epoch"
    profile: dict[str, float]
    stopped_early: bool  # the reporter asked to stop (a pruned trial)
    weights_source: str
    model: nn.Module

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA device is visible; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise UserError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


def autocast_dtype(config: TrialConfig, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA by default; fp32 (no autocast) on CPU, where bf16 is slow."""
    precision = config.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision not in ("fp32", "bf16"):
        raise UserError(f"unknown precision {config.precision!r}; use auto, fp32 or bf16")
    return torch.bfloat16 if precision == "bf16" else None


def fit(
    config: TrialConfig, reporter: Reporter | None = None, warn: Callable[[str], None] = print
) -> FitResult:
    """Train `config` for its epochs, evaluating after each; the reporter may stop it early."""
    reporter = reporter or NullReporter()
    device = resolve_device(config.device)
    amp = autocast_dtype(config, device)
    torch.manual_seed(config.seed)
    split = data.load(config)
    built = models.build_model(config.backbone, config.weights, split.num_classes, config.freeze_depth, warn)
    split = data.normalize(split.to(device), built.mean, built.std)
    model = _prepare(built.model, device)
    loss_fn = losses.build_loss(config.loss, config.loss_params)
    optimizer = _optimizer(config, model)
    trainable, frozen = models.parameter_counts(model)
    reporter.on_setup(
        {
            "weights_source": built.weights_source,
            "device": str(device),
            "train_samples": len(split.train_y),
            "val_samples": len(split.val_y),
            "num_classes": split.num_classes,
            "trainable_params": trainable,
            "frozen_params": frozen,
        }
    )
    gen = torch.Generator(device=device).manual_seed(config.seed)
    profile, history = Profile(), []
    reset_peak_memory(device)
    stopped = False
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        train_loss = _train_epoch(
            model, built.frozen_modules, split, loss_fn, optimizer, config, gen, amp, profile
        )
        with profile.phase("eval"):
            val_loss, val_acc = evaluate(model, split, loss_fn, config.batch_size, amp)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        profile.epoch_seconds.append(time.perf_counter() - start)
        history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_accuracy": val_acc,
            }
        )
        if reporter.on_epoch(epoch, {k: v for k, v in history[-1].items() if k != "epoch"}):
            stopped = True
            break
    return FitResult(
        history, profile.summary(device, trainable, frozen), stopped, built.weights_source, model
    )


def _prepare(model: nn.Module, device: torch.device) -> nn.Module:
    if device.type == "cuda":
        return model.to(device, memory_format=torch.channels_last)
    return model.to(device)


def _optimizer(config: TrialConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, weight_decay=config.weight_decay, momentum=0.9, nesterov=True
        )
    raise UserError(f"unknown optimizer {config.optimizer!r}; use adamw or sgd")


def _train_epoch(
    model: nn.Module,
    frozen: list[nn.Module],
    split: data.TensorSplit,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: TrialConfig,
    gen: torch.Generator,
    amp: torch.dtype | None,
    profile: Profile,
) -> float:
    model.train()
    for module in frozen:  # frozen stages keep their batch-norm statistics
        module.eval()
    # On CUDA a per-step finiteness check would sync every step; check every 16 steps instead.
    check_every = 16 if split.train_x.is_cuda else 1
    total = torch.zeros((), device=split.train_x.device)
    count = 0
    batches = data.batches(split.train_x, split.train_y, config.batch_size, gen)
    for step in range(1, 1 << 62):
        with profile.phase("data"):
            batch = next(batches, None)
            if batch is None:
                break
            x, y = batch
            if x.is_cuda:
                x = x.contiguous(memory_format=torch.channels_last)
        with profile.phase("compute"):
            loss = _step(model, loss_fn, optimizer, x, y, amp)
            total += loss.detach() * len(y)
            count += len(y)
            if step % check_every == 0 and not torch.isfinite(total):
                raise NonFiniteLossError(f"training loss is not finite at step {step}")
    profile.train_samples += count
    mean = float(total) / max(1, count)
    if not math.isfinite(mean):
        raise NonFiniteLossError("training loss is not finite at the end of the epoch")
    return mean


def _step(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    amp: torch.dtype | None,
) -> torch.Tensor:
    with _autocast(x.device, amp):
        loss = loss_fn(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


@torch.no_grad()
def evaluate(
    model: nn.Module,
    split: data.TensorSplit,
    loss_fn: nn.Module,
    batch_size: int,
    amp: torch.dtype | None,
) -> tuple[float, float]:
    """(mean loss, accuracy) on the validation split."""
    model.eval()
    total_loss = torch.zeros((), device=split.val_x.device)
    correct = torch.zeros((), device=split.val_x.device, dtype=torch.int64)
    for x, y in data.batches(split.val_x, split.val_y, max(batch_size, 256)):
        if x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(x.device, amp):
            logits = model(x)
        total_loss += loss_fn(logits.float(), y) * len(y)
        correct += (logits.argmax(1) == y).sum()
    n = max(1, len(split.val_y))
    return float(total_loss) / n, float(correct) / n


def _autocast(device: torch.device, amp: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp)
