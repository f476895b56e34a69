"""Weight URIs (`runs:/RUN/model`, `models:/NAME/VERSION`): a plain dict from URI scheme to a
function returning a state dict. Training side, so no MLflow here: `exptrack.tracking` registers
the MLflow schemes when it is imported (the CLI always imports it).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

from exptrack import registry
from exptrack.errors import UserError

Resolver = Callable[[str], dict[str, torch.Tensor]]
RESOLVERS: dict[str, Resolver] = {}
# `scheme:/...`: two letters at least, so a Windows drive (`C:/...`) stays a path
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]+):/")


# `@register_resolver(scheme)` on `uri -> state dict` for `scheme:/...` weights; a duplicate name is refused.
register_resolver = registry.registrar(RESOLVERS, "weights resolver")


def scheme_of(weights: str) -> str | None:
    match = _SCHEME.match(weights)
    return match["scheme"] if match else None


def resolve(uri: str) -> dict[str, torch.Tensor]:
    scheme = scheme_of(uri)
    if scheme is None or scheme not in RESOLVERS:
        known = ", ".join(f"{s}:/..." for s in sorted(RESOLVERS)) or "none registered"
        raise UserError(
            f"weights={uri!r}: no resolver for this URI scheme ({known}); "
            "use imagenet, none, a state-dict file, or import exptrack.tracking for runs:/ and models:/"
        )
    return RESOLVERS[scheme](uri)
