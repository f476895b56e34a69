"""A trial's checkpoint on its own (no Optuna, no MLflow): the file round trip with the RNGs, and
`fit` resumed after epoch 2 of 3 ending exactly where an uninterrupted `fit` ends."""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from exptrack.config import TrialConfig
from exptrack.training import backbones, checkpoints, fit, optimizers

# 3 epochs so that a resume after epoch 2 trains one; freeze_depth 2: the frozen stem and first
# stage are rebuilt from the seed, not saved
CONFIG = TrialConfig(
    epochs=3, subset=96, image_size=16, weights="none", batch_size=32, device="cpu", freeze_depth=2
)


class FileStore:
    """The `checkpoints.Store` a search trial's reporter is, minus Optuna: each epoch's state
    written to its own file (the real format), and a file's state handed back to resume."""

    def __init__(self, folder: Path, resume_from: Path | None = None) -> None:
        self.folder, self.resume_from = folder, resume_from

    def checkpoint_due(self) -> bool:
        return True

    def checkpoint(self, epoch: int, state: Mapping[str, Any]) -> None:
        checkpoints.write(self.folder / f"{epoch}.pt", checkpoints.Checkpoint(epoch, {}, [], dict(state)))

    def resume_state(self) -> Mapping[str, Any] | None:
        return checkpoints.read(self.resume_from).state if self.resume_from else None


class Epochs:
    """fit's reporter: the epochs it was told, in order."""

    def __init__(self) -> None:
        self.told: list[tuple[int, dict[str, float]]] = []

    def on_setup(self, facts: Mapping[str, Any]) -> None:
        pass

    def on_epoch(self, epoch: int, metrics: Mapping[str, float]) -> bool:
        self.told.append((epoch, dict(metrics)))
        return False


def test_a_checkpoint_file_round_trips_its_state_and_every_rng(tmp_path: Path) -> None:
    state = {"weights": torch.arange(6.0), "rng": checkpoints.rng_state(torch.device("cpu"))}
    checkpoints.write(
        tmp_path / "0.pt", checkpoints.Checkpoint(2, {"lr": 0.01}, [{"epoch": 2, "x": 1.0}], state)
    )
    drawn = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(99), random.seed(99), np.random.seed(99)  # another state in between

    found = checkpoints.read(tmp_path / "0.pt")
    checkpoints.set_rng_state(found.state["rng"], torch.device("cpu"))
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(again[0], drawn[0]) and again[1:] == drawn[1:]  # the same numbers once more
    assert found.epoch == 2 and found.config == {"lr": 0.01} and found.reported == [{"epoch": 2, "x": 1.0}]
    assert torch.equal(found.state["weights"], torch.arange(6.0))
    assert [p.name for p in tmp_path.iterdir()] == ["0.pt"]  # no temporary file left


def test_a_file_that_is_no_checkpoint_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "0.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoints.CheckpointUnusable, match="cannot be read"):
        checkpoints.read(tmp_path / "0.pt")
    torch.save({"format": 0}, tmp_path / "1.pt")
    with pytest.raises(checkpoints.CheckpointUnusable, match="not an exptrack checkpoint of format 1"):
        checkpoints.read(tmp_path / "1.pt")


def test_a_state_keeps_the_trainable_part_and_refuses_a_model_built_otherwise() -> None:
    def built(freeze: int) -> tuple[torch.nn.Module, list[torch.nn.Module], torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = backbones.build_model("resnet18", "none", 10, freeze, lambda _: None, 16)
        optimizer = optimizers.build(CONFIG.replace(freeze_depth=freeze), model.model, torch.device("cpu"))
        return model.model, model.frozen_modules, optimizer

    model, frozen, optimizer = built(2)
    state = checkpoints.capture(model, frozen, optimizer, [])
    assert "conv1.weight" not in state["model"] and "fc.weight" in state["model"]  # the stem is frozen
    assert checkpoints.nbytes(state["model"]) < checkpoints.nbytes(model.state_dict())
    checkpoints.restore(state, *built(2))  # the same build takes it
    with pytest.raises(checkpoints.CheckpointUnusable, match="other layers"):
        checkpoints.restore(state, *built(1))
    other = built(2)
    torch.nn.init.ones_(other[1][0].weight)  # a frozen stage other weights gave
    with pytest.raises(checkpoints.CheckpointUnusable, match="frozen stages differ"):
        checkpoints.restore(state, *other)


@pytest.mark.slow  # trains 3 + 1 epochs
def test_fit_resumed_after_epoch_2_trains_epoch_3_only_and_ends_exactly_as_without_a_break(
    tmp_path: Path,
) -> None:
    whole, resumed = Epochs(), Epochs()
    reference = fit.fit(CONFIG, whole, lambda _: None, store=FileStore(tmp_path / "whole"))
    # each epoch end but the last is kept: after epoch 3 only the trial's tell is left
    assert sorted(p.name for p in (tmp_path / "whole").iterdir()) == ["1.pt", "2.pt"]

    again = fit.fit(
        CONFIG, resumed, lambda _: None, store=FileStore(tmp_path / "again", tmp_path / "whole" / "2.pt")
    )
    assert [epoch for epoch, _ in resumed.told] == [3]  # epochs 1 and 2 are not trained again
    # Exact on CPU with the same thread count: the same batches (seeded by seed, epoch and step),
    # weights, AdamW moments and RNGs. Tolerance stated: equal to 1e-12 relative (val_accuracy is
    # a count of right answers, so any drift would show).
    assert again.history == [pytest.approx(h, rel=1e-12) for h in reference.history]
    assert resumed.told[0][1] == pytest.approx(whole.told[2][1], rel=1e-12)
