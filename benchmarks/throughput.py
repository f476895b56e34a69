"""Training samples/s of one model and batch, two ways in one process, and a whole study's wall time.

    python benchmarks/throughput.py --model resnet18 --image-size 64 --batch 64 --steps 20 --trials 3

Plain: what a typical script does (fp32, `DataLoader` over normalised CPU float tensors, AdamW).
exptrack: `fit.fit` on the same synthetic images (uint8, device batching, and on CUDA bf16 autocast,
channels_last, fused AdamW). Both warm up first and time `steps` optimizer steps. Then `--trials`
trials of studies/synthetic.py through the search loop with real sqlite stores. One line per figure.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset
from torchvision import models as tvm

from exptrack import config as cfg
from exptrack.search import loop
from exptrack.search.options import SearchOptions
from exptrack.study import load_study_file
from exptrack.tracking.tracker import Tracker
from exptrack.training import backbones, datasets, fit

REPO = Path(__file__).resolve().parent.parent
CLASSES = 10


def exptrack_config(args: argparse.Namespace, train_images: int, **extra: object) -> cfg.TrialConfig:
    total = math.ceil(train_images / 0.8) + 2  # 20% held out for validation
    return cfg.from_dict(
        {
            "backbone": args.model,
            "weights": "none",
            "dataset": f"synthetic:{total},{CLASSES}",
            "image_size": args.image_size,
            "batch_size": args.batch,
            "device": args.device,
            "epochs": 1,
            **extra,
        }
    )


def plain_loop(args: argparse.Namespace, device: torch.device) -> float:
    """Samples/s of a plain fp32 PyTorch loop over `steps` timed steps after `warmup`."""
    config = exptrack_config(args, args.batch * (args.steps + args.warmup))
    split = datasets.load(config, datasets.Geometry(args.image_size, args.image_size))
    prep = backbones.preprocessing(args.model)
    mean, std = torch.tensor(prep.mean).view(1, 3, 1, 1), torch.tensor(prep.std).view(1, 3, 1, 1)
    x = (split.train_x.float() / 255 - mean) / std
    loader = DataLoader(TensorDataset(x, split.train_y), batch_size=args.batch, shuffle=True, drop_last=True)
    model = tvm.get_model(args.model, weights=None, num_classes=CLASSES).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = _cycle(loader)  # the split keeps part of the samples for validation: go round again
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            _sync(device)
            start = time.perf_counter()
        xb, yb = next(batches)
        loss = torch.nn.functional.cross_entropy(model(xb.to(device)), yb.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    return args.batch * args.steps / (time.perf_counter() - start)


def _cycle(loader: DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        yield from loader


def exptrack_loop(args: argparse.Namespace) -> tuple[float, float]:
    """Samples/s of `fit.fit` over the same number of steps, after a warm-up fit."""
    extra = {"compile": args.compile, "precision": args.precision}
    fit.fit(exptrack_config(args, args.batch * args.warmup, **extra), warn=lambda m: None)
    result = fit.fit(exptrack_config(args, args.batch * args.steps, **extra), warn=lambda m: None)
    return result.profile["train_samples_per_second"], result.profile["train_seconds"]


def study_wall_time(args: argparse.Namespace) -> float:
    """Seconds for `--trials` trials of studies/synthetic.py, stores in a temporary directory."""
    overrides = {
        "backbone": args.model,
        "image_size": args.image_size,
        "device": args.device,
        "dataset": f"synthetic:{args.study_images},{CLASSES}",
        "epochs": args.study_epochs,
    }
    spec = load_study_file(REPO / "studies" / "synthetic.py").with_overrides(overrides)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        options = SearchOptions(trials=args.trials, storage=f"sqlite:///{tmp}/optuna.db", seed=0)
        loop.run(loop.open_search(spec, options, Tracker(f"sqlite:///{tmp}/mlflow.db"), warn=lambda m: None))
        return time.perf_counter() - start


def _fmt(values: list[float]) -> str:
    return " ".join(f"{v:.1f}" for v in values)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps per arm")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each arm; medians shown")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--compile", action="store_true", help="torch.compile in the exptrack arm")
    parser.add_argument("--trials", type=int, default=3, help="trials of the whole-study figure (0 = skip)")
    parser.add_argument("--study-images", type=int, default=1000)
    parser.add_argument("--study-epochs", type=int, default=1)
    args = parser.parse_args()
    device = fit.resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # both arms: pick the fastest convolution kernels
    print(f"setup: {args.model}, {args.image_size} px, batch {args.batch}, {args.steps} steps, {device}")
    plains, ours = [], []
    for _ in range(args.repeats):  # arms alternate, so load from other processes hits both alike
        plains.append(plain_loop(args, device))
        ours.append(exptrack_loop(args)[0])
    plain, mine = statistics.median(plains), statistics.median(ours)
    print(f"plain PyTorch loop (fp32, DataLoader): {plain:9.1f} samples/s (median of {_fmt(plains)})")
    print(f"exptrack fit.fit:                    {mine:9.1f} samples/s (median of {_fmt(ours)})")
    print(f"ratio exptrack / plain:                {mine / plain:9.2f}x")
    if args.trials:
        wall = study_wall_time(args)
        print(f"whole study, {args.trials} trials of {args.study_images} images: {wall:9.1f} s wall")


if __name__ == "__main__":
    main()
