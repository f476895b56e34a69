"""`exp trials` and `exp studies` read back what a real search wrote, in every output format."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import pandas as pd
import pytest
from mlflow import MlflowClient
from rich.console import Console

from exptrack.errors import UserError
from exptrack.results import tables
from tests.conftest import exp_env
from tests.faultkit import run_cli_batch
from tests.fixtures_search import STUDY, TRIALS, Searched

# The listings the tests below read, by name. They only read the searched stores, so they run
# through `exp`'s real entry point in one process for the module (run_cli_batch), not one each;
# `trials STUDY --format csv`, asked by two tests, runs once. (`trials --costs` as a terminal
# table stays a process of its own: the batch widens the terminal to 400 columns.)
LISTINGS = {
    "csv": ["trials", STUDY, "--format", "csv"],
    "json": ["trials", STUDY, "--format", "json", "--state", "complete", "--top", "2"],
    "missing": ["trials", "nope"],
}


@pytest.fixture(scope="module")
def listed(searched: Searched) -> dict[str, subprocess.CompletedProcess[str]]:
    results = run_cli_batch([(searched.cwd, args) for args in LISTINGS.values()])
    return dict(zip(LISTINGS, results, strict=True))


@pytest.mark.slow
def test_trials_csv_and_json_list_every_trial_with_state_value_params_and_run_id(
    searched: Searched, listed: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    csv_out = listed["csv"]
    assert csv_out.returncode == 0, csv_out.stderr
    table = pd.read_csv(io.StringIO(csv_out.stdout))
    study = searched.study()
    client = MlflowClient(f"sqlite:///{searched.cwd / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(STUDY)
    trial_runs = client.search_runs([experiment.experiment_id], "tags.`exptrack.role` = 'trial'")
    mlflow_ids = {int(r.data.tags["exptrack.trial"]): r.info.run_id for r in trial_runs}
    for run in trial_runs:  # the params say what trained, and what was asked for
        assert (run.data.params["weights"], run.data.params["weights_requested"]) == ("none", "imagenet")
        # the run's dataset input, which fills the MLflow UI's Datasets column
        (used,) = run.inputs.dataset_inputs
        assert used.dataset.name == "digits" and re.fullmatch(r"[0-9a-f]{8}", used.dataset.digest)
        assert json.loads(used.dataset.source) == {"dataset": "digits"}
        assert json.loads(used.dataset.profile) == {
            "train_samples": 96,
            "val_samples": 96,
            "test_samples": 96,  # held out: the search's trials never score it
            "num_classes": 10,
        }
        assert {(t.key, t.value) for t in used.tags} == {("mlflow.data.context", "training")}
    assert len({r.inputs.dataset_inputs[0].dataset.digest for r in trial_runs}) == 1  # the same images
    assert "weights: imagenet could not be had" in searched.stderr  # and so does the search summary
    assert len(table) == TRIALS
    # best first: the study maximizes val_accuracy
    assert list(table["value"]) == sorted(table["value"], reverse=True)
    for row in table.itertuples(index=False):
        trial = study.trials[row.number]
        assert row.state == trial.state.name and row.value == trial.value
        assert row.run_id == trial.user_attrs["mlflow_run_id"] == mlflow_ids[row.number]
        assert row.lr == trial.params["lr"] and row.batch_size == trial.params["batch_size"]
        assert row.duration_s > 0 and row.run_status == "FINISHED"
        # offline, ImageNet could not be had: the trial says what it trained from and what was asked
        assert row.weights == "none (imagenet unavailable)"

    json_out = listed["json"]
    assert json_out.returncode == 0, json_out.stderr
    rows = json.loads(json_out.stdout)
    assert [r["number"] for r in rows] == list(table["number"][:2])
    assert all(r["state"] == "COMPLETE" for r in rows)
    # an inactive conditional parameter is null, not a made-up value
    for r in rows:
        branch = {"focal": "loss.focal.gamma", "label_smoothing": "loss.label_smoothing.smoothing"}
        for loss, column in branch.items():
            assert (r.get(column) is not None) == (r["loss"] == loss)


def run_without_torch(searched: Searched, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command, in a process that then reports whether it loaded torch (it must not: ~3 s)."""
    code = f"import sys\nfrom exptrack.cli import main\nsys.argv = ['exp', *{list(args)!r}]\n"
    code += "main()\nprint('torch imported' if 'torch' in sys.modules else 'no torch', file=sys.stderr)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=searched.cwd,
        env=exp_env(searched.cwd),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().endswith("no torch"), done.stderr
    return done


