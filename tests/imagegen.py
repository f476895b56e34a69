"""Test data written in real on-disk formats: PNG class folders, and MNIST's raw idx files."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from PIL import Image

# One mode per image in turn, so a folder exercises every conversion to RGB.
MODES = ("RGB", "L", "RGBA", "P", "I;16")


def write_image(path: Path, label: int, index: int, size: tuple[int, int] = (20, 14)) -> None:
    """A small PNG whose colour depends on its class (so a model can learn it) in a varying mode."""
    rng = np.random.default_rng(label * 1000 + index)
    base = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    base[..., label % 3] = 200
    pixels = np.clip(base + rng.integers(0, 55, base.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    mode = MODES[index % len(MODES)]
    if mode == "I;16":
        image = Image.fromarray(pixels[..., 0].astype(np.uint16) * 256)
    elif mode == "P":
        image = image.convert("P")
    else:
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def write_image_folder(root: Path, classes: int = 3, per_class: int = 8, split: bool = False) -> Path:
    """`root/<class>/*.png`, or `root/train/<class>/` + `root/val/<class>/` when `split`."""
    for label in range(classes):
        for i in range(per_class):
            part = ("train" if i < per_class - 2 else "val") if split else ""
            size = (20 + i, 14 + 2 * i)  # images of different shapes
            write_image(root / part / f"class_{label}" / f"img{i:03d}.png", label, i, size)
    return root


def write_mnist_raw(root: Path, folder: str = "MNIST", n_train: int = 60, n_test: int = 20) -> Path:
    """MNIST's four raw idx files (big-endian header, then uint8 pixels) under root/folder/raw."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = (rng.integers(0, 60, (n, 28, 28)) + labels[:, None, None] * 19).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes()
        )
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())
    return root
