"""The own_objective study's training function: no torch, a score that is the trial's quality."""

from collections.abc import Mapping
from typing import Any


def train(config: Any, reporter: Any) -> Mapping[str, float]:
    quality = float(config.params["quality"])
    if quality < 0:
        raise ValueError(f"quality {quality} is negative: this trial's function raises")
    reporter.log_figure("work_units", 7)
    for epoch in range(1, config.epochs + 1):
        reporter.report(epoch, {"score": quality, "loss": 1 - quality})
        if reporter.should_prune():
            break
    return {"score": quality}
