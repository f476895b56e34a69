"""The held-out test split: train, val and test never share an image, the same dataset always
splits the same way, the split is recorded on the run, and a search's trials never see the test
images (their values cannot depend on them)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

import exptrack
from exptrack import Study
from exptrack.config import TrialConfig
from exptrack.errors import UserError
from exptrack.training import datasets, fit

TINY = {"epochs": 1, "subset": 96, "image_size": 16, "weights": "none"}
CLASSES = [str(c) for c in range(10)]


def numbered_split(val_fraction: float, test_fraction: float) -> datasets.TensorSplit:
    """1,000 'images' that are their own index (100 per class), split as a dataset would be."""
    index = torch.arange(1000)
    return datasets.stratified_split(index, index % 10, val_fraction, CLASSES, test_fraction)


def test_train_val_and_test_share_no_image_and_cover_the_dataset() -> None:
    split = numbered_split(0.2, 0.2)
    parts = [set(split.train_x.tolist()), set(split.val_x.tolist()), set(split.test_x.tolist())]
    assert [len(p) for p in parts] == [600, 200, 200]  # 20% of each class to val, 20% to test
    assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]
    assert parts[0] | parts[1] | parts[2] == set(range(1000))
    assert all(torch.bincount(t % 10).tolist() == [20] * 10 for t in (split.val_x, split.test_x))


def test_the_same_dataset_splits_the_same_way_every_time() -> None:
    first, again = numbered_split(0.2, 0.2), numbered_split(0.2, 0.2)
    for a, b in zip(
        (first.train_x, first.val_x, first.test_x), (again.train_x, again.val_x, again.test_x), strict=True
    ):
        assert torch.equal(a, b)


def test_the_test_split_leaves_validation_as_it_was_and_test_fraction_0_is_the_old_split() -> None:
    """Validation holds the same images with or without a test split (the test share comes out of
    training); with none, train is what it was."""
    with_test, without = numbered_split(0.2, 0.2), numbered_split(0.2, 0.0)
    assert set(with_test.val_x.tolist()) == set(without.val_x.tolist())
    assert len(without.test_y) == 0 and len(without.train_y) == 800
    assert set(without.train_x.tolist()) == set(with_test.train_x.tolist()) | set(with_test.test_x.tolist())


def test_shares_that_leave_nothing_to_train_on_are_one_line() -> None:
    with pytest.raises(UserError, match=r"val_fraction \+ test_fraction must be below 1.*lower one"):
        TrialConfig(val_fraction=0.5, test_fraction=0.5)


class Facts:
    def __init__(self) -> None:
        self.setup: dict[str, Any] = {}

    def on_setup(self, facts: Mapping[str, Any]) -> None:
        self.setup = dict(facts)

    def on_epoch(self, epoch: int, metrics: Mapping[str, float]) -> bool:
        return False


@pytest.mark.slow  # trains three trials
def test_fit_records_the_split_and_scores_the_test_split_only_when_asked() -> None:
    config = TrialConfig(**TINY)  # type: ignore[arg-type]
    trial, standalone = Facts(), Facts()
    searched = fit.fit(config, trial, warn=lambda line: None)  # as a search's trial calls it
    scored = fit.fit(config, standalone, warn=lambda line: None, test=True)  # as exp train does
    assert searched.test == {} and set(scored.test) == {"test_accuracy", "test_loss"}
    assert (trial.setup["train_samples"], trial.setup["val_samples"], trial.setup["test_samples"]) == (
        96,
        96,
        96,
    )
    assert trial.setup["dataset_digest"] == standalone.setup["dataset_digest"]
    none = Facts()
    fit.fit(config.replace(test_fraction=0.0), none, warn=lambda line: None)
    assert none.setup["test_samples"] == 0 and none.setup["dataset_digest"] != trial.setup["dataset_digest"]


@datasets.register_dataset("digits_one_class_test")
def load_one_class_test(
    path: str | None, config: TrialConfig, geometry: datasets.Geometry
) -> datasets.TensorSplit:
    """Digits whose test split is blank images all labelled 0: any trial that looked at it would
    score differently from one on plain digits."""
    split = datasets.load_digits(path, config, geometry)
    split.test_x = torch.zeros_like(split.test_x)
    split.test_y = torch.zeros_like(split.test_y)
    return split


@pytest.mark.slow
def test_a_search_gives_the_same_values_whatever_the_test_split_holds(project: Path) -> None:
    stores = {"storage": project / "optuna.db", "tracking_uri": project / "mlflow.db"}
    space = str(project / "search_spaces" / "finetune.yaml")
    values = {}
    for dataset in ("digits", "digits_one_class_test"):
        study = Study(name=f"split-{dataset}", search_space=space, fixed={"dataset": dataset})
        exptrack.run_search(study, trials=2, overrides=TINY, seed=0, pruner="none", **stores)
        values[dataset] = list(exptrack.trials(study.name, sort="number", **stores)["value"])
    assert values["digits"] == values["digits_one_class_test"]
    # and the test split does differ: scored, the blank test images give another figure
    config = TrialConfig(**TINY)  # type: ignore[arg-type]
    plain = fit.fit(config, warn=lambda line: None, test=True).test
    blank = fit.fit(config.replace(dataset="digits_one_class_test"), warn=lambda line: None, test=True).test
    assert plain != blank
