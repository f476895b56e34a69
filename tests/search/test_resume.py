"""Resume safety: re-running a stored study whose direction, metric or search space changed is
refused with the difference shown, unless --new-study or a new --study-name is given; --new-study
on an unchanged study changes nothing, and re-running it continues the same NAME-2."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from tests.faultkit import SMALL, run_cli_batch

SPACE = "lr: {float: [1.0e-3, 1.0e-2], log: true}\n"
WIDER = "lr: {float: [1.0e-4, 1.0e-2], log: true}\n"


def study_file(project: Path, name: str, metric: str, direction: str, space: str) -> str:
    (project / f"{name}.yaml").write_text(space)
    (project / f"{name}.py").write_text(
        "from exptrack import Study\n"
        f"study = Study(name='resumable', search_space='{name}.yaml', metric='{metric}',\n"
        f"    direction='{direction}', fixed={{'weights': 'none', 'epochs': 1}}, pruner='none',\n"
        "    sampler='random', dashboard=None)\n"
    )
    return f"{name}.py"


@pytest.mark.slow
def test_a_changed_study_is_refused_with_the_difference_unless_new_study_or_new_name(project: Path) -> None:
    base = study_file(project, "base", "val_loss", "minimize", SPACE)
    metric = study_file(project, "metric", "train_loss", "minimize", SPACE)
    direction = study_file(project, "direction", "val_loss", "maximize", SPACE)
    space = study_file(project, "space", "val_loss", "minimize", WIDER)
    search = ["search", "--trials", "1", "--no-tracking", *SMALL]
    cases = [
        [*search, base],
        [*search, metric],
        [*search, direction],
        [*search, space],
        [*search, base],  # unchanged: resumes, nothing to run
        [*search, space, "--new-study"],
        [*search, metric, "--study-name", "resumable-by-loss"],
        [*search, base, "--new-study"],  # unchanged: --new-study does nothing, the study continues
        [*search, space, "--new-study"],  # the same command again continues resumable-2
        ["search", "--help"],
    ]
    results = run_cli_batch([(project, args) for args in cases])
    codes = [r.returncode for r in results]
    assert codes == [0, 2, 2, 2, 0, 0, 0, 0, 0, 0], [r.stderr for r in results]
    fix = "; use --new-study or --study-name NEW"
    assert (
        results[1].stderr.strip()
        == f"error: study 'resumable' was created with metric=val_loss, now train_loss{fix}"
    )
    assert (
        results[2].stderr.strip()
        == f"error: study 'resumable' was created with direction=minimize, now maximize{fix}"
    )
    refused = results[3].stderr.strip()
    assert refused.startswith("error: study 'resumable' was created with search space lr ")
    assert (
        'lr {"float":[0.001,0.01],"log":true}, now {"float":[0.0001,0.01],"log":true}' in refused
        and refused.endswith(fix)
    )
    assert "this search starts study 'resumable-2'" in results[5].stderr
    assert "--new-study" not in results[7].stderr and "resumable-" not in results[7].stderr
    assert "this search continues study 'resumable-2'" in results[8].stderr
    help_text = " ".join(results[9].stdout.split())
    assert "Only when the stored study's direction, metric, search space or fixed config" in help_text

    storage = "sqlite:///optuna.db"
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
    assert names == ["resumable", "resumable-2", "resumable-by-loss"]
    original = optuna.load_study(study_name="resumable", storage=storage)
    assert len(original.trials) == 1 and original.user_attrs["metric"] == "val_loss"
    fresh = optuna.load_study(study_name="resumable-2", storage=storage)
    assert fresh.user_attrs["search_space"]["lr"]["float"] == [1.0e-4, 1.0e-2] and len(fresh.trials) == 1


def test_changed_objectives_or_constraints_are_a_changed_study(tmp_path: Path) -> None:
    from exptrack.errors import UserError
    from exptrack.search import changed_study
    from exptrack.study import Study

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    stored = optuna.create_study(study_name="pair", storage=storage, directions=["maximize", "minimize"])
    stored.set_user_attr("metric", "val_accuracy")
    stored.set_user_attr("objectives", ["val_accuracy", "seconds_per_epoch"])
    stored.set_user_attr("constraints", ["seconds_per_epoch <= 30"])
    space = {"lr": {"float": [1e-3, 1e-2]}}
    stored.set_user_attr("search_space", space)
    pair = {"val_accuracy": "maximize", "seconds_per_epoch": "minimize"}

    def check(**fields: object) -> str:
        spec = Study(name="pair", search_space="s.yaml", **fields)  # type: ignore[arg-type]
        return changed_study.check(storage, "pair", changed_study.declaration(spec, space), False)

    assert check(objectives=pair, constraints=["seconds_per_epoch <= 30"]) == "pair"  # unchanged
    with pytest.raises(UserError) as one:
        check(metric="val_accuracy", constraints=["seconds_per_epoch <= 30"])
    assert str(one.value) == (
        "study 'pair' was created with objectives val_accuracy (maximize), seconds_per_epoch (minimize), "
        "now val_accuracy (maximize); use --new-study or --study-name NEW"
    )
    flipped = {"seconds_per_epoch": "minimize", "val_accuracy": "maximize"}
    with pytest.raises(UserError, match=r"objectives val_accuracy .*, now seconds_per_epoch"):
        check(objectives=flipped, constraints=["seconds_per_epoch <= 30"])
    with pytest.raises(
        UserError, match=r"constraints \[seconds_per_epoch <= 30\], now \[seconds_per_epoch <= 20\]"
    ):
        check(objectives=pair, constraints=["seconds_per_epoch <= 20"])


def test_another_training_function_is_a_changed_study(tmp_path: Path) -> None:
    from exptrack.errors import UserError
    from exptrack.search import changed_study
    from exptrack.study import Study

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    space = {"lr": {"float": [1e-3, 1e-2]}}
    own = Study(name="own", search_space="s.yaml", objective="my_train:train", metric="score")
    declared = changed_study.declaration(own, space)
    stored = optuna.create_study(study_name="own", storage=storage, direction="maximize")
    for key, value in (
        ("metric", "score"),
        ("search_space", space),
        ("training_function", own.objective_name),
    ):
        stored.set_user_attr(key, value)
    assert changed_study.check(storage, "own", declared, False) == "own"  # the same function
    other = Study(name="own", search_space="s.yaml", objective="other_train:train", metric="score")
    with pytest.raises(UserError) as changed:
        changed_study.check(storage, "own", changed_study.declaration(other, space), False)
    assert str(changed.value) == (
        "study 'own' was created with objective=my_train:train, now other_train:train; "
        "use --new-study or --study-name NEW"
    )


@pytest.mark.slow
def test_a_changed_fixed_config_is_a_changed_study_and_trials_shows_an_older_mix(project: Path) -> None:
    """A quick look (`--set epochs=2`) on a stored study is refused with the difference, or runs
    under its own name; how a trial runs (`--set num_workers=0`) is no change. A study an older
    exptrack let mix shows the differing keys in `exp trials`."""
    base = study_file(project, "base", "val_loss", "minimize", SPACE)
    search = ["search", base, "--trials", "1", "--no-tracking", *SMALL]
    cases = [
        search,
        [*search, "--set", "epochs=2"],
        [*search, "--set", "num_workers=0", "--trials", "2"],  # how it runs: the study continues
        [*search, "--set", "epochs=2", "--study-name", "resumable-quick"],
    ]
    results = run_cli_batch([(project, args) for args in cases])
    assert [r.returncode for r in results] == [0, 2, 0, 0], [r.stderr for r in results]
    assert results[1].stderr.strip() == (
        "error: study 'resumable' was created with fixed epochs=1, now 2; use --new-study or --study-name NEW"
    )
    storage = "sqlite:///optuna.db"
    assert len(optuna.load_study(study_name="resumable", storage=storage).trials) == 2
    # an older exptrack recorded the new fixed config and ran on: the study now holds a mix
    optuna.load_study(study_name="resumable", storage=storage).set_user_attr(
        "fixed", {"weights": "none", "epochs": 2, "subset": 32, "image_size": 8, "test_fraction": 0.2}
    )
    mixed = run_cli_batch([(project, [*search, "--set", "epochs=2", "--trials", "3"]),
                           (project, ["trials", "resumable", "--format", "csv"])])  # fmt: skip
    assert [r.returncode for r in mixed] == [0, 0], [r.stderr for r in mixed]
    table = mixed[1].stdout.splitlines()
    assert "epochs" in table[0].split(",")
    epochs = [row.split(",")[table[0].split(",").index("epochs")] for row in table[1:]]
    assert sorted(epochs) == ["1", "1", "2"]
    assert "trials of study 'resumable' differ in fixed config (epochs; shown as columns)" in mixed[1].stderr
