"""The one `register_*` mechanism behind every plain-dict registry (losses, datasets, backbones,
weight resolvers, samplers, pruners, dashboard panels): same contract everywhere, a duplicate
name is refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

Entry = TypeVar("Entry")


def add(registry: dict[str, Entry], kind: str, name: str, entry: Entry) -> Entry:
    """Put `entry` under `name`; a second entry of the same name is a programming error."""
    if name in registry:
        raise ValueError(f"a {kind} named {name!r} is already registered")
    registry[name] = entry
    return entry


def registrar(registry: dict[str, Entry], kind: str) -> Callable[[str], Callable[[Entry], Entry]]:
    """`register = registrar(LOSSES, "loss")`, then `@register("focal")` on a builder."""

    def register(name: str) -> Callable[[Entry], Entry]:
        return lambda entry: add(registry, kind, name, entry)

    return register
