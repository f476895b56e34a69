"""The training loop: one `TrialConfig` in, per-epoch metrics out through a reporter.

No optuna or mlflow here: the search hands in a reporter that forwards to both, `exp train` one
that logs a standalone run, tests a plain list. Batches come from `batching`: on CUDA a dataset
that fits stays on the GPU as uint8 (digits at 32 px: 1.8k x 3 x 32 x 32 = 5.5 MB), so there are
no DataLoader round trips; bf16 autocast, channels_last and fused AdamW on CUDA.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from exptrack import records
from exptrack.config import TrialConfig
from exptrack.errors import UserError
from exptrack.training import (
    backbones,
    batching,
    bn_calibration,
    checkpoints,
    datasets,
    feature_cache,
    losses,
    optimizers,
    passes,
    progress,
    tracing,
    weights,
)
from exptrack.training.passes import NonFiniteLossError as NonFiniteLossError  # callers catch fit's
from exptrack.training.profiling import Profile, TrialMemory


class Reporter(Protocol):
    """Where training sends what it learns; `on_epoch` returning True stops the run (pruning)."""

    def on_setup(self, facts: Mapping[str, Any]) -> None: ...

    def on_epoch(self, epoch: int, metrics: Mapping[str, float]) -> bool: ...


class NullReporter:
    def on_setup(self, facts: Mapping[str, Any]) -> None:
        pass

    def on_epoch(self, epoch: int, metrics: Mapping[str, float]) -> bool:
        return False


@dataclasses.dataclass
class FitResult:
    """What one training run reports. Its figures' names are declared in core, not here:
    `records.EPOCH_METRICS` (each `history` entry's keys) and `records.PROFILE_FIGURES` /
    `records.PROFILE_TEXT` (`profile`'s keys). A study file's `metric=` and constraints are checked
    against them when the file loads (core `study.py`) and the runs view picks its columns by them
    (tracking), and neither may import training; `tests/training/test_train.py` holds a real fit's
    keys to that list."""

    history: list[dict[str, float]]  # one entry per finished epoch, with "epoch"
    # cost figures under bare names (`seconds_per_epoch`, `flops_per_sample`); `feature_cache` is text
    profile: dict[str, float | str]
    stopped_early: bool  # the reporter asked to stop (a pruned trial)
    weights_source: str
    model: nn.Module
    example: torch.Tensor | None = None  # two validation inputs as the model takes them, on the CPU
    # test_accuracy and test_loss of the trained model, when asked for and the dataset has a test split
    test: dict[str, float] = dataclasses.field(default_factory=dict)
    test_samples: int = 0  # the test split's size (0: none)

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


def resolve_device(name: str) -> torch.device:
    """`auto` -> CUDA when present, else CPU; `cuda` without CUDA is the user's to fix."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA device is visible; use --device cpu or auto")
    return torch.device(name)


def autocast_dtype(config: TrialConfig, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA by default; fp32 (no autocast) on CPU, where bf16 is slow."""
    precision = config.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return torch.bfloat16 if precision == "bf16" else None


def fit(
    config: TrialConfig,
    reporter: Reporter | None = None,
    warn: Callable[[str], None] = print,
    trace_dir: Path | None = None,
    test: bool = False,
    store: checkpoints.Store | None = None,
) -> FitResult:
    """Train `config` for its epochs, evaluating after each; the reporter may stop it early. With
    `trace_dir`, a few steady-state steps are traced there (`tracing.window`). With `test`, the
    trained model is scored once on the test split at the end (`exp train`, `exp confirm`); a
    search's trial never asks, so neither its value nor its pruning can depend on the test images.
    With `store` (a search trial's reporter), epoch ends are checkpointed and a retry resumes."""
    reporter = reporter or NullReporter()
    device = resolve_device(config.device)
    memory = TrialMemory(device)  # before the data and model: they are this trial's memory too
    torch.manual_seed(config.seed)
    geometry = datasets.Geometry(*backbones.preprocessing(config.backbone).geometry(config.image_size))
    split = datasets.load(config, geometry)
    built = backbones.build_model(
        config.backbone, config.weights, split.num_classes, config.freeze_depth, warn, geometry.size
    )
    model = _prepare(built.model, device)
    amp = autocast_dtype(config, device)
    normalize = batching.Normalizer(device, built.mean, built.std)
    calibrate = bn_calibration.needed(built.weights_source)
    cache = feature_cache.plan(
        feature_cache.Inputs(config, model, split, geometry, normalize, amp, calibrate), warn
    )
    source = _batches(config, split, device, built, cache)
    trainer = passes.Trainer(
        cache.net,
        _compiled_step(config, cache.net),
        built.frozen_modules,
        losses.build_loss(config.loss, config.loss_params),
        optimizers.build(config, model, device),
        amp,
        Profile(device),
        # FLOPs depend on the architecture, what is frozen and the input shape (added per batch)
        (config.backbone, config.freeze_depth, split.num_classes),
    )
    trainable, frozen = backbones.parameter_counts(model)
    reporter.on_setup(
        {
            "weights_source": built.weights_source,
            "device": str(device),
            "batching": type(source).__name__,
            records.DATASET_FACT: config.dataset,
            records.DATASET_DIGEST_FACT: split.digest,
            **split.sizes(),
            "num_classes": split.num_classes,
            "trainable_params": trainable,
            "frozen_params": frozen,
            **({"frozen_batchnorm": bn_calibration.STATE} if cache.calibrated else {}),
        }
    )
    _warm_up(trainer, source, config)
    frozen_stages = built.frozen_modules
    resumed = checkpoints.resume(store, model, frozen_stages, trainer.optimizer, warn)
    if store is not None:
        trainer.save = functools.partial(checkpoints.save, store, model, frozen_stages, trainer.optimizer)
    steps = len(batching.batch_slices(len(split.train_y), config.batch_size))
    with tracing.window(trace_dir, device, steps) as on_step:
        trainer.on_step = on_step
        history, stopped = _epochs(config, trainer, source, reporter, resumed)
    figures: dict[str, float | str] = {**trainer.profile.summary(trainable, frozen, memory)}
    figures.update(cache.figures(len(history)))
    # what a logged model's signature and input example are made from: two validation images as
    # the model sees them (normalised float32), on the CPU where a logged model is loaded
    example = batching.Normalizer(torch.device("cpu"), built.mean, built.std)(split.val_x[:2].cpu())
    scored = _test_metrics(trainer, model, split, normalize, config) if test and not stopped else {}
    return FitResult(
        history, figures, stopped, built.weights_source, model, example, scored, len(split.test_y)
    )


def _test_metrics(
    trainer: passes.Trainer, model: nn.Module, split: datasets.TensorSplit, normalize: batching.Normalizer, config: TrialConfig
) -> dict[str, float]:
    """The whole trained model (not the feature cache's tail) on the test images, moved to the
    device a batch at a time: the test split never joins the training set's device copy."""
    if not len(split.test_y):
        return {}
    size = max(config.batch_size, 256)
    batches = (
        (normalize(split.test_x[i : i + size]), split.test_y[i : i + size].to(normalize.device))
        for i in range(0, len(split.test_y), size)
    )
    loss, accuracy = passes.evaluate(model, batches, trainer.loss_fn, trainer.amp)
    return {"test_accuracy": accuracy, "test_loss": loss}


def _batches(
    config: TrialConfig,
    split: datasets.TensorSplit,
    device: torch.device,
    built: backbones.BuiltModel,
    cache: feature_cache.Plan,
) -> batching.DeviceBatches | batching.LoaderBatches | batching.FeatureBatches:
    """Cached frozen features where the cache serves this trial, else images."""
    if cache.features is None:
        return batching.make(config, split, device, built.mean, built.std)
    return batching.FeatureBatches(cache.features.train, cache.features.val, split, config)


def _epochs(
    config: TrialConfig,
    trainer: passes.Trainer,
    source: batching.DeviceBatches | batching.LoaderBatches | batching.FeatureBatches,
    reporter: Reporter,
    resumed: list[dict[str, float]],
) -> tuple[list[dict[str, float]], bool]:
    """Train and evaluate epoch by epoch after the `resumed` ones: (the history, whether the
    reporter stopped it)."""
    with progress.task("epochs", config.epochs) as shown:  # the trial's own bar, with an ETA
        if resumed:
            shown.advance(len(resumed))
        return _epoch_loop(config, trainer, source, reporter, shown, resumed)


def _epoch_loop(
    config: TrialConfig,
    trainer: passes.Trainer,
    source: batching.DeviceBatches | batching.LoaderBatches | batching.FeatureBatches,
    reporter: Reporter,
    shown: progress.Task,
    resumed: list[dict[str, float]],
) -> tuple[list[dict[str, float]], bool]:
    profile, device, history = trainer.profile, trainer.profile.device, list(resumed)
    for epoch in range(len(resumed) + 1, config.epochs + 1):
        start = time.perf_counter()
        train_loss = passes.train_epoch(trainer, source.train(epoch))
        profile.train_seconds += time.perf_counter() - start  # train_epoch ends synchronized
        with profile.phase("eval"):
            val_loss, val_acc = passes.evaluate(
                trainer.model, source.val(max(config.batch_size, 256)), trainer.loss_fn, trainer.amp
            )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            profile.settle()
        profile.epoch_seconds.append(time.perf_counter() - start)
        metrics = {"train_loss": train_loss, "val_loss": val_loss, "val_accuracy": val_acc}
        history.append({"epoch": epoch, **metrics})
        shown.advance(1)
        if reporter.on_epoch(epoch, metrics):
            return history, True
        if trainer.save is not None and epoch < config.epochs:  # after the last, only the tell is left
            trainer.save(epoch, history)
    return history, False


_WARM: set[tuple[str, str]] = set()  # (device, backbone) pairs this process has warmed up


def _warm_up(
    trainer: passes.Trainer,
    source: batching.DeviceBatches | batching.LoaderBatches | batching.FeatureBatches,
    config: TrialConfig,
) -> None:
    """One untimed forward and backward before a process's first trial of a backbone on a device,
    so that its one-time costs (oneDNN/cuDNN primitive creation and library loading, thread pools,
    the allocator's first growth) stay out of that trial's time figures: a time objective must not
    penalise whichever trial happens to run first (seen: 10.2 s/epoch for a study's first trial
    against 2.6 s for a similar later one). It leaves no trace on the run: the model is in eval
    mode (batch norm statistics untouched, no dropout, no random numbers drawn), the gradients
    are dropped and the optimizer does not step. Later trials with new shapes still build their
    own primitives, on their first step: milliseconds, not a process's start-up."""
    key = (str(trainer.profile.device), config.backbone)
    if key in _WARM:
        return
    _WARM.add(key)
    x, y = next(iter(source.val(config.batch_size)))
    trainer.model.eval()
    with passes.autocast(x.device, trainer.amp):
        loss = trainer.loss_fn(trainer.forward(x), y)
    loss.backward()
    trainer.optimizer.zero_grad(set_to_none=True)
    if x.is_cuda:
        torch.cuda.synchronize(x.device)


def with_available_weights(config: TrialConfig, warn: Callable[[str], None] = print) -> TrialConfig:
    """The config that will really run: ImageNet weights that cannot be had (offline) become
    `weights: none`, so what is recorded (params, stored config, export) is what trained."""
    if config.weights == "imagenet" and not weights.imagenet_available(config.backbone, warn):
        return config.replace(weights="none")
    return config


def check(config: TrialConfig) -> None:
    """Fail before trial 1 on what a user can fix: dataset name/path/files, backbone, image size,
    weights. Builds the dataset once (cached for the trials) and the model with random init."""
    size, resize = backbones.preprocessing(config.backbone).geometry(config.image_size)
    split = datasets.load(config, datasets.Geometry(size, resize))
    start_from = "none" if config.weights == "imagenet" else config.weights  # no download here
    backbones.build_model(config.backbone, start_from, split.num_classes, config.freeze_depth, print, size)


def _prepare(model: nn.Module, device: torch.device) -> nn.Module:
    if device.type == "cuda":
        return model.to(device).to(memory_format=torch.channels_last)
    return model.to(device)


def _compiled_step(config: TrialConfig, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The forward used for training: the model itself, or torch.compile of it when `compile` is
    set. Off by default: compiling resnet50 costs tens of seconds per trial (every trial builds a
    new model), which only pays off when a trial trains for minutes on CUDA. The returned wrapper
    shares the model's parameters, so `FitResult.model` stays the plain module."""
    if not config.compile:
        return model
    return torch.compile(model)  # type: ignore[return-value]
