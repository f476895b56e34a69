"""What this process uses of the machine through torch, for the packages above training (the only
package that imports torch, `tests/core/test_layering.py`): how many GPUs there are, its share of the
cores and of a GPU's memory, the thread count `exp train` repeats, and whether an error was
running out of memory (and giving that memory back)."""

from __future__ import annotations

import gc
from typing import Any

import torch


def cuda_device_count() -> int:
    """GPUs torch sees here (0 without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def take_share(threads: int | None, memory_fraction: float | None) -> None:
    """A `--workers` worker's share: its intra- and inter-op threads, and of GPU 0 (the one its
    CUDA_VISIBLE_DEVICES shows) at most `memory_fraction` of the memory."""
    if threads:
        torch.set_num_threads(threads)
        torch.set_num_interop_threads(threads)
    if memory_fraction and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(memory_fraction, 0)


def use_threads(threads: int | None) -> int:
    """Train with `threads` intra-op threads (None: torch's default); the count in use."""
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def is_out_of_memory(error: BaseException) -> bool:
    """A CUDA (or other accelerator's) out-of-memory error: the config, not the code, is at fault."""
    return isinstance(error, torch.OutOfMemoryError)


def release_memory() -> None:
    """Give a failed trial's memory back so the next trial can allocate it."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def example_arrays(model: torch.nn.Module, example: torch.Tensor) -> tuple[Any, Any]:
    """`example` (inputs as `model` takes them) and the model's outputs for it, as numpy arrays on
    the CPU: what a logged model's signature and input example are made from."""
    model = model.cpu().eval()
    with torch.no_grad():
        return example.numpy(), model(example).numpy()
