"""The one `register_*` decorator behind every plain-dict registry (losses, datasets, weight
resolvers, dashboard panels): same contract everywhere, a duplicate name is refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

Entry = TypeVar("Entry", bound=Callable[..., object])


def registrar(registry: dict[str, Entry], kind: str) -> Callable[[str], Callable[[Entry], Entry]]:
    """`register = registrar(LOSSES, "loss")`, then `@register("focal")` on a builder."""

    def register(name: str) -> Callable[[Entry], Entry]:
        def decorate(entry: Entry) -> Entry:
            if name in registry:
                raise ValueError(f"a {kind} named {name!r} is already registered")
            registry[name] = entry
            return entry

        return decorate

    return register
