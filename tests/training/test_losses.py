"""Each registered loss: built from its own parameters, and behaving as its name promises."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from exptrack.errors import UserError
from exptrack.training import losses

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [1.0, 1.0, 1.0]])
TARGET = torch.tensor([0, 2, 1])


def test_cross_entropy_matches_torch() -> None:
    loss = losses.build_loss("cross_entropy", {})
    assert torch.allclose(loss(LOGITS, TARGET), F.cross_entropy(LOGITS, TARGET))


def test_label_smoothing_raises_the_loss_of_confident_correct_predictions() -> None:
    plain = losses.build_loss("label_smoothing", {"smoothing": 0.0})(LOGITS, TARGET)
    smoothed = losses.build_loss("label_smoothing", {"smoothing": 0.2})(LOGITS, TARGET)
    assert torch.allclose(smoothed, F.cross_entropy(LOGITS, TARGET, label_smoothing=0.2))
    assert smoothed > plain


def test_focal_with_gamma_zero_is_cross_entropy_and_larger_gamma_down_weights_easy_examples() -> None:
    ce = F.cross_entropy(LOGITS, TARGET)
    assert torch.allclose(losses.build_loss("focal", {"gamma": 0.0})(LOGITS, TARGET), ce)
    assert losses.build_loss("focal", {"gamma": 2.0})(LOGITS, TARGET) < ce


@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.77, 1.0, 2.0])
def test_focal_keeps_finite_gradients_when_a_sample_is_predicted_with_certainty(gamma: float) -> None:
    """p_true rounds to 1 in float32 for a logit margin of ~17 and more: gamma < 1 used to make the
    whole batch's gradient NaN there (a finetune trial failed with a non-finite loss)."""
    logits = torch.tensor([[40.0, 0.0, 0.0], [1.0, 2.0, 0.5]], requires_grad=True)
    target = torch.tensor([0, 1])
    loss = losses.build_loss("focal", {"gamma": gamma})(logits, target)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    # the uncertain sample's gradient is the plain formula's, as if the certain one were absent
    plain = logits.detach()[1:].clone().requires_grad_(True)
    log_p = F.log_softmax(plain, dim=1)[0, 1]
    (-((1.0 - log_p.exp()) ** gamma) * log_p / 2).backward()
    assert torch.equal(logits.grad[1], plain.grad[0])
    assert torch.allclose(logits.grad[0], torch.zeros(3), atol=1e-12)  # nothing left to learn there


def test_every_loss_trains_a_gradient() -> None:
    for name, params in {
        "cross_entropy": {},
        "label_smoothing": {"smoothing": 0.1},
        "focal": {"gamma": 2.0},
    }.items():
        logits = LOGITS.clone().requires_grad_(True)
        losses.build_loss(name, params)(logits, TARGET).backward()
        assert logits.grad is not None and logits.grad.abs().sum() > 0, name


def test_unknown_losses_and_parameters_are_user_errors() -> None:
    with pytest.raises(UserError, match="unknown loss 'hinge'"):
        losses.build_loss("hinge", {})
    with pytest.raises(UserError, match="loss 'focal' takes no parameter 'alpha'"):
        losses.build_loss("focal", {"alpha": 0.25})


def test_a_study_can_register_its_own_loss_but_not_twice() -> None:
    @losses.register_loss("test_mse_on_logits")
    def _mse() -> torch.nn.Module:
        return torch.nn.MSELoss()

    try:
        assert "test_mse_on_logits" in losses.LOSSES
        with pytest.raises(ValueError, match="already registered"):
            losses.register_loss("test_mse_on_logits")(_mse)
    finally:
        del losses.LOSSES["test_mse_on_logits"]
