"""The `exp` command itself: help that shows every default, `-h`, `--version`, shell completion,
and output that a log file or a pipe receives whole."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from exptrack import __version__
from tests.faultkit import run_cli_batch
from tests.fixtures_search import STUDY, TRIALS, Searched

COMMANDS = ("search", "trials", "export", "train", "report", "ui", "studies")
STUDY_FILE = "from exptrack import Study\nstudy = Study(name='s', search_space='SPACE', fixed=FIXED)\n"
# Each test's `exp` commands, by the name the test reads them by. They run through the real entry
# point in one process for the module (run_cli_batch): one interpreter start instead of four;
# `search --help` and `trials --help`, asked by two tests each, run once.
CASES: dict[str, list[str]] = {
    "top": ["-h"],
    "version": ["--version"],
    "search-help": ["search", "--help"],
    "export-h": ["export", "-h"],
    "train-h": ["train", "-h"],
    "help": ["--help"],
    **{f"{name}-help": [name, "--help"] for name in COMMANDS},
    "broken": ["search", "broken.py"],
    "typo": ["search", "typo.py"],
    "epoch": ["search", "epoch.py"],
    "backbone": ["search", "good.py", "--set", "backbone=resnet81"],
    "trials-help": ["trials", "--help"],
    "studies-h": ["studies", "-h"],
    "trials-missing": ["trials"],
    "drop-help": ["trials", "drop", "--help"],
}


def write_study_files(where: Path) -> None:
    """A space YAML broken at line 3, one with a typo'd key, and study files using them."""
    (where / "space.yaml").write_text(
        "lr: {float: [1.0e-3, 1.0e-2]}\nbatch_size: {choice: [16, 32]\nloss: x\n"
    )
    (where / "typo.yaml").write_text("lr: {float: [1.0e-3, 1.0e-2], lgo: true}\n")
    (where / "broken.py").write_text(STUDY_FILE.replace("SPACE", "space.yaml").replace("FIXED", "{}"))
    (where / "typo.py").write_text(STUDY_FILE.replace("SPACE", "typo.yaml").replace("FIXED", "{}"))
    epoch = STUDY_FILE.replace("SPACE", "typo.yaml").replace("FIXED", "{'epoch': 2}")
    (where / "epoch.py").write_text(epoch)
    (where / "good.yaml").write_text("lr: {float: [1.0e-3, 1.0e-2]}\n")
    (where / "good.py").write_text(STUDY_FILE.replace("SPACE", "good.yaml").replace("FIXED", "{}"))


