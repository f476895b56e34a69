"""`exp confirm`: the top configs of a real study trained again with fresh seeds, scored on val and
test, summarised per config (mean ± 95% t-interval) with whether the top two differ; recorded on
MLflow and the study, and never trained twice."""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from exptrack import noise
from tests.conftest import TINY
from tests.faultkit import run_cli_batch


def test_intervals_use_students_t_and_welch_compares_two_configs() -> None:
    found = noise.interval([1.0, 2.0, 3.0])
    assert (found.n, found.mean, found.sd) == (3, 2.0, 1.0)
    assert found.half_width == pytest.approx(4.3027 / math.sqrt(3), abs=1e-4)  # t(0.975, 2) = 4.3027
    assert found.shown() == "2.0000 ± 2.4841"
    assert math.isnan(noise.interval([0.5]).sd) and noise.interval([0.5]).shown() == "0.5000 (1 seed)"
    assert noise.differ(noise.welch_p([0.90, 0.91, 0.90], [0.80, 0.81, 0.80]))
    assert not noise.differ(noise.welch_p([0.90, 0.80, 0.85], [0.86, 0.84, 0.88]))
    assert math.isnan(noise.welch_p([0.9], [0.8, 0.7]))
    assert noise.binomial_se(0.96, 359) == pytest.approx(0.0103, abs=1e-4)


@pytest.mark.slow
def test_confirm_repeats_the_top_two_with_fresh_seeds_and_says_whether_they_differ(
    exp, project: Path
) -> None:
    search = exp("search", "studies/finetune.py", "--trials", "3", "--pruner", "none", "--seed", "0", *TINY)
    assert search.returncode == 0, search.stderr
    done = exp("confirm", "finetune", "--top", "2", "--seeds", "2")
    assert done.returncode == 0, done.stderr
    lines = re.findall(
        r"^trial (\d+): val_accuracy (\d\.\d{4}) ± (\d\.\d{4}), test_accuracy (\d\.\d{4}) ± (\d\.\d{4}) "
        r"\(mean ± 95% t-interval, 2 seeds\)$",
        done.stdout,
        re.M,
    )
    assert len(lines) == 2, done.stdout
    top, second = (int(line[0]) for line in lines)
    assert re.search(rf"^top two \(trial {top} vs trial {second}\) (differ|do not differ) on val_accuracy: "
                     r"Welch's t-test p=", done.stdout, re.M)  # fmt: skip
    assert "4 repeats trained now, 0 found recorded" in done.stdout

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("finetune").experiment_id
    study_run = client.search_runs([experiment], "tags.`exptrack.role` = 'study'")[0]
    repeats = client.search_runs([experiment], "tags.`exptrack.role` = 'confirm'")
    assert sorted(
        (r.data.tags["exptrack.confirms"], r.data.tags["exptrack.confirm_seed"]) for r in repeats
    ) == sorted(
        (str(n), s)
        for n in (top, second)
        for s in ("1", "2")  # the trials' seed 0 + 1 and + 2
    )
    for run in repeats:  # nested beside the trials, scored on the test split
        assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == study_run.info.run_id
        assert 0 <= run.data.metrics["test_accuracy"] <= 1 and "val_accuracy" in run.data.metrics
    recorded = client.get_run(study_run.info.run_id).data.tags["exptrack.confirm_summary"]
    assert recorded.startswith(f"top two (trial {top} vs trial {second})")

    # read back in one process: confirm's second run (nothing to train), the trials, the export
    again, trials, exported = run_cli_batch(
        [(project, ["confirm", "finetune", "--top", "2", "--seeds", "2", "--format", "csv"]),
         (project, ["trials", "finetune", "--format", "json"]), (project, ["export", "finetune", "--out", "-"])]
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "0 repeats trained now, 4 found recorded" in again.stderr  # csv keeps stdout a table
    table = pd.read_csv(io.StringIO(again.stdout))
    assert list(table["trial"]) == [top, second] and list(table["seeds"]) == [2, 2]
    assert {"val_accuracy_ci_low", "test_accuracy_ci_high", "lr"} <= set(table.columns)
    assert len(client.search_runs([experiment], "tags.`exptrack.role` = 'confirm'")) == 4

    assert len(json.loads(trials.stdout)) == 3  # the repeats are not trials of the study
    confirmed = yaml.safe_load(exported.stdout)["provenance"]["confirmed"]
    assert confirmed["seeds"] == 2 and 0 <= confirmed["test_accuracy_mean"] <= 1
