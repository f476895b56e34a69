"""The GPU benchmark's driver, rehearsed on CPU with tiny sizes: both arms (`exp search` and the
plain Optuna + MLflow baseline) run two trials end to end, their stores are read back into one
JSON of figures, and the figures that need a GPU are null with a reason, never made up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow import MlflowClient

from exptrack import records
from tests.conftest import REPO, exp_env


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("gpu-study")
    command = [sys.executable, str(REPO / "benchmarks" / "gpu_study.py"), "--out", str(out), "--tiny"]
    done = subprocess.run(command, cwd=out, env=exp_env(out), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return out, json.loads((out / "gpu_study.json").read_text())


@pytest.mark.slow
def test_both_arms_finish_their_trials_and_the_gap_between_trials_is_measured(
    rehearsal: tuple[Path, dict[str, Any]],
) -> None:
    _, figures = rehearsal
    for arm in ("exptrack", "baseline"):
        result = figures[arm]
        assert result["returncode"] == 0 and result["finished_trials"] == 2, result
        assert 0.0 <= result["best_val_accuracy"] <= 1.0
        assert (
            len(result["finish_s"]) == 2
            and 0 < result["finish_s"][0] <= result["finish_s"][1] <= result["wall_s"]
        )
        assert result["between_trials_s"]["n"] == 1 and result["between_trials_s"]["median"] > 0
        assert result["ask_to_first_step_s"]["n"] == 2 and result["ask_to_first_step_s"]["median"] > 0
    comparison = figures["comparison"]
    assert comparison["equal_trials"] == 2 and comparison["speedup_at_equal_trials"] > 0
    compute = figures["compute_bound"]
    assert compute["plain_samples_per_s"] > 0 and compute["exptrack_samples_per_s"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU these figures are measured")
@pytest.mark.slow
def test_without_a_gpu_the_gpu_figures_are_null_with_a_reason(rehearsal: tuple[Path, dict[str, Any]]) -> None:
    _, figures = rehearsal
    for gpu in (figures["exptrack"]["gpu"], figures["baseline"]["gpu"], figures["compute_bound"]["gpu"]):
        assert gpu["busy_fraction"] is None and gpu["reason"].startswith("no GPU to sample")
    assert figures["comparison"]["goals"] == {
        "met": None,
        "reason": "no CUDA device: the goals are for one GPU",
    }
    assert figures["compute_bound"]["goal>=5000_samples_per_s"] is None


@pytest.mark.slow
def test_the_baseline_records_a_parent_run_and_a_nested_run_per_trial(
    rehearsal: tuple[Path, dict[str, Any]],
) -> None:
    out, _ = rehearsal
    client = MlflowClient(f"sqlite:///{out / 'work' / 'baseline' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("baseline").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert [p.info.run_name for p in parents] == ["baseline-study"] and len(children) == 2
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert {"lr", "batch_size", "weight_decay", "freeze_depth", "loss"} <= set(child.data.params)
        history = client.get_metric_history(child.info.run_id, "val_accuracy")
        assert [m.step for m in history] == [1]


@pytest.mark.slow
def test_exptrack_stores_when_each_trial_began_training(rehearsal: tuple[Path, dict[str, Any]]) -> None:
    import optuna

    out, _ = rehearsal
    study = optuna.load_study(
        study_name="finetune-gpu", storage=f"sqlite:///{out / 'work' / 'exptrack' / 'optuna.db'}"
    )
    for trial in study.trials:
        started = trial.user_attrs[records.PROFILE_ATTR][records.TRAIN_STARTED_AT]
        assert trial.datetime_start.timestamp() < started < trial.datetime_complete.timestamp()


def study_vs_baseline() -> Any:
    """benchmarks/study_vs_baseline.py as a module; the checkout and benchmarks/ it puts first on
    sys.path to import its sibling scripts are taken off again after."""
    import importlib.util

    path = REPO / "benchmarks" / "study_vs_baseline.py"
    spec = importlib.util.spec_from_file_location("study_vs_baseline", path)
    assert spec is not None and spec.loader is not None
    module, saved = importlib.util.module_from_spec(spec), list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module


def test_study_vs_baseline_runs_four_arms_by_default_each_turning_one_lever_off(tmp_path: Path) -> None:
    driver = study_vs_baseline()
    args = driver.parse_args(["--out", str(tmp_path)])
    assert args.arms == ["exptrack", "no_cache", "no_fused", "baseline"] and args.rounds == 2
    line = {arm: " ".join(driver.command(args, arm, tmp_path)) for arm in args.arms}
    assert line["no_cache"] == line["exptrack"] + " --set feature_cache=off"
    assert line["no_fused"] == line["exptrack"] + " --set fused_optimizer=off"
    assert "baseline_optuna_mlflow.py" in line["baseline"] and "--set" not in line["baseline"]
    assert driver.ARMS["baseline"][1] == {"OMP_WAIT_POLICY": "PASSIVE"}  # the fair baseline (docstring)


@pytest.mark.slow
def test_study_vs_baseline_alternates_the_arms_and_splits_the_saving_into_its_levers(tmp_path: Path) -> None:
    """Two arms, A-B-B-A (4 runs, not the default 8: the order is the same loop for any arms, and
    the default four are checked above); the lever split is then read from these real runs with
    the lever arms standing in as copies of the two that ran."""
    command = [sys.executable, str(REPO / "benchmarks" / "study_vs_baseline.py"), "--out", str(tmp_path)]
    command += ["--trials", "1", "--subset", "48", "--image-size", "16", "--epochs", "1"]
    command += ["--arms", "exptrack", "baseline"]
    done = subprocess.run(
        command, cwd=tmp_path, env=exp_env(tmp_path), capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "study_vs_baseline.json").read_text())
    runs = sorted((r["started_at"], name) for name, arm in result["runs"].items() for r in arm)
    assert [name for _, name in runs] == ["exptrack", "baseline", "baseline", "exptrack"]  # A-B-B-A
    assert all(r["finished_trials"] == 1 for arm in result["runs"].values() for r in arm)
    summary = result["summary"]
    assert summary["ratio"] == pytest.approx(summary["wall_s"]["exptrack"] / summary["wall_s"]["baseline"])
    levers = summary["levers"]  # no lever arm ran: the whole saving is `other`
    assert levers["cache_s"] is None and levers["optimizer_s"] is None
    assert levers["other_s"] == pytest.approx(levers["saving_s"])
    assert "ratio" in done.stdout and "best_val_accuracy" in done.stdout
    ran = result["runs"]  # no_cache as slow as the baseline, no_fused as fast as exptrack
    split = study_vs_baseline().report({**ran, "no_cache": ran["baseline"], "no_fused": ran["exptrack"]})
    levers = split["levers"]
    assert levers["cache_s"] + levers["optimizer_s"] + levers["other_s"] == pytest.approx(levers["saving_s"])
    assert levers["cache_s"] == pytest.approx(levers["saving_s"]) and levers["optimizer_s"] == 0


@pytest.mark.slow
def test_sleeping_trials_go_through_both_stores_from_forked_workers(tmp_path: Path) -> None:
    """scale.py's sleep kind: trials that compute nothing still ask, report and tell through Optuna
    and open, fill and close their MLflow runs, from workers forked after the imports."""
    command = [sys.executable, str(REPO / "benchmarks" / "scale.py"), "--trial-kind", "sleep"]
    command += ["--sleep", "0.05", "--workers", "2", "--forked", "--trials", "4"]
    command += ["--backends", "sqlite", "--no-deaths"]
    done = subprocess.run(
        command, cwd=tmp_path, env=exp_env(tmp_path), capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sleep (0.05 s an epoch); workers forked" in done.stdout
    line = next(line for line in done.stdout.splitlines() if " 2 workers: store time per trial" in line)
    assert "4/4 COMPLETE, 4 runs FINISHED" in line
