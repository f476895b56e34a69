"""Progress of long setup work in training (a weight download, reading an image folder): training
reports it here and whoever runs it draws it. The CLI draws rich bars for the block it runs
(`with progress.shown_by(display):`); a notebook, a test or `fit` on its own sees nothing unless it
does the same. The display is the caller's, for its block only (a context variable, not module
state a caller must remember to reset): nothing is left installed when the command returns.
"""

from __future__ import annotations

import contextlib
import contextvars
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


_display: contextvars.ContextVar[Display] = contextvars.ContextVar("exptrack_progress", default=_silent)


@contextlib.contextmanager
def shown_by(display: Display | None) -> Iterator[None]:
    """Show training's progress through `display` while the block runs (None: show nothing); the
    display shown before comes back after it."""
    token = _display.set(display or _silent)
    try:
        yield
    finally:
        _display.reset(token)


def task(description: str, total: float | None) -> contextlib.AbstractContextManager[Task]:
    """`with progress.task("reading 1,200 images", 1200) as bar: ... bar.advance(1)`."""
    return _display.get()(description, total)
