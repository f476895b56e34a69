"""The `exp` command itself: help that shows every default, `-h`, `--version`, shell completion,
and output that a log file or a pipe receives whole."""

from __future__ import annotations

import re
from pathlib import Path

from exptrack import __version__
from tests.faultkit import run_cli_batch
from tests.fixtures_search import STUDY, Searched


def test_help_shows_the_defaults_and_exp_has_version_short_help_and_completion(tmp_path: Path) -> None:
    top, version, search, export, train = run_cli_batch(
        [(tmp_path, ["-h"]), (tmp_path, ["--version"]), (tmp_path, ["search", "--help"]),
         (tmp_path, ["export", "-h"]), (tmp_path, ["train", "-h"])]
    )  # fmt: skip
    assert all(r.returncode == 0 for r in (top, version, search, export, train))
    assert version.stdout.strip() == f"exp (exptrack) {__version__}"
    assert "--install-completion" in top.stdout and "--show-completion" in top.stdout  # typer's own
    assert "-h" in top.stdout and "--version" in top.stdout
    # the defaults written in help strings were swallowed as rich markup; now each one shows
    for text in (
        "[default: sqlite:///optuna.db]",
        "[default: sqlite:///mlflow.db]",
        "[env var: OPTUNA_STORAGE]",
        "[default: the study file's]",
        "[default: 20]",
    ):
        assert text in search.stdout, text
    assert "[default: 1; multi-objective: the Pareto set]" in export.stdout
    assert "[default: the trial's, for identical results]" in train.stdout


def test_output_to_a_file_or_pipe_never_cuts_or_wraps_a_run_id(searched: Searched) -> None:
    run_ids = [t.user_attrs["mlflow_run_id"] for t in searched.study().trials]
    listed = searched.exp("trials", STUDY)  # stdout is a pipe here, as in CI or `exp ... > log`
    for output in (searched.stdout, listed.stdout):  # the search summary, then the trials table
        lines = output.splitlines()
        for run_id in run_ids:
            assert any(re.search(rf"\b{run_id}\b", line) for line in lines), output
        assert "…" not in output


def test_training_progress_is_drawn_on_the_search_bar_while_it_runs() -> None:
    from rich.console import Console
    from rich.progress import Progress, TextColumn

    from exptrack.cli.options import RichTasks

    console = Console(record=True, force_terminal=True, width=120)
    bar = Progress(TextColumn("{task.description} {task.completed:.0f}/{task.total:.0f}"), console=console)
    bar.start()
    with RichTasks(bar)("downloading resnet18 ImageNet weights (MB)", 45) as task:
        task.advance(45)
        bar.refresh()
    bar.stop()
    assert "downloading resnet18 ImageNet weights (MB) 45/45" in console.export_text()
    assert not bar.tasks  # gone from the bar once done
