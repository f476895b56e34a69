"""Datasets: a registry from name to loader, each giving uint8 image tensors split into
train/val/test.

`dataset` in a config is `NAME[:PATH]` (`digits`, `synthetic:4096,10`, `imagefolder:/data/pets`,
`cifar10:/data/cifar`). Images are kept as uint8 (N, 3, H, W) at the target size, and normalised
per batch by `batching` with the weights' mean/std. Splits are seeded by a constant, not the
trial's seed, so every trial of a study is scored on the same images. The test split
(`test_fraction`, or the dataset's own) is held out of training and validation: the search never
evaluates it (only `fit(..., test=True)` does, for `exp train` and `exp confirm`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import hashlib
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.nn import functional as F

from exptrack import registry
from exptrack.config import TrialConfig
from exptrack.errors import UserError, did_you_mean, first_line
from exptrack.training import imagefiles

SPLIT_SEED = 20241  # fixed: the same train/val split for every trial and every re-run


class Geometry(NamedTuple):
    """Target image side, and the shorter side photos are resized to before the centre crop
    (the weights' own transforms: 256 -> 224 for most torchvision weights)."""

    size: int
    resize: int


def _empty_images() -> torch.Tensor:
    return torch.empty(0, 3, 1, 1, dtype=torch.uint8)


def _empty_labels() -> torch.Tensor:
    return torch.empty(0, dtype=torch.int64)


@dataclasses.dataclass
class TensorSplit:
    """Train, validation and test images (N, 3, H, W) uint8 and labels (N,) int64; no test split
    is an empty one (`test_fraction: 0`, or a loader that makes none).

    uint8 at the target size keeps sets in memory: CIFAR-10 at 32 px is 60k x 3 x 32 x 32 = 184 MB
    (fp32 would be 737 MB); at 224 px it would be 9 GB, so keep image_size modest for large sets.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    classes: list[str]
    test_x: torch.Tensor = dataclasses.field(default_factory=_empty_images)
    test_y: torch.Tensor = dataclasses.field(default_factory=_empty_labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def nbytes(self) -> int:
        """What training moves to its device: train and validation (the test split stays put)."""
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def to(self, device: torch.device) -> TensorSplit:
        """Train and validation on `device`; the test split stays on the host, where only a final
        evaluation reads it."""
        moved = [t.to(device, non_blocking=True) for t in self.tensors()]
        return TensorSplit(moved[0], moved[1], moved[2], moved[3], self.classes, self.test_x, self.test_y)

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.train_x, self.train_y, self.val_x, self.val_y

    def sizes(self) -> dict[str, int]:
        """How many images each split holds, as the run's setup facts name them."""
        return {"train_samples": len(self.train_y), "val_samples": len(self.val_y), "test_samples": len(self.test_y)}

    @functools.cached_property
    def digest(self) -> str:
        """A short fingerprint of the images and labels, for the MLflow dataset record. Like
        MLflow's own digests, it hashes the shapes and a sample (up to 1,000 evenly spaced rows of
        each tensor), so a set of 5k photos at 128 px costs milliseconds, not a pass over 246 MB;
        once per split, which the trials of a study share (`_CACHE`)."""
        hashed = hashlib.sha256()
        test = (self.test_x, self.test_y) if len(self.test_y) else ()  # no test: the digest it had before
        for tensor in (*self.tensors(), *test):
            hashed.update(str(tuple(tensor.shape)).encode())
            hashed.update(tensor[:: max(1, len(tensor) // 1000)].contiguous().cpu().numpy().tobytes())
        return hashed.hexdigest()[:8]


Loader = Callable[[str | None, TrialConfig, Geometry], TensorSplit]
DATASETS: dict[str, Loader] = {}
# Built splits of this process: trials of one study share the dataset instead of rebuilding it.
# Two entries at most, so a study that searches image_size does not hold every size in memory.
_CACHE: dict[tuple[str, Geometry, float, float], TensorSplit] = {}
_CACHE_ENTRIES = 2


# `@register_dataset(name)` on a loader `(path, config, geometry) -> TensorSplit`; a duplicate name is refused.
register_dataset = registry.registrar(DATASETS, "dataset")


def parse_spec(spec: str) -> tuple[str, str | None]:
    """`imagefolder:/data/pets` -> ("imagefolder", "/data/pets"); `digits` -> ("digits", None)."""
    name, sep, path = spec.partition(":")
    if name not in DATASETS:
        raise UserError(
            f"unknown dataset {name!r}{did_you_mean(name, DATASETS)}; choose one of: {', '.join(sorted(DATASETS))} (NAME[:PATH])"
        )
    return name, (path if sep and path else None)


def load(config: TrialConfig, geometry: Geometry) -> TensorSplit:
    """The config's dataset at `geometry`, from this process's cache when already built."""
    name, path = parse_spec(config.dataset)
    key = (config.dataset, geometry, config.val_fraction, config.test_fraction)
    if key not in _CACHE:
        split = DATASETS[name](path, config, geometry)
        if len(split.train_y) < 2 or len(split.val_y) < 1:
            raise UserError(f"dataset {config.dataset}: too few images to train and validate")
        while len(_CACHE) >= _CACHE_ENTRIES:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = split
    return _limit(_CACHE[key], config.subset)


def _limit(split: TensorSplit, subset: int) -> TensorSplit:
    """The first `subset` samples of each split; splits are stored shuffled, so these still mix
    all classes."""
    if subset <= 0:
        return split
    return TensorSplit(
        split.train_x[:subset],
        split.train_y[:subset],
        split.val_x[:subset],
        split.val_y[:subset],
        split.classes,
        split.test_x[:subset],
        split.test_y[:subset],
    )


def stratified_split(
    x: torch.Tensor, y: torch.Tensor, val_fraction: float, classes: list[str], test_fraction: float = 0.0
) -> TensorSplit:
    """Hold out `val_fraction` of every class (at least one image of each class with two or more)
    for validation and `test_fraction` for test, by a shuffle seeded with SPLIT_SEED: the same
    images and labels always split the same way. Each part is then shuffled so a prefix mixes the
    classes. With `test_fraction` 0 the train/val split is the one made before the test split
    existed, image for image (the generator draws the same numbers)."""
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    gen = torch.Generator().manual_seed(SPLIT_SEED)
    parts: tuple[list[torch.Tensor], ...] = ([], [], [])  # train, val, test
    for label in range(len(classes)):
        members = (y == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        n_val = max(0, min(len(members) - 1, max(1, round(len(members) * val_fraction))))
        # test takes its share only while at least one image of the class is left to train on
        n_test = max(0, min(len(members) - n_val - 1, round(len(members) * test_fraction)))
        parts[1].append(members[:n_val])
        parts[2].append(members[n_val : n_val + n_test])
        parts[0].append(members[n_val + n_test :])
    train, val, test = (torch.cat(p) if p else torch.empty(0, dtype=torch.int64) for p in parts)
    train = train[torch.randperm(len(train), generator=gen)]
    val = val[torch.randperm(len(val), generator=gen)]
    if len(test):  # drawn last, so a split without test draws what it always drew
        test = test[torch.randperm(len(test), generator=gen)]
    return TensorSplit(x[train], y[train], x[val], y[val], classes, x[test], y[test])


def shuffled(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(SPLIT_SEED))
    return x[order], y[order]


def check_fits(count: int, size: int) -> None:
    """`count` images at `size` px fit in this machine's memory as uint8 (N x 3 x size x size
    bytes), checked before any is made (preflight loads the set): `synthetic:1000000000` asked
    for terabytes, and a side of 99,999,999 px overflowed torch's size calculation."""
    need, have = count * 3 * size * size, _memory_bytes()
    if need > have:
        raise UserError(
            f"{count:,} images at {size} px need {need / 1e9:,.1f} GB as uint8, more than this machine's "
            f"{have / 1e9:,.1f} GB; lower image_size or use fewer images"
        )


def _memory_bytes() -> int:
    """Physical memory, or the cgroup's limit (a container's) when that is lower."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    with contextlib.suppress(OSError, ValueError):  # no cgroup v2 here, or `max`: no limit
        total = min(total, int(Path("/sys/fs/cgroup/memory.max").read_text()))
    return total


def to_uint8_rgb(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, h, w) uint8 or float in [0, 1] -> (N, 3, size, size) uint8; grey repeated to 3 channels.
    Resized in chunks of 256 so a float copy of a whole large set is never held."""
    check_fits(len(images), size)
    chunks = []
    for part in images.split(256):
        part = part.float() / 255.0 if part.dtype == torch.uint8 else part.float()
        if part.shape[-2:] != (size, size):
            part = F.interpolate(
                part, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )
        chunks.append((part.clamp(0, 1) * 255).round().to(torch.uint8))
    out = torch.cat(chunks)
    return (out.expand(-1, 3, -1, -1) if out.shape[1] == 1 else out).contiguous()


@register_dataset("digits")
def load_digits(path: str | None, config: TrialConfig, geometry: Geometry) -> TensorSplit:
    """scikit-learn's 1,797 handwritten 8x8 digits (ships with the package, works offline)."""
    pixels, target = _digits_table()
    images = torch.tensor(pixels.reshape(-1, 8, 8), dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(target, dtype=torch.int64)
    classes = [str(c) for c in range(10)]
    return stratified_split(
        to_uint8_rgb(images, geometry.size), labels, config.val_fraction, classes, config.test_fraction
    )


def _digits_table() -> tuple[np.ndarray, np.ndarray]:
    """(pixels, labels) from the file scikit-learn's `load_digits` reads (sklearn/datasets/data/
    digits.csv.gz: 64 pixel columns, then the label), without importing sklearn: its import (scipy,
    its validation machinery) is 1-3.6 s of every search on the digits, the read 0.02 s. Its own
    loader where the file is not there (another scikit-learn layout)."""
    spec = importlib.util.find_spec("sklearn")
    roots = list(spec.submodule_search_locations or []) if spec else []
    path = Path(roots[0] if roots else ".") / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        from sklearn.datasets import load_digits as sk_digits

        bunch = sk_digits()
        return bunch.data, bunch.target
    with gzip.open(path, "rt") as text:
        table = np.loadtxt(text, delimiter=",")
    return table[:, :-1], table[:, -1].astype(int)


@register_dataset("synthetic")
def load_synthetic(path: str | None, config: TrialConfig, geometry: Geometry) -> TensorSplit:
    """Learnable random images: each class is a fixed noise pattern plus per-sample noise.
    `synthetic` alone is 2,048 images of 10 classes; `synthetic:N` or `synthetic:N,C` set both."""
    count, classes = _synthetic_shape(path)
    gen = torch.Generator().manual_seed(SPLIT_SEED)
    size = geometry.size
    check_fits(count, size)
    prototypes = torch.rand(classes, 3, 8, 8, generator=gen)
    labels = torch.randint(0, classes, (count,), generator=gen)
    chunks = []
    for part in labels.split(512):  # float images exist 512 at a time, then become uint8
        proto = F.interpolate(prototypes[part], size=(size, size), mode="bilinear", align_corners=False)
        noisy = 0.7 * proto + 0.3 * torch.rand(len(part), 3, size, size, generator=gen)
        chunks.append((noisy.clamp(0, 1) * 255).round().to(torch.uint8))
    names = [f"class{c}" for c in range(classes)]
    return stratified_split(torch.cat(chunks), labels, config.val_fraction, names, config.test_fraction)


def _synthetic_shape(path: str | None) -> tuple[int, int]:
    try:
        parts = [int(p) for p in path.split(",")] if path else []
    except ValueError as exc:
        raise UserError(f"synthetic:{path}: expected synthetic:COUNT or synthetic:COUNT,CLASSES") from exc
    count, classes = (parts + [2048, 10][len(parts) :])[:2]
    if count < 4 or classes < 2 or classes > count:
        raise UserError(
            f"synthetic:{path}: needs at least 4 images, 2 classes and no more classes than images"
        )
    return count, classes


@register_dataset("imagefolder")
def load_imagefolder(path: str | None, config: TrialConfig, geometry: Geometry) -> TensorSplit:
    """Your own images: `PATH/train/<class>/` + `PATH/val/<class>/` (+ `PATH/test/<class>/`, the
    test split when test_fraction > 0), or `PATH/<class>/` split by `val_fraction` and `test_fraction`."""
    train, val = imagefiles.read_root(path, geometry.size, geometry.resize)
    if val is None:
        return stratified_split(
            train.images, train.labels, config.val_fraction, train.classes, config.test_fraction
        )
    split = TensorSplit(*shuffled(train.images, train.labels), *shuffled(val.images, val.labels), train.classes)
    test_root = Path(str(path)).expanduser() / "test"
    if config.test_fraction > 0 and test_root.is_dir():
        test = imagefiles.read_classes(test_root, geometry.size, geometry.resize)
        if test.classes != train.classes:
            raise UserError(f"image folder {path}: test/ has other class folders than train/; give it the same ones")
        split.test_x, split.test_y = shuffled(test.images, test.labels)
    return split


# torchvision's classification sets: config name -> torchvision.datasets class name.
TORCHVISION_SETS = {
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
    "mnist": "MNIST",
    "fashionmnist": "FashionMNIST",
    "kmnist": "KMNIST",
}


def _register_torchvision(name: str, class_name: str) -> None:
    def loader(path: str | None, config: TrialConfig, geometry: Geometry) -> TensorSplit:
        split = load_torchvision(name, class_name, path, config.download, geometry.size)
        if config.test_fraction <= 0:
            return split
        carved = stratified_split(split.train_x, split.train_y, config.val_fraction, split.classes)
        carved.test_x, carved.test_y = split.val_x, split.val_y
        return carved

    loader.__doc__ = f"torchvision's {class_name} under a root folder: --set dataset={name}:/path/to/root"
    register_dataset(name)(loader)


def load_torchvision(name: str, class_name: str, root: str | None, download: bool, size: int) -> TensorSplit:
    """The set's own train and test splits as uint8 RGB: with test_fraction > 0 its test split is the
    test split and validation is `val_fraction` of its train split; with test_fraction 0 (studies
    made before the test split) its test split serves as validation, as it did then."""
    import torchvision.datasets

    if not root:
        raise UserError(f"dataset={name} needs a root folder: --set dataset={name}:/path/to/root")
    dataset_class = getattr(torchvision.datasets, class_name)
    try:
        parts = [dataset_class(root, train=train, download=download) for train in (True, False)]
    except Exception as exc:
        if not download:
            raise UserError(
                f"dataset {name}: no {class_name} files under {root}; "
                "place them there or add --set download=true"
            ) from exc
        raise UserError(
            f"dataset {name}: download into {root} failed ({first_line(exc, 100)}); "
            "check the network or place the files there"
        ) from exc
    tensors = [_torchvision_tensors(part, size) for part in parts]
    return TensorSplit(*shuffled(*tensors[0]), *shuffled(*tensors[1]), list(parts[0].classes))


def _torchvision_tensors(dataset: object, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.as_tensor(dataset.data)  # type: ignore[attr-defined]
    # MNIST-like sets hold (N, H, W); CIFAR holds (N, H, W, 3)
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
    labels = torch.as_tensor(dataset.targets, dtype=torch.int64)  # type: ignore[attr-defined]
    return to_uint8_rgb(images, size), labels


for _name, _class_name in TORCHVISION_SETS.items():
    _register_torchvision(_name, _class_name)
