"""Datasets as in-memory tensor splits, and batching that stays on the device the tensors live on.

`dataset` in a config is `NAME[:PATH]`. Every loader returns float images in [0, 1] at the config's
`image_size` with 3 channels, and integer labels; normalisation for the backbone's weights is
applied once by `normalize`. The validation split is seeded by a constant, not the trial's seed,
so every trial of a study is scored on the same images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import torch
from torch.nn import functional as F

from exptrack.config import TrialConfig
from exptrack.errors import UserError

SPLIT_SEED = 20241  # fixed: the same train/val split for every trial and every re-run


@dataclasses.dataclass
class TensorSplit:
    """Train and validation images (N, 3, H, W) float in [0, 1] and labels (N,) int64."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    classes: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to(self, device: torch.device) -> TensorSplit:
        return TensorSplit(*(t.to(device, non_blocking=True) for t in self.tensors()), self.classes)

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.train_x, self.train_y, self.val_x, self.val_y


Loader = Callable[[str | None, TrialConfig], TensorSplit]
DATASETS: dict[str, Loader] = {}


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Add a loader `(path, config) -> TensorSplit` under `name`; duplicates are refused."""

    def decorate(loader: Loader) -> Loader:
        if name in DATASETS:
            raise ValueError(f"a dataset named {name!r} is already registered")
        DATASETS[name] = loader
        return loader

    return decorate


def parse_spec(spec: str) -> tuple[str, str | None]:
    """`imagefolder:/data/pets` -> ("imagefolder", "/data/pets"); `digits` -> ("digits", None)."""
    name, sep, path = spec.partition(":")
    if name not in DATASETS:
        raise UserError(
            f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))} (NAME[:PATH])"
        )
    return name, (path if sep else None)


def load(config: TrialConfig) -> TensorSplit:
    name, path = parse_spec(config.dataset)
    split = DATASETS[name](path, config)
    return _limit(split, config.subset)


def _limit(split: TensorSplit, subset: int) -> TensorSplit:
    if subset <= 0:
        return split
    return TensorSplit(
        split.train_x[:subset],
        split.train_y[:subset],
        split.val_x[:subset],
        split.val_y[:subset],
        split.classes,
    )


def split_by_fraction(
    x: torch.Tensor, y: torch.Tensor, val_fraction: float, classes: list[str]
) -> TensorSplit:
    """A seeded shuffle, then the last `val_fraction` of it held out."""
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_val = max(1, round(len(x) * val_fraction))
    train, val = order[:-n_val], order[-n_val:]
    return TensorSplit(x[train], y[train], x[val], y[val], classes)


def to_rgb_size(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, h, w) in [0, 1] -> (N, 3, size, size): grey images repeated to 3 channels."""
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images.clamp(0.0, 1.0).contiguous()


def normalize(split: TensorSplit, mean: tuple[float, ...], std: tuple[float, ...]) -> TensorSplit:
    m = torch.tensor(mean, device=split.train_x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=split.train_x.device).view(1, -1, 1, 1)
    return TensorSplit(
        (split.train_x - m) / s, split.train_y, (split.val_x - m) / s, split.val_y, split.classes
    )


@register_dataset("digits")
def load_digits(path: str | None, config: TrialConfig) -> TensorSplit:
    """scikit-learn's 1,797 handwritten 8x8 digits (ships with the package, works offline)."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    return split_by_fraction(
        to_rgb_size(images, config.image_size),
        labels,
        config.val_fraction,
        [str(c) for c in range(10)],
    )


@register_dataset("synthetic")
def load_synthetic(path: str | None, config: TrialConfig) -> TensorSplit:
    """Learnable random images: each class is a fixed noise pattern plus per-sample noise.
    `synthetic` alone is 2,048 images of 10 classes; `synthetic:N` or `synthetic:N,C` set both."""
    count, classes = _synthetic_shape(path)
    gen = torch.Generator().manual_seed(SPLIT_SEED)
    size = config.image_size
    prototypes = torch.rand(classes, 3, 8, 8, generator=gen)
    labels = torch.randint(0, classes, (count,), generator=gen)
    images = F.interpolate(prototypes[labels], size=(size, size), mode="bilinear", align_corners=False)
    images = (0.7 * images + 0.3 * torch.rand(count, 3, size, size, generator=gen)).clamp(0, 1)
    return split_by_fraction(images, labels, config.val_fraction, [f"class{c}" for c in range(classes)])


def _synthetic_shape(path: str | None) -> tuple[int, int]:
    try:
        parts = [int(p) for p in path.split(",")] if path else []
    except ValueError as exc:
        raise UserError(f"synthetic:{path}: expected synthetic:COUNT or synthetic:COUNT,CLASSES") from exc
    count, classes = (parts + [2048, 10][len(parts) :])[:2]
    if count < 4 or classes < 2:
        raise UserError(f"synthetic:{path}: needs at least 4 images and 2 classes")
    return count, classes


def batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches gathered on the tensors' own device; shuffled when a generator is given.
    A trailing batch of one sample is dropped: batch norm cannot train on it."""
    n = len(x)
    order = torch.randperm(n, device=x.device, generator=generator) if generator is not None else None
    for start in range(0, n, batch_size):
        if generator is not None and n - start == 1 and start > 0:
            break
        idx = order[start : start + batch_size] if order is not None else slice(start, start + batch_size)
        yield x[idx], y[idx]
