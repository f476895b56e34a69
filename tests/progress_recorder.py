"""A `training.progress` display that records what it is shown, for tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from exptrack.training import progress


class Recorded:
    """One task: its description, total, and every amount it advanced by."""

    def __init__(self, description: str, total: float | None) -> None:
        self.description, self.total = description, total
        self.steps: list[float] = []

    def advance(self, amount: float) -> None:
        self.steps.append(amount)


@contextlib.contextmanager
def recording() -> Iterator[list[Recorded]]:
    """Install a recording display for the block; yields the tasks shown, in order."""
    tasks: list[Recorded] = []

    @contextlib.contextmanager
    def display(description: str, total: float | None) -> Iterator[Recorded]:
        tasks.append(Recorded(description, total))
        yield tasks[-1]

    with progress.shown_by(display):
        yield tasks
