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


def _fit(config: TrialConfig) -> fit.FitResult:
    return fit.fit(config, warn=lambda line: None)


@pytest.mark.slow  # trains several trials
def test_a_recycled_model_trains_exactly_as_a_new_build() -> None:
    """A search trial hands its trained model back (`backbones.recycle`); the next trial's model
    is that object with every tensor, flag and mode restored, and trains bit-identically."""
    plain, frozen = TINY.replace(freeze_depth=0), TINY.replace(freeze_depth=3, lr=3e-3)
    first_plain = _fit(plain)
    first_frozen = _fit(frozen)  # frozen stages, calibrated batch norm, a feature-cache miss
    backbones.recycle(first_frozen.model)
    again_plain = _fit(plain)
    assert again_plain.model is first_frozen.model  # restored in place, not copied
    assert again_plain.history == first_plain.history  # exact, not within a tolerance
    backbones.recycle(again_plain.model)
    feature_cache.clear()  # calibrated and computed again, on the restored frozen stages
    again_frozen = _fit(frozen)
    assert again_frozen.model is first_frozen.model
    assert again_frozen.history == first_frozen.history


def test_recycle_takes_only_a_model_handed_out_for_the_current_key() -> None:
    reference = _build(0)
    handed = _build(0)
    with torch.no_grad():
        next(handed.parameters()).add_(1.0)  # as a trial's training leaves it
    handed.requires_grad_(False).eval()
    backbones.recycle(handed)
    restored = _build(0)
    assert restored is handed and _same(restored, reference)
    assert restored.training and all(p.requires_grad and p.grad is None for p in restored.parameters())
    backbones.recycle(torch.nn.Linear(2, 2))  # never handed out: ignored
    assert _build(0) is not restored  # no spare: a deep copy
    torch.manual_seed(0)
    larger = backbones.build_model("resnet18", "none", 10, 0, image_size=24).model  # another key
    _build(0)
    backbones.recycle(larger)  # handed out for a key that is no longer the current one: ignored
    assert _build(0) is not larger
