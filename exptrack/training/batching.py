"""Training and evaluation batches from a `TensorSplit`, two ways with the same semantics.

`DeviceBatches`: the whole uint8 set lives on the training device (moved once); each epoch's order
is a permutation drawn on the device, and crop/flip happen there in batch: no host round trips.
`LoaderBatches`: a DataLoader whose workers gather and augment whole batches on the CPU, pinned
for the copy to CUDA. Both draw each epoch's order on the training device from a generator seeded
by (seed, epoch), so the order is the same on either path; crops and flips come from generators
seeded by (seed, epoch, step) on the device that augments (the GPU for `DeviceBatches`, the CPU
for loader workers): identical batches on CPU, the same distribution on CUDA. Both normalise per
batch with the weights' mean/std.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from exptrack.config import TrialConfig
from exptrack.training.datasets import TensorSplit

Batch = tuple[torch.Tensor, torch.Tensor]
# A dataset goes on the GPU when it takes at most this share of the free memory: the rest is
# left for activations (resnet50 at batch 256, 224 px, bf16 needs ~20 GB).
DEVICE_MEMORY_FRACTION = 0.4


def choose(config: TrialConfig, split: TensorSplit, device: torch.device) -> str:
    """`device` or `loader` for `batching=auto|device|loader`."""
    if config.batching != "auto":
        return config.batching
    if device.type != "cuda":
        return "device"  # the set is already in host memory: workers would only copy it around
    free, _total = torch.cuda.mem_get_info(device)
    return "device" if split.nbytes <= DEVICE_MEMORY_FRACTION * free else "loader"


def make(
    config: TrialConfig,
    split: TensorSplit,
    device: torch.device,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> DeviceBatches | LoaderBatches:
    kind = choose(config, split, device)
    cls = DeviceBatches if kind == "device" else LoaderBatches
    return cls(split, device, config, mean, std)


def step_seed(seed: int, epoch: int, step: int) -> int:
    """One seed per (trial seed, epoch, step); step -1 is the epoch's shuffle."""
    return (seed * 1_000_003 + epoch * 10_007 + step + 1) % (2**63)


