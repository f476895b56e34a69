"""Reading an image folder from disk into uint8 tensors, with every problem reported before training.

Layouts: `ROOT/train/<class>/*` + `ROOT/val/<class>/*`, or `ROOT/<class>/*` (split later by a seeded
`val_fraction`). Any image mode (L, P, RGBA, I;16, CMYK...) is converted to RGB.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.v2 import functional as TF

from exptrack.errors import UserError
from exptrack.training import progress

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


@dataclasses.dataclass
class Folder:
    """Images (N, 3, size, size) uint8 and labels (N,) int64 of one class-subfolder tree."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]


def read_root(root: str | None, size: int, resize: int) -> tuple[Folder, Folder | None]:
    """(train, val) folders; val is None when the root has no `train/` + `val/` split."""
    if not root:
        raise UserError("dataset=imagefolder needs a path: --set dataset=imagefolder:/path/to/images")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise UserError(f"image folder {path} does not exist; pass --set dataset=imagefolder:/existing/dir")
    if (path / "train").is_dir() and (path / "val").is_dir():
        train, val = read_classes(path / "train", size, resize), read_classes(path / "val", size, resize)
        if train.classes != val.classes:
            only = sorted(set(train.classes) ^ set(val.classes))
            raise UserError(
                f"image folder {path}: train/ and val/ have different class folders (e.g. {only[0]!r}); "
                "give both the same class subfolders"
            )
        return train, val
    return read_classes(path, size, resize), None


def read_classes(path: Path, size: int, resize: int) -> Folder:
    """One tree of `<class>/<image>` files; classes sorted by name, as torchvision's ImageFolder does."""
    classes = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserError(f"image folder {path} has no class subfolders; put images in {path}/<class>/")
    files = {}
    for name in classes:
        files[name] = sorted(f for f in (path / name).iterdir() if f.suffix.lower() in EXTENSIONS)
        if not files[name]:
            raise UserError(f"class folder {path / name} holds no images ({', '.join(sorted(EXTENSIONS))})")
    images, labels = [], []
    total = sum(map(len, files.values()))
    with progress.task(f"reading {total:,} images from {path}", total) as bar:
        for label, name in enumerate(classes):
            for file in files[name]:
                images.append(read_image(file, size, resize))
                bar.advance(1)
            labels += [label] * len(files[name])
    return Folder(torch.stack(images), torch.tensor(labels, dtype=torch.int64), classes)


def read_image(file: Path, size: int, resize: int) -> torch.Tensor:
    """One file -> (3, size, size) uint8, the way the weights' transforms do it: shorter side to
    `resize`, then a centre crop of `size`."""
    try:
        with Image.open(file) as img:
            img.load()
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UserError(
            f"image {file} cannot be read ({type(exc).__name__}); fix or remove the file"
        ) from exc
    tensor = TF.pil_to_tensor(rgb)
    tensor = TF.resize(tensor, [resize], antialias=True)
    return TF.center_crop(tensor, [size, size]).contiguous()
