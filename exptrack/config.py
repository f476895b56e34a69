"""`TrialConfig`: the one typed, frozen description of a training run, and its YAML round trip.

The search builds one per trial, `train.fit` takes only this, `exp export` writes it and
`exp train` reads it back: same fields, no second format.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from exptrack import records
from exptrack.errors import UserError

PARAMS_SUFFIX = "_params"  # `loss_params` holds the parameters of the chosen `loss`
# Config fields that take one of a few names: checked once, when a config is built.
NAMED_VALUES = {
    "device": ("auto", "cpu", "cuda"),
    "precision": ("auto", "fp32", "bf16"),  # auto: bf16 on CUDA, fp32 on CPU
    "optimizer": ("adamw", "sgd"),
    "batching": ("auto", "device", "loader"),
}


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

    def __str__(self) -> str:
        return " and ".join(f"{_BOUNDS[op][0]} {limit:g}" for op, limit in self.bounds)


def ranged(default: Any, *bounds: str) -> Any:
    """A numeric field with its allowed range beside it: `epochs: int = ranged(3, ">= 1")`."""
    parsed = tuple((op, float(limit)) for op, limit in (bound.split() for bound in bounds))
    return dataclasses.field(default=default, metadata={"range": Range(parsed)})


def field_range(key: str) -> Range | None:
    return _ranges().get(key)


@functools.cache  # the fields never change: read once, not for every value a space can produce
def _ranges() -> dict[str, Range]:
    return {f.name: f.metadata["range"] for f in dataclasses.fields(TrialConfig) if "range" in f.metadata}


def check_value(key: str, value: Any) -> None:
    """A field's value against its named values or its range: the one check every config, `--set`
    value and search-space value goes through."""
    allowed = NAMED_VALUES.get(key)
    if allowed is not None and value not in allowed:
        raise UserError(f"unknown {key} {value!r}; use {', '.join(allowed)}")
    bounds = field_range(key)
    if bounds is not None and not bounds.contains(value):
        raise UserError(f"{key} must be {bounds}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class TrialConfig:
    """Everything that decides what one training run does."""

    backbone: str = "resnet18"
    weights: str = "imagenet"  # imagenet | none | path/to/state_dict.pt | runs:/... | models:/...
    dataset: str = "digits"  # NAME[:PATH], e.g. digits, synthetic, imagefolder:/data/pets
    download: bool = False  # torchvision sets: fetch into the root when missing (needs network)
    # side of the square images the backbone sees; 0 = the weights' crop size
    image_size: int = ranged(32, ">= 0")
    subset: int = ranged(0, ">= 0")  # use at most this many train (and val) samples; 0 = all of them
    val_fraction: float = ranged(0.2, "> 0", "< 1")  # held-out share when the dataset has no validation split
    epochs: int = ranged(3, ">= 1")
    lr: float = ranged(1e-3, "> 0")
    batch_size: int = ranged(64, ">= 1")
    weight_decay: float = ranged(1e-4, ">= 0")
    # how many leading backbone stages stay frozen (0 = train everything; at most the backbone's count)
    freeze_depth: int = ranged(0, ">= 0")
    loss: str = "cross_entropy"
    loss_params: dict[str, float] = dataclasses.field(default_factory=dict)  # checked by the loss's builder
    optimizer: str = "adamw"
    seed: int = ranged(0, ">= 0")
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16
    augment: bool = False  # random crop (padding size/8) + horizontal flip of training batches
    batching: str = "auto"  # auto | device (whole set on the device) | loader (DataLoader workers)
    num_workers: int = ranged(2, ">= 0")  # DataLoader workers when batching is loader
    compile: bool = False  # torch.compile the model (pays off only for long trials on CUDA)

    def __post_init__(self) -> None:
        # A private copy, so the frozen config cannot change through a caller's dict.
        object.__setattr__(self, "loss_params", dict(sorted(self.loss_params.items())))
        for field in dataclasses.fields(self):
            check_value(field.name, getattr(self, field.name))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat_params(self) -> dict[str, str]:
        """Every field as a string param; a loss parameter under the name the search space gives
        it (`loss.focal.gamma`), so Optuna, MLflow and `exp trials` call it the same."""
        flat = {key: str(value) for key, value in self.to_dict().items() if key != "loss_params"}
        flat.update({loss_param_name(self.loss, k): str(v) for k, v in self.loss_params.items()})
        return flat

    def replace(self, **changes: Any) -> TrialConfig:
        return from_dict({**self.to_dict(), **changes})


def loss_param_name(loss: str, key: str) -> str:
    """`loss.focal.gamma`: a loss parameter's one name (Optuna's, MLflow's, `exp trials`' column)."""
    return f"loss.{loss}.{key}"


@functools.cache  # typing.get_type_hints takes ~160 us; callers only read the mapping
def field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrialConfig)


def from_dict(values: Mapping[str, Any], *, source: str = "config") -> TrialConfig:
    """Build a config from plain values, checking names and types with messages a user can act on."""
    types = field_types()
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise UserError(f"{source}: unknown config key {unknown[0]!r}; valid keys are {', '.join(types)}")
    typed = {key: _coerce(key, value, types[key], source) for key, value in values.items()}
    try:
        return TrialConfig(**typed)
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from exc


def check_field(key: str, value: Any, source: str) -> None:
    """One value for `key` as a config would take it (type, named values, range), checked before
    any config exists: e.g. each value a search space can produce."""
    typed = _coerce(key, value, field_types()[key], source)
    try:
        check_value(key, typed)
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from exc


def _coerce(key: str, value: Any, annotation: Any, source: str) -> Any:
    origin = typing.get_origin(annotation)
    if annotation in (int, float) and isinstance(value, str):
        value = parse_number(value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise UserError(f"{source}: {key} must be a mapping, got {value!r}")
        return {str(k): _coerce(f"{key}.{k}", v, float, source) for k, v in value.items()}
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise UserError(f"{source}: {key} must be a finite number, got {value!r}")
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    name = getattr(annotation, "__name__", str(annotation))
    raise UserError(f"{source}: {key} must be of type {name}, got {value!r}")


def parse_number(value: Any) -> Any:
    """YAML 1.1 reads `1e-3` (no dot) as a string; users write it, so take it as a float. Anything
    that is not such a string comes back unchanged, for the caller's own type check."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn `--set key=value` strings into typed values; `loss_params.gamma=2` sets one entry, and
    so does its search-space name `loss.focal.gamma=2`."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--set {pair!r}: expected key=value, e.g. --set epochs=2")
        value = yaml.safe_load(raw) if raw.strip() else ""
        if key.startswith("loss.") and key.count(".") == 2:  # loss.focal.gamma -> loss_params.gamma
            key = f"loss{PARAMS_SUFFIX}.{key.rsplit('.', 1)[1]}"
        head, dot, sub = key.partition(".")
        if dot:
            if head not in field_types() or typing.get_origin(field_types()[head]) is not dict:
                raise UserError(f"--set {pair!r}: {head!r} is not a config key with sub-keys")
            overrides.setdefault(head, {})[sub] = value
        else:
            overrides[key] = value
    return overrides


def apply_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Merge overrides into base values; dict fields merge key by key."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def dump_yaml(config: TrialConfig, provenance: Mapping[str, Any] | None = None) -> str:
    """The config as YAML a user can read, edit and give to `exp train`."""
    header = "# Reproduce with: exp train THIS_FILE.yaml\n"
    body = yaml.safe_dump(config.to_dict(), sort_keys=False)
    if provenance:
        body += yaml.safe_dump({records.PROVENANCE_BLOCK: dict(provenance)}, sort_keys=False)
    return header + body


def read_yaml(path: Path) -> tuple[TrialConfig, dict[str, Any]]:
    """Read a config file written by `exp export` (or by hand); returns (config, provenance)."""
    if not path.is_file():
        raise UserError(f"config file {path} does not exist; pass a YAML file from `exp export`")
    data, provenance = read_mapping(path)
    return from_dict(data, source=str(path)), provenance


def read_mapping(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A config file's keys as written (not yet checked: a warm start takes only the searched
    ones), and its `provenance:` block; a file that is not a YAML mapping is one line."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({exc.__class__.__name__}); fix the file") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    provenance = data.pop(records.PROVENANCE_BLOCK, None) or {}
    return data, dict(provenance)
