"""The frozen-feature cache: a cached trial trains to the uncached trial's metrics, is off where it
would not be exact (augmentation) or would not fit (memory budget), never serves a trial other
weights or another image size, and `--workers 2` searches record the same results with or without it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from exptrack import records
from exptrack.config import TrialConfig
from exptrack.training import backbones, feature_cache, fit
from tests.faultkit import run_search, trials

TINY = TrialConfig(epochs=2, subset=96, image_size=16, weights="none", batch_size=32, device="cpu")
# The cached path runs the same float32 operations on the same inputs in the same order as the
# plain one (the frozen stages in eval mode, per sample; the trained stages on identical batches),
# and measures bit-identical on CPU. 1e-6 relative leaves room for a BLAS/oneDNN kernel chosen
# for the feature pass's batch of 256 instead of the training batch (rounding at ~1e-7 per op,
# grown over a few dozen steps) while any real difference (a wrong sample, BN in train mode,
# one missed update) moves a loss in its second or third digit.
REL = 1e-6


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    feature_cache.clear()
    yield
    feature_cache.clear()


def _fit(config: TrialConfig, said: list[str] | None = None) -> fit.FitResult:
    return fit.fit(config, warn=(said if said is not None else []).append)


@pytest.mark.slow  # trains the same trial twice, cached and not
@pytest.mark.parametrize("depth", [1, 3])
def test_a_cached_trial_trains_to_the_uncached_trials_metrics_every_epoch(depth: int) -> None:
    config = TINY.replace(freeze_depth=depth)
    plain = _fit(config.replace(feature_cache=False))
    cached = _fit(config)
    again = _fit(config)  # a second trial of the same key: served from the cache
    assert plain.profile[records.FEATURE_CACHE] == "off:config"
    assert cached.profile[records.FEATURE_CACHE] == "miss"
    assert again.profile[records.FEATURE_CACHE] == "hit"
    for result in (cached, again):
        assert len(result.history) == len(plain.history) == 2
        for ours, theirs in zip(result.history, plain.history, strict=True):
            assert ours == pytest.approx(theirs, rel=REL)
    # the hit computed nothing: it saved both epochs' frozen forward passes over train and val
    assert again.profile["feature_cache_seconds_saved"] > 0
    # the trained model is the whole model (head included), as a logged model needs
    assert sum(p.numel() for p in cached.model.parameters()) == sum(
        p.numel() for p in plain.model.parameters()
    )


@pytest.mark.slow  # trains the same trial twice, cached and not
def test_shallower_features_seed_a_deeper_depth_with_the_same_metrics() -> None:
    _fit(TINY.replace(freeze_depth=1, epochs=1))
    deeper = _fit(TINY.replace(freeze_depth=3, epochs=1))
    plain = _fit(TINY.replace(freeze_depth=3, epochs=1, feature_cache=False))
    assert deeper.profile[records.FEATURE_CACHE] == "miss:from_depth_1"
    assert deeper.history[0] == pytest.approx(plain.history[0], rel=REL)


@pytest.mark.slow  # trains two trials
def test_augmented_training_and_nothing_frozen_train_on_the_plain_path_and_say_why() -> None:
    assert _fit(TINY.replace(freeze_depth=2, augment=True)).profile[records.FEATURE_CACHE] == "off:augment"
    assert _fit(TINY.replace(freeze_depth=0)).profile[records.FEATURE_CACHE] == "off:nothing_frozen"


def test_features_over_the_memory_budget_fall_back_to_the_plain_path_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(feature_cache.BUDGET_ENV, "0.004")  # 4 KB: not even a few samples' features
    said: list[str] = []
    result = _fit(TINY.replace(freeze_depth=2, epochs=1), said)
    plain = _fit(TINY.replace(freeze_depth=2, epochs=1, feature_cache=False))
    assert result.profile[records.FEATURE_CACHE] == "off:memory"
    assert result.history == plain.history  # the plain path itself
    (line,) = [s for s in said if "feature cache" in s]
    assert "budget" in line and feature_cache.BUDGET_ENV in line and "plain path" in line


@pytest.mark.slow  # trains several trials
def test_other_weights_or_another_image_size_never_hit(tmp_path: Path) -> None:
    config = TINY.replace(freeze_depth=2, epochs=1)
    assert _fit(config).profile[records.FEATURE_CACHE] == "miss"
    assert _fit(config.replace(image_size=20)).profile[records.FEATURE_CACHE] == "miss"
    # a weights file whose frozen stages differ (another init), then the very same file again
    other = tmp_path / "other.pt"
    torch.manual_seed(123)
    torch.save(backbones.build_model("resnet18", "none", 10, 0).model.state_dict(), other)
    from_file = config.replace(weights=str(other))
    assert _fit(from_file).profile[records.FEATURE_CACHE] == "miss"
    assert _fit(from_file).profile[records.FEATURE_CACHE] == "hit"
    # random init from another seed: other frozen weights, so no hit either
    assert _fit(config.replace(seed=1)).profile[records.FEATURE_CACHE] == "miss"


@pytest.mark.slow  # builds every backbone
def test_every_backbones_runners_compose_to_its_forward() -> None:
    for name, spec in backbones.BACKBONES.items():
        if spec.runners is None:
            continue
        torch.manual_seed(0)
        model = backbones.build_model(name, "none", 10, 0, image_size=32).model.eval()
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            expected = model(x)
            for depth in range(backbones.stage_count(name) + 1):
                prefix, suffix = backbones.split_at(name, model, depth)  # type: ignore[misc]
                h = x
                for runner in prefix:
                    h = runner(h)
                assert torch.equal(suffix.eval()(h), expected), (name, depth)


@pytest.mark.slow
def test_two_workers_record_the_same_results_with_and_without_the_cache(tmp_path: Path) -> None:
    queued = tmp_path / "queued"
    queued.mkdir()
    points = [(0.001, 32), (0.004, 32), (0.002, 64), (0.008, 64)]
    for i, (lr, batch) in enumerate(points):
        (queued / f"p{i}.yaml").write_text(f"lr: {lr}\nbatch_size: {batch}\n")
    found = {}
    for arm, extra in (("cached", []), ("plain", ["--set", "feature_cache=off"])):
        project = tmp_path / arm
        project.mkdir()
        args = (
            "--trials",
            "4",
            "--workers",
            "2",
            "--seed",
            "0",
            "--set",
            "freeze_depth=2",
            "--enqueue",
            str(queued),
        )
        result = run_search(project, *args, *extra)
        assert result.returncode == 0, result.stderr
        found[arm] = {(t.params["lr"], t.params["batch_size"]): t for t in trials(project)}
    assert sorted(found["cached"]) == sorted(found["plain"]) == sorted(points)
    for point, cached in found["cached"].items():
        plain = found["plain"][point]
        assert cached.state.name == plain.state.name == "COMPLETE"
        assert cached.value == pytest.approx(plain.value, rel=REL)
        assert plain.user_attrs["profile"][records.FEATURE_CACHE] == "off:config"
    statuses = [t.user_attrs["profile"][records.FEATURE_CACHE] for t in found["cached"].values()]
    # each worker computes the features once (its own cache), then serves its later trials
    assert statuses.count("miss") <= 2 and "hit" in statuses
