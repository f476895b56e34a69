"""Resume safety: re-running a stored study whose direction, metric or search space changed is
refused with the difference shown, unless --new-study or a new --study-name is given."""

from __future__ import annotations

from pathlib import Path

import optuna

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
    ]
    results = run_cli_batch([(project, args) for args in cases])
    codes = [r.returncode for r in results]
    assert codes == [0, 2, 2, 2, 0, 0, 0], [r.stderr for r in results]
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
    assert "new study 'resumable-2'" in results[5].stderr

    storage = "sqlite:///optuna.db"
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
    assert names == ["resumable", "resumable-2", "resumable-by-loss"]
    original = optuna.load_study(study_name="resumable", storage=storage)
    assert len(original.trials) == 1 and original.user_attrs["metric"] == "val_loss"
    fresh = optuna.load_study(study_name="resumable-2", storage=storage)
    assert fresh.user_attrs["search_space"]["lr"]["float"] == [1.0e-4, 1.0e-2] and len(fresh.trials) == 1
