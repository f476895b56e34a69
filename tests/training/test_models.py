"""Backbones: every registered one builds at a small size, stage counts per the table, freezing."""

from __future__ import annotations

import pytest
import torch

from exptrack.errors import UserError
from exptrack.training import backbones

# the table in backbones.py's docstring
STAGES = {
    "resnet18": 5,
    "resnet34": 5,
    "resnet50": 5,
    "resnet101": 5,
    "resnet152": 5,
    "mobilenet_v3_small": 5,
    "mobilenet_v3_large": 6,
    "efficientnet_b0": 6,
    "convnext_tiny": 5,
    "vit_b_16": 5,
}


def test_the_zoo_is_registered_with_its_documented_stage_counts() -> None:
    assert {name: backbones.stage_count(name) for name in STAGES} == STAGES
    assert set(STAGES) <= set(backbones.BACKBONES)


@pytest.mark.parametrize("name", list(STAGES))
def test_each_backbone_builds_at_32_px_with_a_new_head_and_runs(name: str) -> None:
    torch.manual_seed(0)
    built = backbones.build_model(name, "none", num_classes=3, freeze_depth=0, image_size=32)
    assert built.weights_source == "none"
    # every registered family normalises with its ImageNet weights' statistics
    assert built.mean == pytest.approx((0.485, 0.456, 0.406))
    assert built.std == pytest.approx((0.229, 0.224, 0.225))
    built.model.eval()
    with torch.no_grad():
        out = built.model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 3)


def test_vit_takes_any_multiple_of_16_and_refuses_other_sizes() -> None:
    built = backbones.build_model("vit_b_16", "none", num_classes=4, freeze_depth=0, image_size=16)
    with torch.no_grad():
        assert built.model.eval()(torch.randn(1, 3, 16, 16)).shape == (1, 4)
    with pytest.raises(UserError, match="image_size=24 does not suit vit_b_16: use a multiple of 16"):
        backbones.build_model("vit_b_16", "none", 4, 0, image_size=24)
    with pytest.raises(UserError, match="too small for convnext_tiny"):
        backbones.build_model("convnext_tiny", "none", 4, 0, image_size=16)


@pytest.mark.parametrize(("name", "depth"), [("resnet18", 2), ("mobilenet_v3_small", 5), ("vit_b_16", 1)])
def test_frozen_stages_get_no_gradient_and_stay_unchanged_after_a_step(name: str, depth: int) -> None:
    torch.manual_seed(0)
    built = backbones.build_model(name, "none", num_classes=3, freeze_depth=depth, image_size=32)
    model = built.model
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    stages = backbones.backbone(name).stages(model)[:depth]
    in_stages = {id(p) for part in (x for s in stages for x in s) for p in _parameters(part)}
    assert set(frozen) == {n for n, p in model.named_parameters() if id(p) in in_stages}  # exactly those
    head = backbones.head_name(model)
    assert {f"{head}.weight", f"{head}.bias"} <= set(trainable)  # the new head is never frozen
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    for module in built.frozen_modules:
        module.eval()
    torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 0])).backward()
    optimizer.step()
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], before) for n, before in frozen.items())
    assert any(not torch.equal(params[n], before) for n, before in trainable.items())


def _parameters(part: torch.nn.Module | torch.nn.Parameter) -> list[torch.nn.Parameter]:
    return list(part.parameters()) if isinstance(part, torch.nn.Module) else [part]


def test_freeze_depth_beyond_the_stages_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"freeze_depth=7 is out of range for resnet18: use 0\.\.5"):
        backbones.build_model("resnet18", "none", 3, 7, image_size=32)
    with pytest.raises(UserError, match="unknown backbone 'resnet19'"):
        backbones.stage_count("resnet19")


def test_preprocessing_follows_the_weights_transforms() -> None:
    prep = backbones.preprocessing("resnet50")
    assert (prep.crop, prep.resize) == (224, 232)  # resnet50's V2 weights resize to 232
    assert prep.mean == pytest.approx((0.485, 0.456, 0.406))
    assert prep.geometry(0) == (224, 232) and prep.geometry(64) == (64, 66)
