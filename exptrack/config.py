"""`TrialConfig`: the one typed, frozen description of a training run, and its YAML round trip
(reading YAML safely is `yaml_files`'; checking one value's type, bounds and text, `config_values`').

The search builds one per trial, `training.fit.fit` takes only this, `exp export` writes it and
`exp train` reads it back: same fields, no second format.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from exptrack import records
from exptrack.config_values import Range, check_text, coerce, ranged, sub_key
from exptrack.errors import UserError, did_you_mean, shown
from exptrack.yaml_files import load_yaml, read_text

PARAMS_SUFFIX = "_params"  # `loss_params` holds the parameters of the chosen `loss`
OWN_PARAMS = "params"  # a custom objective's own parameters (`TrialConfig.params`)
# Config fields that take one of a few names: checked once, when a config is built.
NAMED_VALUES = {
    "device": ("auto", "cpu", "cuda"),
    "precision": ("auto", "fp32", "bf16"),  # auto: bf16 on CUDA, fp32 on CPU
    "optimizer": ("adamw", "sgd"),
    "batching": ("auto", "device", "loader"),
}


# Fields that say how a trial runs, not what it measures: a study continues across them (resumed
# on another device, with other loader workers, compiled). Every other field changes what a trial
# means (epochs, subset, image_size, dataset, backbone, weights, precision, ...).
RUN_ONLY_FIELDS = ("device", "batching", "num_workers", "compile", "download", "fused_optimizer")

# Fields added after stores already held configs, with the value that means what a config had
# before them: a trial or study recorded without `test_fraction` trained with no test split.
# A fresh config takes the field's default instead (`as_recorded` is only for stored records).
LEGACY_VALUES: dict[str, Any] = {"test_fraction": 0.0}


# Upper bounds on fields that can exhaust a machine (each says why its figure); docs/failures.md too.
MAX_IMAGE_SIZE = 1024
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 65_536
MAX_NUM_WORKERS = 64
MAX_SEED = 2**32 - 1


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
        raise UserError(f"unknown {key} {shown(value)}{did_you_mean(value, allowed)}; use {', '.join(allowed)}")
    bounds = field_range(key)
    if bounds is not None and not bounds.contains(value):
        raise UserError(f"{key} must be {bounds.broken(value)}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class TrialConfig:
    """Everything that decides what one training run does."""

    backbone: str = "resnet18"
    weights: str = "imagenet"  # imagenet | none | path/to/state_dict.pt | runs:/... | models:/...
    dataset: str = "digits"  # NAME[:PATH], e.g. digits, synthetic, imagefolder:/data/pets
    download: bool = False  # torchvision sets: fetch into the root when missing (needs network)
    # side of the square images the backbone sees; 0 = the weights' crop size. At most 1024: above
    # the largest torchvision weights' crop (600 px, EfficientNet-B7); digits alone at 1024 px are
    # 1,797 x 3 x 1024 x 1024 bytes = 5.7 GB of uint8, and 99,999,999 overflowed torch's resize
    image_size: int = ranged(32, ">= 0", f"<= {MAX_IMAGE_SIZE}")
    subset: int = ranged(0, ">= 0")  # use at most this many train (and val) samples; 0 = all of them
    val_fraction: float = ranged(0.2, "> 0", "< 1")  # held-out share when the dataset has no validation split
    # share of the dataset held out as a test split the search never sees (scored by exp train and
    # exp confirm only); 0 = no test split, the split studies made before it had. 0.2 of digits'
    # 1,797 images is 359, as many as the validation split: its binomial error is the same, +-0.01
    # at 0.96. A dataset with its own test split (torchvision's sets) uses that for any value > 0.
    test_fraction: float = ranged(0.2, ">= 0", "< 1")
    # at most 10,000: four weeks of 4-minute epochs; 1e9 is a typo, not a plan
    epochs: int = ranged(3, ">= 1", f"<= {MAX_EPOCHS}")
    lr: float = ranged(1e-3, "> 0")
    # at most 65,536 (2^16): twice the largest published ImageNet batches (32k with LARS)
    batch_size: int = ranged(64, ">= 1", f"<= {MAX_BATCH_SIZE}")
    weight_decay: float = ranged(1e-4, ">= 0")
    # how many leading backbone stages stay frozen (0 = train everything; at most the backbone's count)
    freeze_depth: int = ranged(0, ">= 0")
    loss: str = "cross_entropy"
    loss_params: dict[str, float] = dataclasses.field(default_factory=dict)  # checked by the loss's builder
    optimizer: str = "adamw"
    seed: int = ranged(0, ">= 0", f"<= {MAX_SEED}")  # 2^32 - 1: the largest seed NumPy takes
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16
    augment: bool = False  # random crop (padding size/8) + horizontal flip of training batches
    batching: str = "auto"  # auto | device (whole set on the device) | loader (DataLoader workers)
    # DataLoader worker processes when batching is loader: at most 64, one process each (100,000
    # forked until the machine ran out of processes)
    num_workers: int = ranged(2, ">= 0", f"<= {MAX_NUM_WORKERS}")
    compile: bool = False  # torch.compile the model (pays off only for long trials on CUDA)
    # frozen stages computed once per process and key, where exact (training.feature_cache); false:
    # every epoch recomputes them from the images (the plain path)
    feature_cache: bool = True
    # AdamW through torch's fused kernel where it has one (CPU, CUDA); false: torch's default
    # (a per-tensor loop on CPU), the same update up to float rounding (training.optimizers)
    fused_optimizer: bool = True
    # a study's own training function's parameters (`Study(objective=...)`): the search space's
    # keys that are not fields above, by their own names (`hidden: 64`); the built-in uses none
    params: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        # Private copies, so the frozen config cannot change through a caller's dict.
        object.__setattr__(self, "loss_params", dict(sorted(self.loss_params.items())))
        object.__setattr__(self, OWN_PARAMS, dict(sorted(self.params.items())))
        for field in dataclasses.fields(self):
            check_value(field.name, getattr(self, field.name))
        if self.val_fraction + self.test_fraction >= 1:  # nothing would be left to train on
            raise UserError(
                f"val_fraction + test_fraction must be below 1 (the rest trains), got "
                f"{self.val_fraction:g} + {self.test_fraction:g}; lower one of them"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat_params(self) -> dict[str, str]:
        """Every field as a string param; a loss parameter under the name the search space gives
        it (`loss.focal.gamma`), so Optuna, MLflow and `exp trials` call it the same."""
        flat = {key: str(v) for key, v in self.to_dict().items() if key not in ("loss_params", OWN_PARAMS)}
        flat.update({loss_param_name(self.loss, k): str(v) for k, v in self.loss_params.items()})
        flat.update({key: str(value) for key, value in self.params.items()})  # `hidden`, as searched
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
    unknown = sorted(set(values) - set(types), key=repr)  # a YAML key may be a number: never sorted with text
    if unknown:
        raise UserError(f"{source}: unknown config key {shown(unknown[0])}{did_you_mean(unknown[0], types)}; valid keys are {', '.join(types)}")
    typed = {key: coerce(key, value, types[key], source) for key, value in values.items()}
    try:
        return TrialConfig(**typed)
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from exc


def check_field(key: str, value: Any, source: str) -> None:
    """One value for `key` as a config would take it (type, named values, range), checked before
    any config exists: e.g. each value a search space can produce."""
    typed = coerce(key, value, field_types()[key], source)
    try:
        check_value(key, typed)
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from exc



def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn `--set key=value` strings into typed values; `loss_params.gamma=2` sets one entry, and
    so does its search-space name `loss.focal.gamma=2`."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--set {shown(pair)}: expected key=value, e.g. --set epochs=2")
        where = f"--set {shown(key)}"
        value = load_yaml(check_text(raw, where), where) if raw.strip() else ""
        if key.startswith("loss.") and key.count(".") == 2:  # loss.focal.gamma -> loss_params.gamma
            key = f"loss{PARAMS_SUFFIX}.{key.rsplit('.', 1)[1]}"
        head, dot, sub = key.partition(".")
        if dot:
            if head not in field_types() or typing.get_origin(field_types()[head]) is not dict:
                raise UserError(f"--set {shown(pair)}: {shown(head)} is not a config key with sub-keys")
            overrides.setdefault(head, {})[sub_key(head, sub, "--set")] = value
        else:
            overrides[key] = value
    return overrides


def as_recorded(values: Mapping[str, Any]) -> dict[str, Any]:
    """A config (or a study's fixed part) as a store recorded it, with the fields it predates set
    to what it ran with (`LEGACY_VALUES`), not today's defaults: an old trial keeps its split."""
    return {**LEGACY_VALUES, **values}


def meaning(values: Mapping[str, Any], searched: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """What a fixed config means for a trial: every field (defaults filled in, so an unset epochs
    equals epochs=3), as JSON would store it, less RUN_ONLY_FIELDS and the `searched` keys (a
    searched loss carries its loss_params)."""
    full = json.loads(json.dumps({**TrialConfig().to_dict(), **values}, default=str))
    aside = {*RUN_ONLY_FIELDS, *searched, *(["loss_params"] if "loss" in searched else [])}
    own = {k: v for k, v in (full.get(OWN_PARAMS) or {}).items() if k not in searched}
    full[OWN_PARAMS] = own  # a custom objective's fixed own params, its searched ones aside
    if not own:  # a study stored before `params` existed means the same
        aside.add(OWN_PARAMS)
    return {key: value for key, value in full.items() if key not in aside}


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
    values = config.to_dict()
    if not values[OWN_PARAMS]:  # the built-in objective's configs read as they always did
        del values[OWN_PARAMS]
    body = yaml.safe_dump(values, sort_keys=False)
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
    data = load_yaml(read_text(path), str(path)) or {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    provenance = data.pop(records.PROVENANCE_BLOCK, None) or {}
    if not isinstance(provenance, dict):
        raise UserError(f"{path}: {records.PROVENANCE_BLOCK}: must be a mapping, as exp export writes it")
    return data, dict(provenance)
