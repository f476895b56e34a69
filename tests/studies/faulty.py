"""Test-only study whose loss injects a fault on chosen trials (never shipped with the product).

EXPTRACK_FAULTS="2:raise,3:oom" makes the 3rd and 4th loss built in this process raise / run out
of memory; "*:raise" faults every trial. Kinds: raise, oom (the exception type), oom_real (on CUDA), nan (training loss), nan_eval (the
validation loss), hang (training blocks in its 2nd epoch; hang3: in its 3rd), stuck (like hang, but swallows a first
signal, writing EXPTRACK_GATE_DIR/interrupted-N), gate (blocks until EXPTRACK_GATE_DIR/go-N).
Run: EXPTRACK_FAULTS=1:raise exp search tests/studies/faulty.py --trials 3
"""

import os
import time
from pathlib import Path

import torch
from torch import nn

from exptrack import Study
from exptrack.training.losses import LOSSES, register_loss

_built = [0]


class FaultyLoss(nn.Module):
    """Cross entropy that misbehaves as told: the fault lives in the loss, so it hits training."""

    def __init__(self, kind: str | None, index: int) -> None:
        super().__init__()
        self.kind, self.index, self.evals = kind, index, 0
        self.ce = nn.CrossEntropyLoss()
        self.evaluations, self.evaluating = 0, False  # validation passes so far (one an epoch)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.ce(logits, target)
        training = torch.is_grad_enabled()
        if not training:
            self.evals += 1
        self.evaluations += not training and not self.evaluating
        self.evaluating = not training
        if self.kind == "oom" and training:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")
        if self.kind == "oom_real" and training:  # more than any GPU has: a real CUDA OOM
            self.hog = torch.empty(1 << 46, dtype=torch.uint8, device=logits.device)
        if self.kind == "nan" and training:
            return loss * float("nan")
        if self.kind == "nan_eval" and not training:
            return loss * float("nan")
        if self.kind == "hang" and training and self.evals > 0:
            time.sleep(600)  # epoch 1's metrics are logged; a signal arrives here
        if self.kind == "hang3" and training and self.evaluations >= 2:
            time.sleep(600)  # epochs 1 and 2 are logged and checkpointed
        if self.kind == "stuck" and training and self.evals > 0:
            while True:  # swallows the first signal, as a stuck native call would: only a second ends it
                try:
                    time.sleep(600)
                except KeyboardInterrupt:
                    (Path(os.environ["EXPTRACK_GATE_DIR"]) / f"interrupted-{self.index}").touch()
        if self.kind == "gate" and training:
            folder = Path(os.environ["EXPTRACK_GATE_DIR"])
            (folder / f"waiting-{self.index}").touch()  # the test knows training has begun
            gate = folder / f"go-{self.index}"
            deadline = time.monotonic() + 120
            while not gate.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            self.kind = None
        return loss


def _fault(index: int) -> str | None:
    for item in filter(None, os.environ.get("EXPTRACK_FAULTS", "").split(",")):
        at, _, kind = item.partition(":")
        if at == "*" or int(at) == index:
            return kind
    return None


if "faulty" not in LOSSES:  # a test process may load this file more than once

    @register_loss("faulty")
    def faulty() -> nn.Module:
        index = _built[0]
        _built[0] += 1
        kind = _fault(index)
        if kind == "raise":
            raise RuntimeError(f"injected fault in trial build {index}")
        return FaultyLoss(kind, index)


study = Study(
    name="faulty",
    search_space="faulty.yaml",
    metric="val_loss",
    direction="minimize",
    fixed={"backbone": "resnet18", "weights": "none", "dataset": "digits", "loss": "faulty", "epochs": 1},
    pruner="none",
    sampler="random",
    dashboard=None,
)
