"""A trial's state at an epoch end, on disk: the checkpoint file's format, and what the built-in
fine-tuning puts in it so that a resumed trial trains the very batches an uninterrupted one would.

The file is one `torch.save` dict, written to a temporary name and renamed over the last one (a
kill never leaves half a file), read back with `weights_only=True` (it executes no code). Where it
lives and when it is written is the caller's (`search.checkpoints`): training never names a path.

The built-in's state keeps the trainable part of the model only: the frozen stages are rebuilt
exactly by `fit` from the weights and the seed (`torch.manual_seed(config.seed)` precedes the
build) and never change (no gradients, batch norm in eval mode), so saving them would only cost
disk (resnet50 frozen to its last stage: 23.5M of 25.6M parameters). A digest of the frozen part is
saved and compared, so a rebuild that differs (other weights) is refused, not trained on.
The batches need no generator state: each epoch's order and augmentation are drawn from seeds of
(seed, epoch, step) (`batching.step_seed`); the global RNGs (dropout, a loss's own draws) are saved.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from exptrack import errors

FORMAT = 1  # bumped when the layout changes: an older file is then not resumed from


class CheckpointUnusable(ValueError):
    """A checkpoint that cannot be resumed from (another format, config or model): start afresh."""


@runtime_checkable
class Store(Protocol):
    """What a reporter offers a training function that saves its state (the search's does):
    `checkpoint_due()` says whether to build a state at this epoch end (they are spaced in time)."""

    def checkpoint_due(self) -> bool: ...
    def checkpoint(self, epoch: int, state: Mapping[str, Any]) -> None: ...
    def resume_state(self) -> Mapping[str, Any] | None: ...


@dataclasses.dataclass
class Checkpoint:
    """One trial after `epoch` epochs: its config, what it reported per epoch, the function's state."""

    epoch: int
    config: dict[str, Any]
    reported: list[dict[str, float]]  # the reporter's per-epoch metrics, each with "epoch"
    state: dict[str, Any]


def write(path: Path, checkpoint: Checkpoint) -> None:
    """Atomically: a temporary file in the same folder, fsynced, renamed over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as file:
            torch.save({"format": FORMAT, **dataclasses.asdict(checkpoint)}, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read(path: Path) -> Checkpoint:
    """The checkpoint at `path` (on the CPU); CheckpointUnusable if it is not one of this format."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # cut short, not torch's, or holding what weights_only refuses
        raise CheckpointUnusable(f"{path} cannot be read ({errors.first_line(exc)})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointUnusable(f"{path} is not an exptrack checkpoint of format {FORMAT}")
    return Checkpoint(raw["epoch"], raw["config"], raw["reported"], raw["state"])


def nbytes(value: Any) -> int:
    """The bytes of the tensors in a (nested) state: what its file will take, give or take ~1 KB."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, Mapping):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(nbytes(v) for v in value)
    return 0


def capture(
    model: nn.Module,
    frozen: list[nn.Module],
    optimizer: torch.optim.Optimizer,
    history: list[dict[str, float]],
) -> dict[str, Any]:
    """The built-in's state after an epoch: trainable model part, optimizer, history, RNGs."""
    skipped = _frozen_ids(frozen)
    state = model.state_dict(keep_vars=True)
    return {
        # references, not copies: the store writes them before training goes on
        "model": {k: v.detach() for k, v in state.items() if id(v) not in skipped},
        "frozen_digest": _digest(frozen),
        "optimizer": optimizer.state_dict(),
        "history": [dict(h) for h in history],
        "rng": rng_state(_device_of(model)),
    }


def restore(
    state: Mapping[str, Any], model: nn.Module, frozen: list[nn.Module], optimizer: torch.optim.Optimizer
) -> list[dict[str, float]]:
    """Load `capture`'s state into a freshly built model and optimizer; the history so far. The
    RNGs are set last: call it right before the next epoch trains."""
    skipped = _frozen_ids(frozen)
    expected = {k for k, v in model.state_dict(keep_vars=True).items() if id(v) not in skipped}
    if set(state["model"]) != expected:
        raise CheckpointUnusable("its model holds other layers than the one built now")
    saved, now = torch.tensor(state["frozen_digest"]), torch.tensor(_digest(frozen))
    if saved.shape != now.shape or not torch.allclose(saved, now, rtol=1e-9):
        raise CheckpointUnusable("its frozen stages differ from the ones built now (other weights?)")
    model.load_state_dict(state["model"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"], _device_of(model))
    return [dict(h) for h in state["history"]]


def resume(
    store: Store | None,
    model: nn.Module,
    frozen: list[nn.Module],
    optimizer: torch.optim.Optimizer,
    warn: Callable[[str], None],
) -> list[dict[str, float]]:
    """`fit`'s resume: the epochs a predecessor's checkpoint already trained (model, optimizer and
    RNGs loaded), or none: a checkpoint this model cannot take is said in one line, not used."""
    state = store.resume_state() if store is not None else None
    if not state:
        return []
    try:
        return restore(state, model, frozen, optimizer)
    except CheckpointUnusable as exc:
        warn(f"checkpoint not resumed: {exc}; training from epoch 1")
        return []


def save(
    store: Store,
    model: nn.Module,
    frozen: list[nn.Module],
    optimizer: torch.optim.Optimizer,
    epoch: int,
    history: list[dict[str, float]],
) -> None:
    """`fit`'s checkpoint at the end of `epoch`, when the store wants one."""
    if store.checkpoint_due():
        store.checkpoint(epoch, capture(model, frozen, optimizer, history))


def rng_state(device: torch.device) -> dict[str, Any]:
    """torch's CPU generator, the device's CUDA one when it trains there, Python's and NumPy's
    (fit draws from neither: kept for a loss or a study's function that does)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [
            str(kind),
            torch.from_numpy(np.asarray(keys).copy()),
            int(pos),
            int(has_gauss),
            float(gauss),
        ],
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, gauss))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _as_tuple(value: Any) -> Any:
    """random.setstate wants the nested tuples it gave (a loaded file may hold lists)."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list | tuple) else value


def _frozen_ids(frozen: list[nn.Module]) -> set[int]:
    return {id(t) for module in frozen for t in module.state_dict(keep_vars=True).values()}


def _digest(frozen: list[nn.Module]) -> list[float]:
    """Per frozen tensor, its sum in float64: cheap, and tells other weights apart."""
    return [float(t.detach().double().sum()) for m in frozen for t in m.state_dict().values()] or [0.0]


def _device_of(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")