@pytest.mark.slow
def test_trials_table_loads_no_torch_and_heads_every_parameter_by_its_one_name(searched: Searched) -> None:
    shown = run_without_torch(searched, "trials", STUDY)
    header = next(line for line in shown.stdout.splitlines() if line.lstrip().startswith("number"))
    assert header.split()[:3] == ["number", "state", "value"] and "weight_decay" in header.split()
    frame = pd.DataFrame({"number": [0], "loss.focal.gamma": [2.5], "loss.label_smoothing.smoothing": [None]})
    console = Console(width=200, record=True)
    console.print(tables.to_rich(frame, "t"))
    assert "loss.focal.gamma" in console.export_text() and " gamma " not in console.export_text()


@pytest.mark.slow
def test_trials_costs_put_speed_time_and_memory_beside_the_value_as_mlflow_recorded_them(
    searched: Searched, listed: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    shown = run_without_torch(searched, "trials", STUDY, "--costs", "--format", "csv")
    table = pd.read_csv(io.StringIO(shown.stdout))
    costs = [
        "train_samples_per_second",
        "seconds_per_epoch",
        "peak_rss_mb",
    ]  # on a CPU: no GPU memory, no MFU
    assert list(table.columns[:6]) == ["number", "state", "value", *costs]
    client = MlflowClient(f"sqlite:///{searched.cwd / 'mlflow.db'}")
    for row in table.itertuples(index=False):
        tags = client.get_run(row.run_id).data.tags
        for cost in costs:
            assert getattr(row, cost) == float(tags[f"profile/{cost}"]) and getattr(row, cost) > 0
    terminal = searched.exp("trials", STUDY, "--costs")
    header = next(line for line in terminal.stdout.splitlines() if line.lstrip().startswith("number"))
    assert header.split()[:6] == ["number", "state", "value", *costs]  # shown, not left to csv/json
    plain = listed["csv"]
    assert "peak_rss_mb" not in plain.stdout.splitlines()[0]  # without --costs, as before


@pytest.mark.slow
def test_studies_lists_the_study_with_trials_by_state_and_best_value_without_torch(
    searched: Searched,
) -> None:
    listed = run_without_torch(searched, "studies", "--format", "json")
    (row,) = json.loads(listed.stdout)
    assert row["study"] == STUDY and row["direction"] == "maximize"
    assert row["trials"] == row["complete"] == TRIALS and row["pruned"] == row["fail"] == 0
    assert row["best_value"] == searched.study().best_value


@pytest.mark.slow
def test_unknown_study_is_one_line_error_exit_2(listed: dict[str, subprocess.CompletedProcess[str]]) -> None:
    missing = listed["missing"]
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        "error: no study named 'nope' in sqlite:///optuna.db; studies there: finetune"
    )


@pytest.mark.slow
def test_unknown_sort_column_or_state_names_the_valid_ones(searched: Searched) -> None:
    study = searched.study()
    frame = tables.trials_frame(study, [])
    with pytest.raises(UserError, match="--sort 'colour': no such column; use best or one of number, state"):
        tables.select(frame, study, sort="colour")
    with pytest.raises(UserError, match="--state 'done' is not one of complete, pruned"):
        tables.select(frame, study, state="done")
    # without MLflow the run ids still come from the trials' own links
    assert list(frame["run_id"]) == [t.user_attrs["mlflow_run_id"] for t in study.trials]


def test_markdown_is_a_github_table_with_blank_missing_cells() -> None:
    frame = pd.DataFrame({"number": [3, 1], "loss": ["focal", "a|b"], "gamma": [2.5, float("nan")]})
    assert tables.to_markdown(frame).splitlines() == [
        "| number | loss | gamma |",
        "|---|---|---|",
        "| 3 | focal | 2.5 |",
        "| 1 | a\\|b |  |",
    ]
