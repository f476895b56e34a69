"""Backbones: torchvision models by name, their weight sources, head replacement and freezing by stage.

A *stage* is one step of a backbone's feature pyramid, so `freeze_depth` means the same idea on
every family: stage 0 is the stem (the first layers that see pixels), stage 1 the blocks at the
stem's resolution, and each later stage starts at a block that halves the resolution. ResNets have
5 stages (stem = conv1+bn1, then layer1..layer4); ConvNeXt 5; EfficientNet-B0 and MobileNetV3 6;
ViT has the patch embedding then one stage per encoder block (13 for ViT-B/16). The new head is
never frozen.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm

from exptrack.errors import UserError

Stage = list[nn.Module | nn.Parameter]
StageFn = Callable[[nn.Module], list[Stage]]


@dataclasses.dataclass(frozen=True)
class Backbone:
    """How to build and split one torchvision architecture."""

    name: str
    stages: StageFn
    min_size: int = 1  # smallest input side the architecture accepts


BACKBONES: dict[str, Backbone] = {}


def register_backbone(name: str, stages: StageFn, min_size: int = 1) -> None:
    """Add a torchvision architecture under its `get_model` name; duplicates are refused."""
    if name in BACKBONES:
        raise ValueError(f"a backbone named {name!r} is already registered")
    BACKBONES[name] = Backbone(name, stages, min_size)


def backbone(name: str) -> Backbone:
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}; choose one of: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name]


def stage_count(name: str) -> int:
    """Number of stages, without downloading weights (the search space's `max` for freeze_depth)."""
    return len(backbone(name).stages(_architecture(name)))


def _architecture(name: str) -> nn.Module:
    return tvm.get_model(name, weights=None)


# --- stage splitters ------------------------------------------------------------------------


def _downsamples(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) and max(m.stride) > 1 for m in module.modules())


def _split_by_resolution(children: list[nn.Module]) -> list[Stage]:
    """Stem alone, then blocks grouped so that each new group starts at a downsampling block."""
    stages: list[Stage] = [[children[0]], []]
    for child in children[1:]:
        if _downsamples(child) and stages[-1]:
            stages.append([])
        stages[-1].append(child)
    return [s for s in stages if s]


def _resnet_stages(model: nn.Module) -> list[Stage]:
    return [
        [model.conv1, model.bn1],
        [model.layer1],
        [model.layer2],
        [model.layer3],
        [model.layer4],
    ]


def _features_stages(model: nn.Module) -> list[Stage]:
    return _split_by_resolution(list(model.features.children()))


def _vit_stages(model: nn.Module) -> list[Stage]:
    embed: Stage = [model.conv_proj, model.class_token, model.encoder.pos_embedding]
    blocks: list[Stage] = [[block] for block in model.encoder.layers]
    blocks[-1].append(model.encoder.ln)
    return [embed, *blocks]


for _name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
    register_backbone(_name, _resnet_stages)
for _name in ("mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny"):
    register_backbone(_name, _features_stages, min_size=32)
register_backbone("vit_b_16", _vit_stages, min_size=224)


# --- building --------------------------------------------------------------------------------


@dataclasses.dataclass
class BuiltModel:
    model: nn.Module
    weights_source: str  # what the backbone actually started from, for the run's tags
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    frozen_modules: list[nn.Module]


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_unavailable_weights: set[str] = set()  # weights that failed once in this process: don't retry


def build_model(
    name: str,
    weights: str,
    num_classes: int,
    freeze_depth: int,
    warn: Callable[[str], None] = print,
) -> BuiltModel:
    """The backbone with its weights loaded, a new `num_classes` head, and the first stages frozen."""
    spec = backbone(name)
    model = _architecture(name)
    source = _load_weights(model, name, weights, warn)
    _replace_head(model, num_classes)
    stages = spec.stages(model)
    if not 0 <= freeze_depth <= len(stages):
        raise UserError(f"freeze_depth={freeze_depth} is out of range for {name}: use 0..{len(stages)}")
    frozen = freeze(stages[:freeze_depth])
    return BuiltModel(model, source, IMAGENET_MEAN, IMAGENET_STD, frozen)


def _load_weights(model: nn.Module, name: str, weights: str, warn: Callable[[str], None]) -> str:
    if weights == "none":
        return "none"
    if weights == "imagenet":
        return _load_imagenet(model, name, warn)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise UserError(
            f"weights={weights!r}: no such file; use imagenet, none, a state-dict file or an MLflow URI"
        )
    load_state_dict_file(model, path)
    return str(path)


def _load_imagenet(model: nn.Module, name: str, warn: Callable[[str], None]) -> str:
    weights_enum = tvm.get_model_weights(name).DEFAULT
    if name in _unavailable_weights:
        return "random (imagenet unavailable)"
    try:  # torchvision caches under $TORCH_HOME/hub/checkpoints and downloads only when missing
        state = weights_enum.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError) as exc:
        _unavailable_weights.add(name)
        warn(f"ImageNet weights for {name} unavailable ({_short(exc)}); training from random init")
        return "random (imagenet unavailable)"
    model.load_state_dict(state)
    return f"imagenet:{weights_enum}"


def load_state_dict_file(model: nn.Module, path: Path) -> None:
    """Load a plain state dict saved with torch.save; a head of another size is left to replace."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"weights file {path} could not be read ({_short(exc)}); pass a state dict") from exc
    if not isinstance(state, dict):
        raise UserError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    own = model.state_dict()
    state = {
        k: v for k, v in state.items() if not (k in own and own[k].shape != v.shape and _is_head(model, k))
    }
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not _is_head(model, k)]
    if missing or unexpected:
        first = (missing or unexpected)[0]
        raise UserError(
            f"weights file {path} does not fit this backbone ({len(missing)} missing, "
            f"{len(unexpected)} unexpected keys, e.g. {first!r}); pass weights of the same architecture"
        )


def _head_name(model: nn.Module) -> str:
    """The last Linear layer is the classifier on every registered family."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]


def _is_head(model: nn.Module, key: str) -> bool:
    return key.startswith(_head_name(model) + ".")


def _replace_head(model: nn.Module, num_classes: int) -> None:
    head_path = _head_name(model)
    parent_path, _, attr = head_path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    old = getattr(parent, attr)
    if old.out_features != num_classes:
        setattr(parent, attr, nn.Linear(old.in_features, num_classes))


def freeze(stages: list[Stage]) -> list[nn.Module]:
    """Stop gradients through the given stages; returns their modules so training can keep their
    batch-norm statistics fixed too (a frozen stage should not drift through its running stats)."""
    modules: list[nn.Module] = []
    for part in (p for stage in stages for p in stage):
        if isinstance(part, nn.Parameter):
            part.requires_grad_(False)
        else:
            part.requires_grad_(False)
            modules.append(part)
    return modules


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, frozen) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return trainable, frozen


def _short(exc: BaseException) -> str:
    return (str(exc).splitlines() or [exc.__class__.__name__])[0][:120]
