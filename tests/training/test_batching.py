"""Batch sources: device-resident and DataLoader batches agree; crops/flips stay inside the image."""

from __future__ import annotations

import pytest
import torch

from exptrack import config as cfg
from exptrack.training import batching, datasets

CPU = torch.device("cpu")
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


@pytest.fixture(scope="module")
def split() -> datasets.TensorSplit:
    """37 training images whose pixels encode (image index, position), so every crop is traceable."""
    x = torch.arange(37 * 3 * 8 * 8).reshape(37, 3, 8, 8).remainder(251).to(torch.uint8)
    y = torch.arange(37) % 5
    return datasets.TensorSplit(x, y, x[:9], y[:9], [str(c) for c in range(5)])


def epoch_batches(source: batching.DeviceBatches | batching.LoaderBatches, epoch: int) -> list:
    return [(x.clone(), y.clone()) for x, y in source.train(epoch)]


@pytest.mark.parametrize("workers", [0, 2])
def test_device_and_loader_batches_are_identical_for_one_config(
    split: datasets.TensorSplit, workers: int
) -> None:
    config = cfg.from_dict({"batch_size": 8, "augment": True, "seed": 3, "num_workers": workers})
    device = batching.DeviceBatches(split, CPU, config, MEAN, STD)
    loader = batching.LoaderBatches(split, CPU, config, MEAN, STD)
    for epoch in (1, 2):
        ours, theirs = epoch_batches(device, epoch), epoch_batches(loader, epoch)
        assert len(ours) == len(theirs) == 5
        for (xa, ya), (xb, yb) in zip(ours, theirs, strict=True):
            assert torch.equal(ya, yb) and torch.equal(xa, xb)
    assert [
        torch.equal(a[0], b[0]) for a, b in zip(list(device.val(4)), list(loader.val(4)), strict=True)
    ] == [True] * 3


def test_each_epoch_covers_every_image_once_in_a_new_seeded_order(split: datasets.TensorSplit) -> None:
    order = {e: batching.epoch_order(37, seed=3, epoch=e, device=CPU) for e in (1, 2)}
    assert sorted(order[1].tolist()) == list(range(37))
    assert not torch.equal(order[1], order[2])
    assert torch.equal(order[1], batching.epoch_order(37, seed=3, epoch=1, device=CPU))
    config = cfg.from_dict({"batch_size": 12, "seed": 3})
    labels = torch.cat([y for _, y in batching.DeviceBatches(split, CPU, config, MEAN, STD).train(1)])
    # 37 = 12 + 12 + 12 + 1: the lone trailing sample is dropped (batch norm cannot train on one)
    assert len(labels) == 36 and torch.equal(labels, split.train_y[order[1][:36]])


def test_augmentation_is_a_padded_crop_possibly_mirrored_of_the_same_image(
    split: datasets.TensorSplit,
) -> None:
    x = split.train_x[:16]
    out = batching.augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))  # pad = 8 // 8
    flipped = 0
    for i in range(16):
        windows = [padded[i, :, r : r + 8, c : c + 8] for r in range(3) for c in range(3)]
        plain = any(torch.equal(out[i], w) for w in windows)
        mirrored = any(torch.equal(out[i], w.flip(-1)) for w in windows)
        assert plain or mirrored
        flipped += mirrored and not plain
    assert 0 < flipped < 16  # about half the images are flipped


def test_batches_are_normalised_with_the_weights_mean_and_std(split: datasets.TensorSplit) -> None:
    config = cfg.from_dict({"batch_size": 64})
    x, _ = next(iter(batching.DeviceBatches(split, CPU, config, MEAN, STD).val(64)))
    expected = (split.val_x.float() / 255 - 0.5) / 0.25
    assert x.dtype == torch.float32 and torch.allclose(x, expected, atol=1e-5)


def test_auto_batching_keeps_a_cpu_set_in_memory_and_rejects_unknown_modes(
    split: datasets.TensorSplit,
) -> None:
    assert batching.choose(cfg.from_dict({}), split, CPU) == "device"
    assert batching.choose(cfg.from_dict({"batching": "loader"}), split, CPU) == "loader"
    with pytest.raises(Exception, match="unknown batching 'gpu'"):
        batching.choose(cfg.from_dict({"batching": "gpu"}), split, CPU)


@pytest.mark.gpu
def test_on_cuda_the_set_stays_on_the_gpu_and_both_paths_give_the_same_order(
    split: datasets.TensorSplit,
) -> None:
    cuda = torch.device("cuda")
    config = cfg.from_dict({"batch_size": 8, "seed": 3, "num_workers": 2})
    device = batching.DeviceBatches(split, cuda, config, MEAN, STD)
    loader = batching.LoaderBatches(split, cuda, config, MEAN, STD)
    assert device.split.train_x.is_cuda and device.split.train_x.dtype == torch.uint8
    for (xa, ya), (xb, yb) in zip(device.train(1), loader.train(1), strict=True):
        assert torch.equal(ya, yb) and torch.allclose(xa, xb)
        assert xa.is_cuda and xa.is_contiguous(memory_format=torch.channels_last)
    assert batching.choose(cfg.from_dict({}), split, cuda) == "device"  # a few KB fit easily


@pytest.mark.gpu
def test_fit_on_cuda_batches_on_the_gpu_in_bf16() -> None:
    from exptrack.training import fit

    facts: dict[str, object] = {}

    class Recorder:
        def on_setup(self, values: dict[str, object]) -> None:
            facts.update(values)

        def on_epoch(self, epoch: int, metrics: dict[str, float]) -> bool:
            return False

    config = cfg.from_dict(
        {"dataset": "synthetic:256,4", "image_size": 32, "weights": "none", "epochs": 2, "augment": True}
    )
    result = fit.fit(config.replace(device="cuda"), Recorder())
    assert facts["batching"] == "DeviceBatches" and facts["device"].startswith("cuda")
    assert result.profile["peak_cuda_allocated_mb"] > 0 and len(result.history) == 2
