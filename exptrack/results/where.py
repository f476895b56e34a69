"""`--where`: a small filter over a stored trial, parsed, never evaluated as code.

Grammar: `COND [and COND]...`, each `KEY OP VALUE` with OP one of == != < <= > >=. KEY is a field
of the trial's config (`epochs`, `lr`, `loss`), a searched parameter by its Optuna name
(`loss.focal.gamma`), or `number`, `state` (COMPLETE, PRUNED, FAIL) or `value`. VALUE is a
number, or a word (quotes optional). Numbers compare as numbers; words only with == and !=.
A trial without the KEY never matches.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from typing import Any

from optuna.trial import FrozenTrial

from exptrack import study_store
from exptrack.errors import UserError

OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
COND = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(==|!=|<=|>=|<|>)\s*(\S.*?)\s*$")
MAX_CONDITIONS = 16  # a filter a user types; more is a mistake


def parse(text: str) -> Callable[[FrozenTrial], bool]:
    """A test of one trial, or a one-line UserError saying what the grammar is."""
    parts = re.split(r"\s+and\s+", text.strip())
    if len(parts) > MAX_CONDITIONS or not text.strip():
        raise UserError(
            f"--where {text!r}: give 1 to {MAX_CONDITIONS} conditions KEY OP VALUE joined by 'and'"
        )
    tests = [_condition(part, text) for part in parts]
    return lambda trial: all(test(trial) for test in tests)


def _condition(part: str, text: str) -> Callable[[FrozenTrial], bool]:
    match = COND.match(part)
    if not match:
        raise UserError(
            f"--where {text!r}: {part.strip()!r} is not KEY OP VALUE (OP: == != < <= > >=), e.g. --where 'epochs==2'"
        )
    key, op, raw = match.groups()
    wanted = _value(raw)
    if isinstance(wanted, str) and op not in ("==", "!="):
        raise UserError(f"--where {text!r}: {op} compares numbers, and {raw!r} is not one")
    return lambda trial: _holds(lookup(trial, key), OPS[op], wanted)


def _value(raw: str) -> float | str:
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1]
    try:
        return float(raw)
    except ValueError:
        return {"true": "True", "false": "False"}.get(raw.lower(), raw)


def _holds(found: Any, op: Callable[[Any, Any], bool], wanted: float | str) -> bool:
    if found is None:
        return False
    if isinstance(wanted, float):
        if isinstance(found, bool) or not isinstance(found, int | float) or math.isnan(found):
            return False
        return bool(op(float(found), wanted))
    return bool(op(str(found), wanted))


def lookup(trial: FrozenTrial, key: str) -> Any:
    """The trial's `key`: number, state, value, a searched parameter, or a config field (a dotted
    key walks into nested config mappings); None when it has none."""
    if key == "number":
        return trial.number
    if key == "state":
        return study_store.state_name(trial)
    if key == "value":
        return trial.value if trial.values and len(trial.values) == 1 else None
    if key in trial.params:
        return trial.params[key]
    found: Any = study_store.record(trial).config
    for step in key.split("."):
        if not isinstance(found, dict) or step not in found:
            return None
        found = found[step]
    return found
