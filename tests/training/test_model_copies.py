"""A study's trials start from a copy of the model the previous trial built (same backbone,
weights, classes and RNG state), not a new build: the copy must train exactly as a new build
would, and another seed or a rewritten weights file must never be served a stale copy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from exptrack.config import TrialConfig
from exptrack.training import backbones, feature_cache, fit

TINY = TrialConfig(epochs=1, subset=96, image_size=16, weights="none", batch_size=32, device="cpu")


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    backbones.clear_pristine()
    feature_cache.clear()
    yield
    backbones.clear_pristine()


def _history(config: TrialConfig) -> list[dict[str, float]]:
    return fit.fit(config, warn=lambda line: None).history


@pytest.mark.slow  # trains several trials
def test_trials_from_a_copy_train_exactly_as_from_a_new_build() -> None:
    config = TINY.replace(freeze_depth=0)  # every stage trains: the whole copy is used
    built = _history(config)
    copied = _history(config)  # the copy kept before trial 1 trained, not trial 1's trained model
    again = _history(config)
    backbones.clear_pristine()
    rebuilt = _history(config)
    assert built == copied == again == rebuilt  # exact: same weights, same RNG state after


def _build(seed: int, weights: str = "none") -> torch.nn.Module:
    torch.manual_seed(seed)
    return backbones.build_model("resnet18", weights, 10, 0, image_size=16).model


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_another_seed_gets_its_own_weights_and_a_copy_is_independent() -> None:
    first, copy = _build(0), _build(0)
    assert _same(first, copy)
    with torch.no_grad():
        next(copy.parameters()).add_(1.0)  # training a copy leaves the next trial's start alone
    assert _same(first, _build(0))
    assert not _same(first, _build(1))


def test_a_rewritten_weights_file_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(_build(1).state_dict(), path)
    from_file = _build(0, str(path))
    assert _same(from_file, _build(1))
    torch.save(_build(2).state_dict(), path)  # same path and size, new contents
    assert _same(_build(0, str(path)), _build(2))
