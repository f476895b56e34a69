"""One config value checked before any `TrialConfig` holds it: its type (`coerce`, which takes
YAML 1.1's `1e-3` text as a number), its bounds (`Range`, declared beside a field with `ranged`)
and its text (`check_text`).

Apart from `config.py` so that file holds the field table and its YAML round trip; these checks
know no field by name, so every field, `--set` value and search-space value shares them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import operator
import typing
from collections.abc import Callable, Mapping
from typing import Any

from exptrack.errors import UserError, shown

# Any whole number a config holds fits a signed 64-bit integer: torch, NumPy and SQLite store no more.
MAX_INT = 2**63 - 1
# A text value (a path, a name, a URI) is at most PATH_MAX (4,096 bytes on Linux) long.
MAX_TEXT = 4096


# Bounds a numeric field can carry: `>= 1` reads "at least 1" in a message.
_BOUNDS: dict[str, tuple[str, Callable[[float, float], bool]]] = {
    ">=": ("at least", operator.ge),
    ">": ("greater than", operator.gt),
    "<=": ("at most", operator.le),
    "<": ("less than", operator.lt),
}


@dataclasses.dataclass(frozen=True)
class Range:
    """A numeric field's allowed values: bounds that must all hold, e.g. (">", 0.0), ("<", 1.0)."""

    bounds: tuple[tuple[str, float], ...]

    def contains(self, value: float) -> bool:
        return all(_BOUNDS[op][1](float(value), limit) for op, limit in self.bounds)

    def broken(self, value: float) -> Range:
        """The bounds `value` breaks: a message names those (`at most 10000`), not all of them."""
        return Range(tuple(b for b in self.bounds if not _BOUNDS[b[0]][1](float(value), b[1])))

    def __str__(self) -> str:  # whole limits in full: `at most 4294967295`, not `4.29497e+09`
        return " and ".join(f"{_BOUNDS[op][0]} {_number_text(limit)}" for op, limit in self.bounds)


def _number_text(limit: float) -> str:
    return str(int(limit)) if limit.is_integer() else f"{limit:g}"


def ranged(default: Any, *bounds: str) -> Any:
    """A numeric field with its allowed range beside it: `epochs: int = ranged(3, ">= 1")`."""
    parsed = tuple((op, float(limit)) for op, limit in (bound.split() for bound in bounds))
    return dataclasses.field(default=default, metadata={"range": Range(parsed)})



def coerce(key: str, value: Any, annotation: Any, source: str) -> Any:
    origin = typing.get_origin(annotation)
    if annotation in (int, float) and isinstance(value, str):
        value = parse_number(value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise UserError(f"{source}: {key} must be a mapping, got {shown(value)}")
        if typing.get_args(annotation)[1] is Any:  # `params`: a custom objective's own values
            return {sub_key(key, k, source): _own_value(f"{key}.{k}", v, source) for k, v in value.items()}
        return {sub_key(key, k, source): coerce(f"{key}.{k}", v, float, source) for k, v in value.items()}
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return _whole(key, value, source)
    elif annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return _finite(key, value, source)
    elif annotation is str:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str):
            return check_text(value, f"{source}: {key}")
    name = getattr(annotation, "__name__", str(annotation))
    raise UserError(f"{source}: {key} must be of type {name}, got {shown(value)}")


def _own_value(key: str, value: Any, source: str) -> Any:
    """One of a custom objective's own values: a number, text or true/false, as a search space or
    a YAML file can give it (stored in Optuna and MLflow as they are, so nothing nested)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return _whole(key, value, source)
    if isinstance(value, float):
        return _finite(key, value, source)
    if isinstance(value, str):
        return check_text(value, f"{source}: {key}")
    raise UserError(f"{source}: {key} must be a number, text or true/false, got {shown(value)}")


def _whole(key: str, value: int, source: str) -> int:
    if abs(value) > MAX_INT:  # a 4,000-digit number overflowed torch and SQLite with a traceback
        raise UserError(f"{source}: {key} must be a whole number of at most 19 digits, got {shown(value)}")
    return value


def _finite(key: str, value: float, source: str) -> float:
    try:
        number = float(value)  # an int past 1.8e308 overflows here
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise UserError(f"{source}: {key} must be a finite number, got {shown(value)}")
    return number


def check_text(text: str, what: str) -> str:
    """Text a config, a name or a path may hold: printable UTF-8 of at most MAX_TEXT characters. A
    byte that is not UTF-8 (Python keeps it as a lone surrogate) or a control character fails
    later, in a store's encoder or a file name, with a traceback; here it is one line."""
    if len(text) > MAX_TEXT:
        raise UserError(f"{what} is {len(text)} characters long; the limit is {MAX_TEXT}")
    bad = next((c for c in text if not c.isprintable()), None)
    if bad is not None:
        kind = "a byte that is not UTF-8" if 0xD800 <= ord(bad) <= 0xDFFF else "a control character"
        raise UserError(f"{what} holds {kind} ({bad!r} in {shown(text)}); use printable UTF-8 text")
    return text


def sub_key(key: str, sub: Any, source: str) -> str:
    """A key under a dict field (a loss parameter): a plain name, as a builder's keyword argument is;
    `__dict__` or `1` names nothing a loss takes."""
    if not isinstance(sub, str) or not sub.isidentifier() or sub.startswith("_"):
        raise UserError(f"{source}: {key} key {shown(sub)} is not a parameter name; use e.g. {key}.gamma")
    return sub


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool, which Python counts as an int)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse_number(value: Any) -> Any:
    """YAML 1.1 reads `1e-3` (no dot) as a string; users write it, so take it as a float. Anything
    that is not such a string comes back unchanged, for the caller's own type check."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return float(value)
    return value
