"""fit on its own (no Optuna, no MLflow): epochs reported in order, early stop, repeatability."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytest

from exptrack import records
from exptrack.config import TrialConfig
from exptrack.training import fit

TINY = TrialConfig(epochs=2, subset=96, image_size=16, weights="none", batch_size=32, device="cpu")


class Recorder:
    """A reporter that keeps what fit told it and asks to stop after `stop_after` epochs."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.setup: dict[str, Any] = {}
        self.epochs: list[tuple[int, dict[str, float]]] = []
        self.stop_after = stop_after

    def on_setup(self, facts: Mapping[str, Any]) -> None:
        self.setup = dict(facts)

    def on_epoch(self, epoch: int, metrics: Mapping[str, float]) -> bool:
        self.epochs.append((epoch, dict(metrics)))
        return self.stop_after is not None and epoch >= self.stop_after


def test_fit_reports_every_epoch_in_order_with_finite_metrics_and_a_profile() -> None:
    from tests.progress_recorder import recording

    reporter = Recorder()
    with recording() as shown:
        result = fit.fit(TINY, reporter, warn=lambda _: None)
    assert [epoch for epoch, _ in reporter.epochs] == [1, 2]
    # the trial's own progress (issue 19, item 13): one step an epoch, so the bar has an ETA
    (epochs,) = [task for task in shown if task.description == "epochs"]
    assert epochs.total == 2 and epochs.steps == [1, 1]
    for _, metrics in reporter.epochs:
        assert set(metrics) == {"train_loss", "val_loss", "val_accuracy"}
        assert all(math.isfinite(v) for v in metrics.values())
        assert 0.0 <= metrics["val_accuracy"] <= 1.0
    assert not result.stopped_early and result.final["epoch"] == 2
    assert reporter.setup["num_classes"] == 10 and reporter.setup["device"] == "cpu"
    assert reporter.setup["train_samples"] == 96 and 0 < reporter.setup["val_samples"] <= 96
    for key in ("seconds_per_epoch", "train_samples_per_second", "compute_seconds", "trainable_params"):
        assert result.profile[key] > 0, key
    # resnet18 at 16 px: ~92 MFLOP per sample forward + backward (~3x the forward's ~30 MFLOP)
    assert 5e7 < result.profile["flops_per_sample"] < 2e8 and result.profile["achieved_tflops"] > 0
    assert "mfu" not in result.profile  # no peak to compare a CPU with
    # every figure (but the thread count) is a name an objective or constraint may use
    assert set(result.profile) - {records.TORCH_THREADS, *records.PROFILE_TEXT} <= set(
        records.PROFILE_FIGURES
    )


def test_a_reporter_asking_to_stop_ends_training_after_that_epoch() -> None:
    reporter = Recorder(stop_after=1)
    result = fit.fit(TINY.replace(epochs=3), reporter, warn=lambda _: None)
    assert result.stopped_early and len(result.history) == 1 and len(reporter.epochs) == 1


@pytest.mark.slow  # trains two trials
def test_the_same_config_and_seed_train_to_the_same_metrics() -> None:
    first = fit.fit(TINY.replace(epochs=1), warn=lambda _: None).final
    second = fit.fit(TINY.replace(epochs=1), warn=lambda _: None).final
    assert first == second


def test_a_diverging_learning_rate_stops_with_a_non_finite_loss_error() -> None:
    with pytest.raises(fit.NonFiniteLossError):
        fit.fit(TINY.replace(lr=1e12, epochs=1), warn=lambda _: None)


@pytest.mark.slow  # trains two trials
def test_memory_figures_are_each_trials_own_peak_not_the_processes_high_water_mark() -> None:
    # resnet18 activations at 96 px, batch 128: a few hundred MB; at 16 px, batch 64: a few MB
    big = fit.fit(TINY.replace(epochs=1, subset=256, image_size=96, batch_size=128), warn=lambda _: None)
    small = fit.fit(TINY.replace(epochs=1), warn=lambda _: None)
    # less work, lower peak: the figures restart per trial (a process's high-water mark never falls,
    # so without the reset the small trial would report the big one's peak)
    assert 0 < small.profile["peak_rss_growth_mb"] < big.profile["peak_rss_growth_mb"] / 2
    assert "process_peak_rss_mb" not in small.profile


@pytest.mark.slow  # trains two trials
def test_a_processes_warm_up_step_leaves_no_trace_on_the_first_trials_results() -> None:
    fit._WARM.clear()  # this fit is the process's first of resnet18 on the CPU: it warms up first
    warmed = fit.fit(TINY.replace(epochs=1), warn=lambda _: None)
    assert {("cpu", "resnet18")} == fit._WARM
    plain = fit.fit(TINY.replace(epochs=1), warn=lambda _: None)  # no warm-up this time
    assert warmed.history == plain.history
