"""What one searched parameter is (`Param`), the kinds a spec names (`Kind`), the config fields a
space treats apart, and what sampling needs of an Optuna trial (`Suggester`): the vocabulary that
`space` parses files into and samples from, and that warm starts read."""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from typing import Any, Protocol

from exptrack import config as cfg


class Kind(enum.Enum):
    """What a parameter's spec names it: a range of floats, of whole numbers, or a choice."""

    FLOAT = "float"
    INT = "int"
    CHOICE = "choice"


KINDS = tuple(kind.value for kind in Kind)
OPTIONS = ("log", "step")
# The config fields a space treats apart, declared once: a loss's branches hold its own
# parameters (which go to `loss_params`), a backbone's branches may hold its own freeze_depth
# range, and freeze_depth's range may end at `max`, the backbone's stage count.
LOSS, BACKBONE, FREEZE_DEPTH = "loss", "backbone", "freeze_depth"
LOSS_PARAMS = f"{LOSS}{cfg.PARAMS_SUFFIX}"
STAGES = "max"


class Suggester(Protocol):
    """The part of `optuna.Trial` sampling needs (FixedTrial works too, to rebuild a config)."""

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...
    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...
    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


@dataclasses.dataclass(frozen=True)
class Param:
    """One searched value. `branches` is set for a conditional choice (option -> its params)."""

    name: str  # the Optuna name, dotted under a branch
    field: str  # the config field (or loss_params key) it sets
    kind: Kind
    low: float = 0  # a range's ends (an int range's are ints); unused by a choice
    high: float = 0  # math.inf: `max`, the backbone's stage count (freeze_depth only)
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    branches: Mapping[str, tuple[Param, ...]] = dataclasses.field(default_factory=dict)
    own: bool = False  # a custom objective's own parameter: its value goes to `params`

    @property
    def to_stage_count(self) -> bool:
        """`int: [low, max]` on freeze_depth: the high end is the trial's backbone's stage count."""
        return math.isinf(self.high)


def is_loss_param(name: str) -> bool:
    """`loss.focal.gamma`: a parameter of a loss branch, which goes to `loss_params`."""
    return "." in name and name.split(".")[0] == LOSS


def named_params(params: Mapping[str, str], sampled: Mapping[str, Any]) -> dict[str, str]:
    """`SearchSpace.named_params`, for a trial whose space is not at hand (a run rebuilt from its
    Optuna record: the names come from the trial's own params)."""
    named = dict(params)
    for name in sampled:
        head, _, field = name.rpartition(".")
        if head and not is_loss_param(name) and field in named:
            named[name] = named.pop(field)
    return named
