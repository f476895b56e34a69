"""The frozen-feature cache: a trial with `freeze_depth = d > 0` runs its frozen stages once.

Frozen stages are in eval mode (batch norm frozen) and get no gradient, so on unaugmented images
their output for a sample is the same in every epoch of a trial and in every trial that shares
the backbone, the frozen stages' weights, the image geometry, the data split, the device and the
autocast dtype. Those are the key (`Key`): the weights enter as a digest of the frozen stages'
own tensors, so ImageNet weights, a weights file and a random init (its seed) are all told apart
by what they are, never by their name. A trial looks its key up; on a miss it computes the
features of the train and validation sets once, keeps them, and trains only the stages after d
on them for all its epochs (validation too). Depth-d features also seed any deeper depth: the
stages between run once on the cached tensors. A random init's frozen batch norm is calibrated on
the train split first (`bn_calibration`, once per key), so the features are the calibrated ones.

Where it is off, and why (recorded per trial as `feature_cache`, e.g. `off:augment`): the config
says so (`feature_cache: false`), training batches are augmented (a crop or flip changes every
epoch's input), nothing is frozen, the backbone has no forward runners, or the features exceed
the memory budget (then one line says so and the trial trains on the plain path).

Stored as the frozen stages produce them: fp32 on CPU; on CUDA under bf16 autocast the stages'
outputs are already bf16, which is what the uncached path hands the next stage too, so storing
them in bf16 adds no rounding (and halves the memory); no fp16 cast of fp32 features is made.

Held per process, in memory (on the training device): `--workers` processes each hold their own.
A file cache under the study folder would share them, but every hit would read as many bytes as
a miss computes from images that are already in memory (digits: 1,800 x 64 x 6 x 6 fp32 = 17 MB,
computed in well under a second), and GPU tensors cannot outlive their process; so K workers
compute each key at most K times per study, not once per trial and epoch.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import time
from collections.abc import Callable, Hashable, Iterator

import torch
from torch import nn

from exptrack import records
from exptrack.config import TrialConfig
from exptrack.training import backbones, batching, bn_calibration
from exptrack.training.datasets import Geometry, TensorSplit

# The budget for all cached features of a process, in MiB; EXPTRACK_FEATURE_CACHE_MB overrides it.
# 2 GiB holds resnet18's stem output at 224 px (64 x 56 x 56 fp32 = 803 KB a sample) for ~2,600
# samples, or CIFAR-10 (60k) after layer2 at 32 px (128 x 4 x 4 fp32 = 8 KB a sample: 492 MB); the
# finetune study's digits after the stem at 24 px take 1,800 x 9.2 KB = 17 MB.
MEMORY_BUDGET_MB = 2048
BUDGET_ENV = "EXPTRACK_FEATURE_CACHE_MB"
_EXTRACT_BATCH = 256  # samples per forward while computing features (as evaluation batches)


@dataclasses.dataclass
class Features:
    """The frozen stages' outputs for a split, and what computing them from images cost."""

    train: torch.Tensor
    val: torch.Tensor
    seconds: float  # from images to these features, train and val: what one plain epoch spends on them

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.train, self.val))


Key = tuple[Hashable, ...]
_STORE: collections.OrderedDict[Key, Features] = collections.OrderedDict()  # least recently used first


@dataclasses.dataclass
class Plan:
    """What a trial trains: `net` (the model, or the stages after the frozen ones) on `features`
    (None: images on the plain path), and how the cache served it."""

    status: str  # hit | miss | miss:from_depth_<e> | off:<reason>
    net: nn.Module
    features: Features | None = None
    spent: float = 0.0  # seconds this trial spent on the cache: the weights' digest, computing features
    calibrated: bool = False  # the frozen batch norm's statistics were set from the train split

    def figures(self, epochs_run: int) -> dict[str, float | str]:
        """`feature_cache` and `feature_cache_seconds_saved`: the plain path recomputes the frozen
        stages over train and val every epoch (`Features.seconds`, measured when computed); this
        trial spent `spent`. Negative when a one-epoch miss cost more than it saved."""
        saved = epochs_run * self.features.seconds - self.spent if self.features else 0.0
        return {records.FEATURE_CACHE: self.status, records.FEATURE_CACHE_SAVED: saved}


@dataclasses.dataclass
class Inputs:
    """What `plan` needs from fit: the built model's pieces, the data and how it is normalised."""

    config: TrialConfig
    model: nn.Module
    split: TensorSplit
    geometry: Geometry
    normalize: batching.Normalizer
    amp: torch.dtype | None
    calibrate: bool = False  # a random init: the frozen batch norm gets the train split's statistics


def plan(inputs: Inputs, warn: Callable[[str], None]) -> Plan:
    """The cache's answer for one trial: features to train the suffix on, or why not. A random
    init's frozen batch norm is calibrated first (`bn_calibration`), on the cached path or not,
    once per key: the keys are taken before, and the calibration is a function of what they hold."""
    c = inputs.config
    reason = _off_reason(c)
    calibrate = inputs.calibrate and c.freeze_depth > 0
    cut = None if reason and not calibrate else backbones.split_at(c.backbone, inputs.model, c.freeze_depth)
    if cut is None:
        return Plan(f"off:{reason or 'backbone'}", inputs.model)
    start = time.perf_counter()
    keys = _keys(inputs, cut[0])
    spent = time.perf_counter() - start
    calibrated = calibrate and bn_calibration.calibrate(
        keys[-1], cut[0], inputs.split.train_x, inputs.normalize, inputs.amp
    )
    if reason:
        return Plan(f"off:{reason}", inputs.model, calibrated=calibrated)
    start = time.perf_counter()
    served = _serve(inputs, *cut, keys, warn)
    served.calibrated = calibrated
    if served.features is not None:
        served.spent = spent + time.perf_counter() - start
    return served