def epoch_order(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    gen = torch.Generator(device=device).manual_seed(step_seed(seed, epoch, -1))
    return torch.randperm(n, device=device, generator=gen)


def batch_slices(n: int, batch_size: int) -> list[slice]:
    """Batch bounds of one epoch; a trailing batch of one sample is dropped (batch norm cannot train
    on it)."""
    starts = range(0, n, batch_size)
    return [slice(s, min(n, s + batch_size)) for s in starts if not (n - s == 1 and s > 0)]


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding of size/8 and a horizontal flip for half the images, on x's
    device, in one gather: (B, C, S, S) uint8 in and out."""
    b, _, s, _ = x.shape
    pad = max(1, s // 8)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (b, 2), device=x.device, generator=gen)
    flip = torch.rand(b, device=x.device, generator=gen) < 0.5
    ramp = torch.arange(s, device=x.device)
    rows = offsets[:, :1] + ramp  # (B, S)
    cols = offsets[:, 1:] + torch.where(flip[:, None], ramp.flip(0), ramp)  # a flip reverses columns
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def gather(
    x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, augmenting: bool, seed: int, epoch: int, step: int
) -> Batch:
    """One uint8 batch by indices, augmented with generators seeded by (seed, epoch, step)."""
    xb, yb = x[idx], y[idx]
    if augmenting:
        gen = torch.Generator(device=x.device).manual_seed(step_seed(seed, epoch, step))
        xb = augment(xb, gen)
    return xb, yb


class Normalizer:
    """uint8 batch -> float normalised with the weights' mean/std (channels_last on CUDA)."""

    def __init__(self, device: torch.device, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.device = device
        self.scale = (1.0 / (255.0 * torch.tensor(std, device=device))).view(1, -1, 1, 1)
        self.shift = (torch.tensor(mean, device=device) / torch.tensor(std, device=device)).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True).float() * self.scale - self.shift
        return x.contiguous(memory_format=torch.channels_last) if x.is_cuda else x


class DeviceBatches:
    """The split moved to the device once; batches gathered and augmented there."""

    def __init__(
        self,
        split: TensorSplit,
        device: torch.device,
        config: TrialConfig,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        self.split, self.device, self.config = split.to(device), device, config
        self.normalize = Normalizer(device, mean, std)

    def train(self, epoch: int) -> Iterator[Batch]:
        x, y, c = self.split.train_x, self.split.train_y, self.config
        order = epoch_order(len(y), c.seed, epoch, self.device)
        for step, bounds in enumerate(batch_slices(len(y), c.batch_size)):
            xb, yb = gather(x, y, order[bounds], c.augment, c.seed, epoch, step)
            yield self.normalize(xb), yb

    def val(self, batch_size: int) -> Iterator[Batch]:
        x, y = self.split.val_x, self.split.val_y
        for start in range(0, len(y), batch_size):
            yield self.normalize(x[start : start + batch_size]), y[start : start + batch_size]


class _EpochBatches(Dataset[Batch]):
    """Item i = the whole augmented uint8 batch i of one epoch, built in a worker process."""

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, order: torch.Tensor, config: TrialConfig, epoch: int
    ):
        self.x, self.y, self.order, self.config, self.epoch = x, y, order, config, epoch
        self.slices = batch_slices(len(order), config.batch_size)

    def __len__(self) -> int:
        return len(self.slices)

    def __getitem__(self, step: int) -> Batch:
        c = self.config
        return gather(self.x, self.y, self.order[self.slices[step]], c.augment, c.seed, self.epoch, step)


class LoaderBatches:
    """A DataLoader over the split in host memory: workers build batches, pinned on CUDA."""

    def __init__(
        self,
        split: TensorSplit,
        device: torch.device,
        config: TrialConfig,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        self.split, self.device, self.config = split, device, config
        self.normalize = Normalizer(device, mean, std)

    def _loader(self, dataset: Dataset[Batch]) -> DataLoader[Batch]:
        workers = self.config.num_workers
        return DataLoader(
            dataset,
            batch_size=None,  # items are whole batches already
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if workers else None,
        )

    def train(self, epoch: int) -> Iterator[Batch]:
        y = self.split.train_y
        # drawn on the training device, so the order equals DeviceBatches' on the same device
        order = epoch_order(len(y), self.config.seed, epoch, self.device).cpu()
        dataset = _EpochBatches(self.split.train_x, y, order, self.config, epoch)
        for xb, yb in self._loader(dataset):
            yield self.normalize(xb), yb.to(self.device, non_blocking=True)

    def val(self, batch_size: int) -> Iterator[Batch]:
        x, y = self.split.val_x, self.split.val_y
        for start in range(0, len(y), batch_size):
            xb = x[start : start + batch_size]
            if self.device.type == "cuda":
                xb = xb.pin_memory()
            yield self.normalize(xb), y[start : start + batch_size].to(self.device, non_blocking=True)


class FeatureBatches:
    """Batches of a split's cached frozen features (`feature_cache`), in the order and bounds of
    `DeviceBatches` (the same seeded permutation per epoch), so a cached trial sees each sample's
    features exactly where the plain path would compute them."""

    def __init__(
        self, train_x: torch.Tensor, val_x: torch.Tensor, split: TensorSplit, config: TrialConfig
    ) -> None:
        self.device, self.config = train_x.device, config
        self.train_x, self.val_x = train_x, val_x
        self.train_y, self.val_y = split.train_y.to(self.device), split.val_y.to(self.device)

    def train(self, epoch: int) -> Iterator[Batch]:
        y, c = self.train_y, self.config
        order = epoch_order(len(y), c.seed, epoch, self.device)
        for bounds in batch_slices(len(y), c.batch_size):
            idx = order[bounds]
            yield _layout(self.train_x[idx]), y[idx]

    def val(self, batch_size: int) -> Iterator[Batch]:
        for start in range(0, len(self.val_y), batch_size):
            bounds = slice(start, start + batch_size)
            yield _layout(self.val_x[bounds]), self.val_y[bounds]


def _layout(x: torch.Tensor) -> torch.Tensor:
    """Feature maps go channels_last on CUDA, as the plain path's activations are there."""
    return x.contiguous(memory_format=torch.channels_last) if x.is_cuda and x.dim() == 4 else x