Answers = dict[str, subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> Answers:
    """Every case in CASES, run once in one directory holding the study files."""
    where = tmp_path_factory.mktemp("cli")
    write_study_files(where)
    results = run_cli_batch([(where, args) for args in CASES.values()])
    return dict(zip(CASES, results, strict=True))


@pytest.mark.slow
def test_help_shows_the_defaults_and_exp_has_version_short_help_and_completion(answers: Answers) -> None:
    top, version, search, export, train = (
        answers[k] for k in ("top", "version", "search-help", "export-h", "train-h")
    )
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


@pytest.mark.slow
def test_output_to_a_file_or_pipe_never_cuts_or_wraps_a_run_id(searched: Searched) -> None:
    run_ids = [t.user_attrs["mlflow_run_id"] for t in searched.study().trials]
    listed = searched.exp("trials", STUDY)  # stdout is a pipe here, as in CI or `exp ... > log`
    for output in (searched.stdout, listed.stdout):  # the search summary, then the trials table
        lines = output.splitlines()
        for run_id in run_ids:
            assert any(re.search(rf"\b{run_id}\b", line) for line in lines), output
        assert "…" not in output


@pytest.mark.slow
def test_a_piped_search_ends_on_a_whole_last_frame_with_no_trial_running(searched: Searched) -> None:
    """Issue 19, item 13: the search ran with stderr a pipe; its bar's last frame is one line."""
    frames = [line for line in searched.stderr.splitlines() if line.startswith("trials ")]
    assert frames, searched.stderr
    last = frames[-1]
    assert "running trial" not in last and "…" not in last, last  # ended, and not cut at 80 columns
    assert f"{TRIALS}/{TRIALS}" in last and re.search(r"best val_accuracy=\d\.\d{4}", last), last


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


@pytest.mark.slow
def test_help_lists_commands_in_workflow_order_with_no_type_hints_or_doubled_defaults(
    answers: Answers,
) -> None:
    helps = [answers["help"], *(answers[f"{name}-help"] for name in COMMANDS)]
    assert all(r.returncode == 0 for r in helps), [r.stderr for r in helps]
    listed = [line.strip("│ ").split(" ")[0] for line in helps[0].stdout.splitlines()]
    assert [name for name in listed if name in COMMANDS] == list(COMMANDS)  # search, trials, export, ...
    for result in helps:
        text = " ".join(result.stdout.replace("│", " ").split())  # a help cell's lines, joined
        assert "<bool>" not in text and "list[" not in text, text
        assert not re.search(r"\[default: [^\]]*\] \[default:", text), text
    search = " ".join(helps[1].stdout.replace("│", " ").split())
    assert "--enqueue FILE|DIR" in search and "[default: 0: none]" in search


@pytest.mark.slow
def test_a_broken_yaml_names_line_and_column_and_a_typo_gets_did_you_mean(answers: Answers) -> None:
    broken, typo, epoch, backbone = (answers[k] for k in ("broken", "typo", "epoch", "backbone"))
    assert [r.returncode for r in (broken, typo, epoch, backbone)] == [2, 2, 2, 2]
    assert broken.stderr.startswith("error: ") and "space.yaml:3:1: not valid YAML" in broken.stderr
    assert "unknown key 'lgo' (did you mean 'log'?)" in typo.stderr
    assert "unknown config key 'epoch' (did you mean 'epochs'?)" in epoch.stderr
    assert "unknown backbone 'resnet81' (did you mean 'resnet18'?)" in backbone.stderr


@pytest.mark.slow
def test_a_bad_study_file_is_refused_before_torch_is_imported(tmp_path: Path) -> None:
    """The search's modules import torch (4-5 s idle, 25 s on a loaded 2-core machine); a typo in
    the study file, a --set or the space's YAML is told before that (2 s measured there)."""
    import subprocess
    import sys

    from tests.conftest import exp_env

    (tmp_path / "space.yaml").write_text("lr: {float: [1.0e-3, 1.0e-2]\n")
    (tmp_path / "bad.py").write_text(
        "from exptrack import Study\nstudy = Study(name='b', search_space='space.yaml')\n"
    )
    probe = (
        "import sys\nfrom exptrack.cli import main\nsys.argv = ['exp', 'search', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    print(exc.code, 'torch' in sys.modules)\n"
    )
    for args in (["bad.py"], ["bad.py", "--set", "epoch=2"]):
        done = subprocess.run(
            [sys.executable, "-c", probe, *args],
            cwd=tmp_path,
            env=exp_env(tmp_path),
            capture_output=True,
            text=True,
        )
        assert done.stdout.split() == ["2", "False"], (done.stdout, done.stderr)
        assert done.stderr.startswith("error: ")


@pytest.mark.slow
def test_trials_and_studies_help_show_the_usage_a_user_types(answers: Answers) -> None:
    """`trials` and `studies` are groups whose listing is a hidden default command: their help,
    and the usage an error prints, read `exp trials ...`, never `exp trials list ...`."""
    trials, studies, missing, drop = (
        answers[k] for k in ("trials-help", "studies-h", "trials-missing", "drop-help")
    )
    assert trials.returncode == 0 and studies.returncode == 0 and drop.returncode == 0
    assert "Usage: exp trials [OPTIONS] {study_name}" in trials.stdout
    assert "Usage: exp studies [OPTIONS]" in studies.stdout
    assert missing.returncode == 2 and "Usage: exp trials [OPTIONS] {study_name}" in missing.stderr
    assert "Try 'exp trials -h' for help" in missing.stderr
    assert "Usage: exp trials drop [OPTIONS]" in drop.stdout
    assert " list " not in trials.stdout + studies.stdout + missing.stderr
