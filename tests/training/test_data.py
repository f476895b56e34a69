"""Datasets: image folders, torchvision sets from their on-disk files, splits, cache, and errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from exptrack import config as cfg
from exptrack.errors import UserError
from exptrack.training import datasets
from tests.imagegen import write_image, write_image_folder, write_mnist_raw

GEOMETRY = datasets.Geometry(16, 18)


def load(dataset: str, **values: object) -> datasets.TensorSplit:
    return datasets.load(cfg.from_dict({"dataset": dataset, **values}), GEOMETRY)


def test_image_folder_of_mixed_modes_becomes_uint8_rgb_with_every_class_in_val(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "pets", classes=3, per_class=10)
    split = load(f"imagefolder:{root}", val_fraction=0.2)
    assert split.classes == ["class_0", "class_1", "class_2"]
    assert split.train_x.dtype == torch.uint8 and split.train_x.shape[1:] == (3, 16, 16)
    # 20% of each class to val and (test_fraction's default) 20% to test
    assert (len(split.train_y), len(split.val_y), len(split.test_y)) == (18, 6, 6)
    assert sorted(split.val_y.tolist()) == [0, 0, 1, 1, 2, 2]  # stratified: 2 of each class
    # the class colour survives the conversions: class 1 is green in RGB, RGBA and P images
    green = split.train_x[split.train_y == 1].float().mean(dim=(0, 2, 3))
    assert green[1] > green[0] + 50


def test_image_folder_with_train_and_val_uses_both_as_given(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "pets", classes=2, per_class=6, split=True)
    split = load(f"imagefolder:{root}")
    assert (len(split.train_y), len(split.val_y)) == (8, 4)
    assert sorted(split.val_y.tolist()) == [0, 0, 1, 1]


def _corrupt(root: Path) -> None:
    write_image_folder(root, classes=2, per_class=2)
    (root / "class_1" / "broken.png").write_bytes(b"\x89PNG not really")


def _empty_class(root: Path) -> None:
    write_image_folder(root, classes=2, per_class=2)
    (root / "class_9").mkdir()


def _no_classes(root: Path) -> None:
    root.mkdir()
    write_image(root / "loose.png", 0, 0)


def _different_classes(root: Path) -> None:
    write_image_folder(root, classes=2, per_class=4, split=True)
    write_image(root / "val" / "class_7" / "a.png", 0, 0)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: None, "does not exist"),
        (_no_classes, "has no class subfolders"),
        (_empty_class, "class_9 holds no images"),
        (_corrupt, "broken.png cannot be read"),
        (_different_classes, "different class folders (e.g. 'class_7')"),
    ],
    ids=["missing", "no-classes", "empty-class", "corrupt", "class-mismatch"],
)
def test_image_folder_problems_are_one_line_errors_before_training(
    tmp_path: Path, make, message: str
) -> None:
    root = tmp_path / "images"
    make(root)
    with pytest.raises(UserError) as info:
        load(f"imagefolder:{root}")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_mnist_raw_files_load_as_three_channel_images_with_its_own_test_split(tmp_path: Path) -> None:
    root = write_mnist_raw(tmp_path / "tv", n_train=50, n_test=20)
    split = load(f"mnist:{root}")  # its test split is the test split; val is 20% of its train split
    assert split.train_x.shape == (40, 3, 16, 16) and split.val_x.shape == (10, 3, 16, 16)
    assert torch.equal(split.train_x[:, 0], split.train_x[:, 2])  # grey repeated to 3 channels
    assert split.classes[0].startswith("0") and len(split.classes) == 10
    assert sorted(split.test_y.tolist()) == sorted([i % 10 for i in range(20)])
    before = load(f"mnist:{root}", test_fraction=0)  # no test split: its test split validates, as before
    assert (len(before.train_y), len(before.val_y), len(before.test_y)) == (50, 20, 0)


def test_torchvision_set_without_files_names_the_root_and_the_download_flag(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=rf"no FashionMNIST files under {tmp_path}.*--set download=true"):
        load(f"fashionmnist:{tmp_path}")
    with pytest.raises(UserError, match="needs a root folder"):
        load("cifar10")


def test_failed_download_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a closed local port stands in for an offline network: the real download code runs and fails
    monkeypatch.setattr(torchvision.datasets.KMNIST, "mirrors", ["http://127.0.0.1:9/"])
    with pytest.raises(UserError) as info:
        load(f"kmnist:{tmp_path}", download=True)
    assert f"download into {tmp_path} failed" in str(info.value) and "\n" not in str(info.value)


def test_trials_of_one_process_share_the_built_dataset() -> None:
    first = load("synthetic:40,4")
    again = load("synthetic:40,4", subset=10, lr=0.5)
    assert again.train_x.data_ptr() == first.train_x.data_ptr()  # a view of the cached tensors
    assert len(again.train_y) == 10 and first.num_classes == 4


def test_unknown_dataset_and_bad_synthetic_spec_are_user_errors() -> None:
    with pytest.raises(UserError, match="unknown dataset 'pets'; choose one of: cifar10, cifar100"):
        load("pets:/x")
    with pytest.raises(UserError, match="synthetic:COUNT,CLASSES"):
        load("synthetic:many")


def test_reading_an_image_folder_shows_its_progress_image_by_image(tmp_path: Path) -> None:
    from exptrack.training import imagefiles
    from tests.progress_recorder import recording

    root = write_image_folder(tmp_path / "pets", classes=2, per_class=5)
    with recording() as tasks:
        imagefiles.read_root(str(root), 16, 16)
    (task,) = tasks
    assert task.description == f"reading 10 images from {root}" and task.total == 10
    assert task.steps == [1] * 10


def test_the_digits_read_from_scikit_learns_file_are_its_load_digits() -> None:
    from sklearn.datasets import load_digits

    pixels, labels = datasets._digits_table()
    bunch = load_digits()
    assert pixels.shape == (1797, 64) and (pixels == bunch.data).all() and (labels == bunch.target).all()