def _serve(
    inputs: Inputs, prefix: list[nn.Module], suffix: nn.Module, keys: list[Key], warn: Callable[[str], None]
) -> Plan:
    """A hit, a miss (features computed now, from images or a shallower depth's), or off:memory."""
    for runner in prefix:
        runner.eval()  # frozen: batch norm keeps its statistics, dropout is off
    if keys[-1] in _STORE:
        _STORE.move_to_end(keys[-1])
        return Plan("hit", suffix, _STORE[keys[-1]])
    need = _size(inputs, prefix)
    if not _make_room(need):
        warn(
            f"feature cache off for this trial: its frozen features need {need / 2**20:.1f} MB, over "
            f"the {budget_bytes() / 2**20:g} MB budget ({BUDGET_ENV}); training on the plain path"
        )
        return Plan("off:memory", inputs.model)
    return _compute(inputs, prefix, suffix, keys)


def _off_reason(config: TrialConfig) -> str | None:
    if not config.feature_cache:
        return "config"
    if config.augment:
        return "augment"  # augmented batches differ every epoch: the frozen output does too
    if config.freeze_depth == 0:
        return "nothing_frozen"
    return None


def budget_bytes() -> int:
    return int(float(os.environ.get(BUDGET_ENV, MEMORY_BUDGET_MB)) * 2**20)


def _keys(inputs: Inputs, prefix: list[nn.Module]) -> list[Key]:
    """The key of each depth 1..d: what decides the frozen output, with the stages' weights as
    a running digest (depth e's key is a prefix of depth d's computation, so it can seed it).
    Taken before calibration: calibrated statistics are a function of the key's other parts."""
    c, split = inputs.config, inputs.split
    base: Key = (c.backbone, inputs.geometry, c.dataset, c.subset, c.val_fraction, c.test_fraction, split.digest)
    base += (str(inputs.normalize.device), str(inputs.amp), inputs.calibrate)
    digest, keys = hashlib.sha256(), list[Key]()
    for depth, runner in enumerate(prefix, start=1):
        for name, tensor in sorted(runner.state_dict().items()):
            digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
            digest.update(tensor.detach().reshape(-1).cpu().view(torch.uint8).numpy())
        keys.append((*base, depth, digest.copy().hexdigest()))
    return keys


def _size(inputs: Inputs, prefix: list[nn.Module]) -> int:
    """Bytes the features of the whole split take, from the output of two samples."""
    sample = _run(prefix, inputs.normalize(inputs.split.val_x[:2]), inputs.amp)
    per_sample = sample[0].numel() * sample.element_size()
    return per_sample * (len(inputs.split.train_y) + len(inputs.split.val_y))


def _make_room(need: int) -> bool:
    """Drop least recently used entries until `need` fits the budget; False if it never can."""
    budget = budget_bytes()
    if need > budget:
        return False
    while _STORE and sum(f.nbytes for f in _STORE.values()) + need > budget:
        _STORE.popitem(last=False)
    return True


def _compute(inputs: Inputs, prefix: list[nn.Module], suffix: nn.Module, keys: list[Key]) -> Plan:
    """Features at depth d from the deepest cached shallower depth, else from the images."""
    start = time.perf_counter()
    seed_depth = next((e for e in range(len(keys) - 1, 0, -1) if keys[e - 1] in _STORE), 0)
    if seed_depth:
        seed = _STORE[keys[seed_depth - 1]]
        runners, base_seconds = prefix[seed_depth:], seed.seconds
        train, val = seed.train.split(_EXTRACT_BATCH), seed.val.split(_EXTRACT_BATCH)
    else:
        runners, base_seconds = prefix, 0.0
        train, val = _images(inputs, inputs.split.train_x), _images(inputs, inputs.split.val_x)
    features = Features(_extract(runners, train, inputs.amp), _extract(runners, val, inputs.amp), 0.0)
    _sync(inputs.normalize.device)
    spent = time.perf_counter() - start
    features.seconds = base_seconds + spent
    _STORE[keys[-1]] = features
    return Plan(f"miss:from_depth_{seed_depth}" if seed_depth else "miss", suffix, features)


def _images(inputs: Inputs, x: torch.Tensor) -> Iterator[torch.Tensor]:
    for start in range(0, len(x), _EXTRACT_BATCH):
        yield inputs.normalize(x[start : start + _EXTRACT_BATCH])


def _extract(
    runners: list[nn.Module],
    batches: Iterator[torch.Tensor] | tuple[torch.Tensor, ...],
    amp: torch.dtype | None,
) -> torch.Tensor:
    return torch.cat([_run(runners, x, amp) for x in batches])


@torch.no_grad()
def _run(runners: list[nn.Module], x: torch.Tensor, amp: torch.dtype | None) -> torch.Tensor:
    with torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
        for runner in runners:
            x = runner(x)
    return x


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clear() -> None:
    """Forget every cached feature (and frozen batch-norm calibration) of this process."""
    _STORE.clear()
    bn_calibration.clear()
