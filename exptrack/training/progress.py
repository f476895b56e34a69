"""Progress of long setup work in training (a weight download, reading an image folder): training
reports it here and whoever runs it draws it. The CLI installs rich bars with `use`; a notebook,
a test or `fit` on its own sees nothing unless it installs a display of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Protocol


class Task(Protocol):
    """One piece of work being done: `advance` by what was done since the last call."""

    def advance(self, amount: float) -> None: ...


# (description, total or None when unknown) -> a context manager giving the Task while it runs
Display = Callable[[str, float | None], contextlib.AbstractContextManager[Task]]


class _Silent:
    def advance(self, amount: float) -> None:
        pass


@contextlib.contextmanager
def _silent(description: str, total: float | None) -> Iterator[Task]:
    yield _Silent()


_display: list[Display] = [_silent]


def use(display: Display | None) -> None:
    """Show training's progress through `display` from now on (None: show nothing)."""
    _display[0] = display or _silent


def task(description: str, total: float | None) -> contextlib.AbstractContextManager[Task]:
    """`with progress.task("reading 1,200 images", 1200) as bar: ... bar.advance(1)`."""
    return _display[0](description, total)
