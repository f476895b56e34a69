"""Backbones: torchvision models by name, their stages, head replacement and freezing by stage.

A *stage* is one step of a backbone's feature pyramid, so `freeze_depth` means the same idea on
every family: stage 0 is the stem (the first layers that see pixels), stage 1 the blocks at the
stem's resolution, and each later stage starts at a block that halves the resolution. The new
head is never frozen. `freeze_depth: {int: [0, max]}` in a search space resolves `max` here.

| family | stages | what they are |
|---|---|---|
| resnet18/34/50/101/152 | 5 | conv1+bn1 (stem), layer1, layer2, layer3, layer4 |
| convnext_tiny | 5 | stem, stage 1, then downsample + stage for 2, 3, 4 |
| mobilenet_v3_small/large | 5 / 6 | first conv, then `features` blocks grouped where stride 2 starts |
| efficientnet_b0 | 6 | first conv, then MBConv blocks grouped where stride 2 starts |
| vit_b_16 | 5 | patch embedding + class token + position embedding, then 4 groups of 3 encoder blocks |

ViT has no pyramid: its 12 blocks are grouped in 4 so that depth 1..5 freezes a similar share of
the network as on a ResNet. ViT accepts any image size that is a multiple of 16: the model is
built for that size and ImageNet position embeddings are interpolated to it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import models as tvm

from exptrack import registry
from exptrack.errors import UserError, did_you_mean
from exptrack.training import weights as weight_sources

Stage = list[nn.Module | nn.Parameter]
StageFn = Callable[[nn.Module], list[Stage]]
# The model's forward cut at its stage bounds: one runner per stage and the head after the last,
# so that head(runner_n(...runner_1(x))) == model(x). The frozen-feature cache runs the first d
# runners once and trains the rest (`split_at`).
Runners = tuple[list[nn.Module], nn.Module]
RunnerFn = Callable[[nn.Module], Runners]


@dataclasses.dataclass(frozen=True)
class Backbone:
    """How to build and split one torchvision architecture."""

    name: str
    stages: StageFn
    min_size: int = 1  # smallest input side the architecture accepts
    runners: RunnerFn | None = None  # its forward cut by stage; None: no frozen-feature cache


BACKBONES: dict[str, Backbone] = {}


def register_backbone(name: str, stages: StageFn, min_size: int = 1, runners: RunnerFn | None = None) -> None:
    """Add a torchvision architecture under its `get_model` name; duplicates are refused. Without
    `runners` its trials train on the plain path (no frozen-feature cache)."""
    registry.add(BACKBONES, "backbone", name, Backbone(name, stages, min_size, runners))


def backbone(name: str) -> Backbone:
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}{did_you_mean(name, BACKBONES)}; choose one of: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name]


@functools.cache
def stage_count(name: str) -> int:
    """Number of stages, without downloading weights (the search space's `max` for freeze_depth)."""
    return len(backbone(name).stages(_architecture(name, 0)))


def _architecture(name: str, image_size: int) -> nn.Module:
    spec = backbone(name)
    if image_size and image_size < spec.min_size:
        raise UserError(f"image_size={image_size} is too small for {name}: use {spec.min_size} or more")
    if name.startswith("vit_"):
        patch = int(name.rsplit("_", 1)[1])
        if image_size % patch:
            raise UserError(f"image_size={image_size} does not suit {name}: use a multiple of {patch}")
        return tvm.get_model(name, weights=None, image_size=image_size or 224)
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


def _resnet_stages(model: Any) -> list[Stage]:  # torchvision's attributes are untyped
    return [
        [model.conv1, model.bn1],
        [model.layer1],
        [model.layer2],
        [model.layer3],
        [model.layer4],
    ]


def _features_stages(model: Any) -> list[Stage]:  # torchvision's attributes are untyped
    return _split_by_resolution(list(model.features.children()))


def _vit_stages(model: Any) -> list[Stage]:  # torchvision's attributes are untyped
    embed: Stage = [model.conv_proj, model.class_token, model.encoder.pos_embedding]
    blocks = list(model.encoder.layers)
    per = len(blocks) // 4
    groups: list[Stage] = [list(blocks[i * per : (i + 1) * per]) for i in range(4)]
    groups[-1] += [*blocks[4 * per :], model.encoder.ln]
    return [embed, *groups]


# --- forward runners (the same cuts as the stages, following torchvision's forward) ----------


def _resnet_runners(model: Any) -> Runners:  # torchvision's attributes are untyped
    stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
    head = nn.Sequential(model.avgpool, nn.Flatten(1), model.fc)
    return [stem, model.layer1, model.layer2, model.layer3, model.layer4], head


def _features_runners(model: Any) -> Runners:  # torchvision's attributes are untyped
    groups = _split_by_resolution(list(model.features.children()))
    runners: list[nn.Module] = [nn.Sequential(*group) for group in groups]  # type: ignore[arg-type]
    # ConvNeXt's classifier starts with a LayerNorm2d and flattens itself; the others flatten first
    flatten = [] if isinstance(model, tvm.ConvNeXt) else [nn.Flatten(1)]
    return runners, nn.Sequential(model.avgpool, *flatten, model.classifier)


class _VitEmbed(nn.Module):
    """ViT's stage 0 as a module: patches, class token, position embedding (torchvision's
    `VisionTransformer.forward` up to the encoder's blocks)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.conv_proj, self.dropout = model.conv_proj, model.encoder.dropout
        self.class_token, self.pos_embedding = model.class_token, model.encoder.pos_embedding
        self._process_input = model._process_input  # a bound method: the model is not a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._process_input(x)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.dropout(x + self.pos_embedding)


class _ClassToken(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0]


def _vit_runners(model: Any) -> Runners:  # torchvision's attributes are untyped
    groups = [nn.Sequential(*group) for group in _vit_stages(model)[1:]]  # type: ignore[arg-type]
    return [_VitEmbed(model), *groups], nn.Sequential(_ClassToken(), model.heads)


def split_at(name: str, model: nn.Module, depth: int) -> tuple[list[nn.Module], nn.Module] | None:
    """(the first `depth` stage runners, the rest of the forward as one module) for a model of
    backbone `name`, sharing its modules; None where the backbone has no runners."""
    runners = backbone(name).runners
    if runners is None:
        return None
    stages, head = runners(model)
    return stages[:depth], nn.Sequential(*stages[depth:], head)


for _name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
    register_backbone(_name, _resnet_stages, runners=_resnet_runners)
for _name in ("mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny"):
    register_backbone(_name, _features_stages, min_size=32, runners=_features_runners)
register_backbone("vit_b_16", _vit_stages, min_size=16, runners=_vit_runners)


# --- building --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """What the weights' own `transforms()` do: shorter side to `resize`, centre crop `crop`,
    normalise by mean/std. Read from torchvision's weights metadata (no download)."""

    crop: int
    resize: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def geometry(self, image_size: int) -> tuple[int, int]:
        """(size, resize) for a config's image_size (0 = the weights' crop), keeping the weights'
        resize/crop ratio (256/224 for most) so photos are cropped as at pretraining."""
        size = image_size or self.crop
        return size, max(size, round(size * self.resize / self.crop))


@functools.cache
def preprocessing(name: str) -> Preprocess:
    transforms = tvm.get_model_weights(backbone(name).name).DEFAULT.transforms()
    return Preprocess(
        transforms.crop_size[0], transforms.resize_size[0], tuple(transforms.mean), tuple(transforms.std)
    )


@dataclasses.dataclass
class BuiltModel:
    model: nn.Module
    weights_source: str  # what the backbone actually started from, for the run's tags
    mean: tuple[float, ...]
    std: tuple[float, ...]
    frozen_modules: list[nn.Module]


def build_model(
    name: str,
    weights: str,
    num_classes: int,
    freeze_depth: int,
    warn: Callable[[str], None] = print,
    image_size: int = 0,
) -> BuiltModel:
    """The backbone with its weights loaded, a new `num_classes` head, and the first stages frozen.
    ImageNet weights carry the 1000-class head, so the head is replaced after loading them; a
    state dict from a file or MLflow usually carries the new head already, so it is replaced first."""
    spec = backbone(name)
    model, source = _started(name, weights, num_classes, warn, image_size)
    stages = spec.stages(model)
    if not 0 <= freeze_depth <= len(stages):
        raise UserError(f"freeze_depth={freeze_depth} is out of range for {name}: use 0..{len(stages)}")
    frozen = freeze(stages[:freeze_depth])
    prep = preprocessing(name)
    return BuiltModel(model, source, prep.mean, prep.std, frozen)


def _loaded(
    name: str, weights: str, num_classes: int, warn: Callable[[str], None], image_size: int
) -> tuple[nn.Module, str]:
    """A new model of `name` with its weights and a `num_classes` head, before any freezing."""
    model = _architecture(name, image_size)
    if weights == "imagenet":
        source = weight_sources.load_imagenet(model, name, warn)
        replace_head(model, num_classes)
    else:
        replace_head(model, num_classes)
        source = weight_sources.load(model, weights, head_name(model))
    return model, source


@dataclasses.dataclass
class _Pristine:
    """A model as `_loaded` made it, and the global RNG state before and after: its random init
    (and a new head's) is a function of the state before, so the same state in gives the same
    weights and the same state out, exactly. `spare`: a finished trial's model of the same key,
    handed back (`recycle`), that the next copy overwrites in place instead of allocating one."""

    key: tuple[object, ...]
    rng_before: torch.Tensor
    model: nn.Module
    source: str
    rng_after: torch.Tensor
    spare: nn.Module | None = None


_PRISTINE: list[_Pristine] = []  # the last model built: a study's trials share it (one entry)
# the models handed out for a pristine key (weakly: a model nobody holds is freed as before)
_ISSUED: weakref.WeakKeyDictionary[nn.Module, tuple[object, ...]] = weakref.WeakKeyDictionary()


def _started(
    name: str, weights: str, num_classes: int, warn: Callable[[str], None], image_size: int
) -> tuple[nn.Module, str]:
    """`_loaded`, or a copy of the last model built for the same key from the same RNG state.
    Building resnet18 (torchvision's init of 11.2M parameters) took 0.2-1.2 s a trial on 2 shared
    cores, a copy 20-60 ms (benchmarks/README.md, "levers"); trials of a study share backbone,
    weights, classes and seed, so every trial after the first copies."""
    key, rng = _pristine_key(name, weights, num_classes, image_size), torch.get_rng_state()
    hit = next((p for p in _PRISTINE if p.key == key and torch.equal(p.rng_before, rng)), None)
    if key is not None and hit is not None:
        torch.set_rng_state(hit.rng_after)
        return _issue(_copy(hit), key), hit.source
    model, source = _loaded(name, weights, num_classes, warn, image_size)
    _PRISTINE.clear()
    if key is not None:
        _PRISTINE.append(_Pristine(key, rng, copy.deepcopy(model), source, torch.get_rng_state()))
        _issue(model, key)
    return model, source


def _issue(model: nn.Module, key: tuple[object, ...]) -> nn.Module:
    _ISSUED[model] = key
    return model


def _copy(pristine: _Pristine) -> nn.Module:
    """A model equal to the pristine one in every tensor, flag and mode: its spare overwritten in
    place (every parameter and buffer copied, gradients dropped, all trainable, train mode), else
    a deep copy. In place, resnet18's 45 MB are copied into memory already mapped: a deep copy
    allocates them anew, one page fault per 4 KiB (78 against 97-132 ms CPU on the 2 loaded
    cores here, benchmarks/README.md "per-trial overhead")."""
    spare, pristine.spare = pristine.spare, None
    if spare is None:
        return copy.deepcopy(pristine.model)
    spare.load_state_dict(pristine.model.state_dict())  # copy_ into each tensor, strict
    spare.requires_grad_(True)  # freezing is build_model's, after this
    spare.zero_grad(set_to_none=True)
    return spare.train()


def recycle(model: nn.Module) -> None:
    """Hand back a finished trial's model that its caller holds no more (a search trial keeps
    none): the next trial of the same key restores it in place instead of copying. Only a model
    this module handed out for the current key, still on the CPU (a CUDA model is copied as before)."""
    current = _PRISTINE[0] if _PRISTINE else None
    if current is None or _ISSUED.get(model) != current.key:
        return
    if any(t.device.type != "cpu" for t in (*model.parameters(), *model.buffers())):
        return
    current.spare = model


def _pristine_key(name: str, weights: str, num_classes: int, image_size: int) -> tuple[object, ...] | None:
    """What decides a built model besides the RNG: a weights file enters by its size and time of
    change (a rewritten file is read again); weights from a URI (MLflow) are never copied."""
    if weights in ("none", "imagenet"):
        return (name, weights, num_classes, image_size)
    path = Path(weights).expanduser()
    if weight_sources.scheme_of(weights) or not path.is_file():
        return None
    stat = path.stat()
    return (name, str(path.resolve()), stat.st_size, stat.st_mtime_ns, num_classes, image_size)


def clear_pristine() -> None:
    """Forget the last built model (and its spare): the next build starts from scratch."""
    _PRISTINE.clear()


def head_name(model: nn.Module) -> str:
    """The last Linear layer is the classifier on every registered family."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]


def replace_head(model: nn.Module, num_classes: int) -> None:
    path = head_name(model)
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    old = getattr(parent, attr)
    if old.out_features != num_classes:
        setattr(parent, attr, nn.Linear(old.in_features, num_classes))


def freeze(stages: list[Stage]) -> list[nn.Module]:
    """Stop gradients through the given stages; returns their modules so training can keep their
    batch-norm statistics fixed too (a frozen stage should not drift through its running stats)."""
    modules: list[nn.Module] = []
    for part in (p for stage in stages for p in stage):
        part.requires_grad_(False)
        if isinstance(part, nn.Module):
            modules.append(part)
    return modules


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, frozen) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return trainable, frozen
