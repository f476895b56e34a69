"""The end of a search says when its top values lie within noise of each other: by the spread of
`exp confirm`'s repeats when the study has them, else by the validation split's binomial error."""

from __future__ import annotations

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from exptrack.search import verdict

LR = FloatDistribution(1e-5, 1e-1, log=True)


def study_of(values: list[float], val_samples: int) -> optuna.Study:
    """Finished trials as a search stores them, on a validation split of `val_samples` images."""
    study = optuna.create_study(study_name="finetune", direction="maximize")
    for i, value in enumerate(values):
        params = {"lr": 1e-3 * (1 + i)}  # mid-range: no edge finding
        attrs = {"class_count": 10, "validation_images": val_samples}
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=value, params=params,
                                     distributions={"lr": LR}, user_attrs=attrs))  # fmt: skip
    return study


def test_top_values_within_two_binomial_errors_are_said_to_be_noise() -> None:
    # digits' 359 validation images, best 0.9666: se = sqrt(p(1-p)/n) = 0.0095, 2 se = 0.019
    study = study_of([0.9666, 0.9638, 0.9638, 0.9610, 0.9220], 359)
    (line,) = verdict.findings(study, "val_accuracy")
    assert line.startswith("the top 4 trials' val_accuracy (0.9610 to 0.9666) lie within noise of each other")
    assert "binomial standard error sqrt(p(1-p)/n) at 359 validation images, 0.0095" in line
    assert line.endswith("exp confirm finetune --top 4 --seeds 3 repeats them to tell them apart")


def test_values_apart_say_nothing_and_repeats_replace_the_binomial_error() -> None:
    assert verdict.findings(study_of([0.96, 0.90, 0.85], 359), "val_accuracy") == []
    study = study_of([0.96, 0.90, 0.85], 359)
    study.set_user_attr("confirmed", {"0": {"seeds": 3, "val_accuracy_sd": 0.04}})  # as exp confirm records
    (line,) = verdict.findings(study, "val_accuracy")
    assert "the top 2 trials' val_accuracy" in line and "exp confirm's repeats, 0.0400" in line
    assert verdict.findings(study_of([0.30, 0.29], 359), "val_loss") == []  # a loss has no binomial error
