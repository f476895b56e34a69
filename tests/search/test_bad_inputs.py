"""Bad inputs end before any trial with exit code 2 and one line naming the problem and the fix;
none writes a store (an unreachable database is tried before either is created); a password in a URL is never shown.

Values out of a config field's range (from `--set`, a search space or an edited `exp train` file)
and stores that cannot be opened (a directory, a damaged or cut-short sqlite file, a read-only
store, a database server that does not answer) are among them."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.faultkit import SMALL, run_cli_batch

GOOD = (
    "from exptrack import Study\n"
    "study = Study(name='good', search_space='space.yaml', fixed={'weights': 'none'}, dashboard=None)\n"
)
FILES = {
    "good.py": GOOD,
    "space.yaml": "lr: {float: [1.0e-3, 1.0e-2], log: true}\n",
    "syntax.py": "from exptrack import Study\nstudy = Study(\n",
    "raises.py": "raise RuntimeError('no GPU quota')\n",
    "empty.py": "x = 1\n",
    "badspace.py": GOOD.replace("space.yaml", "badspace.yaml"),
    "badspace.yaml": "lr: {float: [1.0e-2, 1.0e-3]}\n",
    "unknownkey.py": GOOD.replace("space.yaml", "unknownkey.yaml"),
    "unknownkey.yaml": "learning_rate: {float: [1.0e-3, 1.0e-2]}\n",
    "folder/keep.txt": "",
    "objective.py": GOOD.replace(
        "dashboard=None", "objectives={'val_accuracy': 'maximize', 'accuracy': 'minimize'}"
    ),
    "constraint.py": GOOD.replace("dashboard=None", "constraints=['seconds_per_epoch < 30']"),
    "option.py": GOOD.replace("dashboard=None", "sampler='tpe', sampler_options={'n_startup': 3}"),
    "pair.py": GOOD.replace(
        "dashboard=None", "objectives={'val_loss': 'minimize', 'seconds_per_epoch': 'minimize'}"
    ),
    "outside.yaml": "lr: 0.5\n",
    "negative_lr.py": GOOD.replace("space.yaml", "negative_lr.yaml"),
    "negative_lr.yaml": "lr: {float: [-0.1, -0.01]}\n",
    "zero_batch.py": GOOD.replace("space.yaml", "zero_batch.yaml"),
    "zero_batch.yaml": "batch_size: {choice: [0, 32]}\n",
    "deep.py": GOOD.replace("space.yaml", "deep.yaml"),
    "deep.yaml": "freeze_depth: {int: [0, 9]}\n",  # resnet18 has 5 stages
    "deep_branch.py": GOOD.replace("space.yaml", "deep_branch.yaml"),
    "deep_branch.yaml": "backbone:\n  choice:\n    resnet18: {freeze_depth: {int: [0, 5]}}\n"
    "    mobilenet_v3_small: {freeze_depth: {int: [1, 8], step: 3}}\n",
    "trained.yaml": "epochs: 1\nsubset: 32\nimage_size: 8\nweights: none\nlr: 0.01\nbatch_size: 16\n",
}


def sqlite_store(path: Path, kilobytes: int = 64) -> None:
    """A real sqlite database of several pages, standing in for a store a search wrote."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE runs (blob BLOB)")
        db.execute("INSERT INTO runs VALUES (?)", (os.urandom(kilobytes * 1024),))


def truncated(cwd: Path) -> None:
    sqlite_store(cwd / "mlflow.db")
    with (cwd / "mlflow.db").open("r+b") as file:
        file.truncate(file.seek(0, 2) // 2)


def random_bytes(cwd: Path) -> None:
    (cwd / "optuna.db").write_bytes(os.urandom(8192))


def read_only_stores(cwd: Path) -> None:
    for name in ("mlflow.db", "optuna.db"):
        sqlite_store(cwd / name, kilobytes=4)
        (cwd / name).chmod(0o444)


def read_only_directory(cwd: Path) -> None:
    cwd.chmod(0o555)


def edited(**values: object) -> Callable[[Path], None]:
    """`trained.yaml` as exp export wrote it, then edited by hand."""

    def edit(cwd: Path) -> None:
        text = (cwd / "trained.yaml").read_text()
        for key, value in values.items():
            text = "".join(line for line in text.splitlines(True) if not line.startswith(f"{key}:"))
            text += f"{key}: {value}\n"
        (cwd / "trained.yaml").write_text(text)

    return edit


# (case id, arguments after `exp search`, words the one-line message must contain)
CASES = [
    ("missing-file", ["nope.py"], ["does not exist"]),
    ("directory", ["folder"], ["is a directory"]),
    ("syntax-error", ["syntax.py"], ["syntax error"]),
    ("raises-on-import", ["raises.py"], ["raised RuntimeError on import", "no GPU quota"]),
    ("no-study", ["empty.py"], ["defines no Study"]),
    ("space-low-above-high", ["badspace.py"], ["lr"]),
    ("space-unknown-key", ["unknownkey.py"], ["learning_rate"]),
    (
        "freeze-depth-high-end",
        ["deep.py"],
        ["deep.yaml: parameter 'freeze_depth' high end 9 exceeds resnet18's 5 stages", "{int: [0, max]}"],
    ),
    (
        "freeze-depth-high-end-of-a-backbone-branch",
        ["deep_branch.py"],
        ["'backbone.mobilenet_v3_small.freeze_depth' high end 7 exceeds mobilenet_v3_small's"],
    ),
    ("fixed-freeze-depth-too-deep", ["good.py", "--set", "freeze_depth=7"], ["fixed freeze_depth 7 exceeds"]),
    ("unknown-sampler", ["good.py", "--sampler", "anneal"], ["unknown sampler 'anneal'", "tpe"]),
    ("unknown-pruner", ["good.py", "--pruner", "asha"], ["unknown pruner 'asha'", "median"]),
    (
        "unknown-objective",
        ["objective.py"],
        ["unknown objective 'accuracy'", "val_accuracy", "seconds_per_epoch"],
    ),
    ("bad-constraint", ["constraint.py"], ["'seconds_per_epoch < 30' is not `FIGURE <= NUMBER`"]),
    ("unknown-sampler-option", ["option.py"], ["takes no option 'n_startup'", "n_startup_trials"]),
    (
        "one-objective-sampler",
        ["pair.py", "--sampler", "cmaes"],
        ["'cmaes' optimises one objective", "nsga2"],
    ),
    (
        "enqueue-outside-space",
        ["good.py", "--enqueue", "outside.yaml"],
        ["lr=0.5 is outside the search space"],
    ),
    ("enqueue-missing-file", ["good.py", "--enqueue", "nope.yaml"], ["--enqueue nope.yaml does not exist"]),
    ("from-study-without-storage", ["good.py", "--from-study", "old"], ["no Optuna storage at optuna.db"]),
    (
        "unknown-backbone",
        ["good.py", "--set", "backbone=resnet19"],
        ["unknown backbone 'resnet19'", "resnet18"],
    ),
    ("unknown-dataset", ["good.py", "--set", "dataset=mnist2"], ["unknown dataset 'mnist2'", "digits"]),
    ("unknown-loss", ["good.py", "--set", "loss=dice"], ["unknown loss 'dice'", "focal"]),
    ("zero-trials", ["good.py", "--trials", "0"], ["--trials must be at least 1"]),
    (
        "profile-untracked",
        ["good.py", "--profile-trials", "1", "--no-tracking"],
        ["--profile-trials logs traces to MLflow", "drop --no-tracking"],
    ),
    ("negative-trials", ["good.py", "--trials", "-3"], ["--trials must be at least 1"]),
    (
        "negative-checkpoint-mb",
        ["good.py", "--checkpoint-mb", "-1"],
        ["--checkpoint-mb must be 0 (no checkpoints) to 1048576, got -1"],
    ),
    (
        "nan-checkpoint-every",
        ["good.py", "--checkpoint-every", "nan"],
        ["--checkpoint-every must be 0 or more"],
    ),
    ("set-unknown-key", ["good.py", "--set", "epoch=2"], ["unknown config key 'epoch'"]),
    ("set-wrong-type", ["good.py", "--set", "epochs=many"], ["epochs must be of type int"]),
    ("malformed-storage", ["good.py", "--storage", "sqlite//optuna.db"], ["not a valid database URL"]),
    ("malformed-tracking", ["good.py", "--tracking-uri", "htp://u:secret@host"], ["unknown scheme 'htp'"]),
    ("unreachable-tracking", ["good.py", "--tracking-uri", "http://u:secret@127.0.0.1:1"], ["unreachable"]),
    (
        "unreachable-storage",
        ["good.py", "--storage", "postgresql://u:secret@127.0.0.1:1/db"],
        ["cannot be opened"],
    ),
    (  # a password holding an unencoded `/` (SQLAlchemy takes it) is hidden whole
        "slash-in-storage-password",
        ["good.py", "--storage", "postgresql://u:top/secret@127.0.0.1:1/db"],
        ["Optuna storage postgresql+psycopg://u:***@127.0.0.1:1/db cannot be opened"],  # the driver used
    ),
    (
        "slash-in-tracking-password",
        ["good.py", "--tracking-uri", "http://u:top/secret@127.0.0.1:1"],
        ["MLflow tracking store http://u:***@127.0.0.1:1 is unreachable"],
    ),
    ("set-zero-epochs", ["good.py", "--set", "epochs=0"], ["epochs must be at least 1, got 0"]),
    ("set-negative-epochs", ["good.py", "--set", "epochs=-3"], ["epochs must be at least 1, got -3"]),
    ("set-negative-subset", ["good.py", "--set", "subset=-5"], ["subset must be at least 0, got -5"]),
    (
        "set-loss-parameter-out-of-range",
        ["good.py", "--set", "loss=focal", "--set", "loss_params.gamma=-1"],
        ["focal: gamma must be >= 0, got -1"],
    ),
    ("space-negative-lr", ["negative_lr.py"], ["parameter 'lr'", "lr must be greater than 0, got -0.1"]),
    (
        "space-zero-batch",
        ["zero_batch.py"],
        ["parameter 'batch_size'", "batch_size must be at least 1, got 0"],
    ),
    (
        "tracking-directory",
        ["good.py", "--tracking-uri", "sqlite:///folder"],
        ["MLflow tracking store folder is a directory"],
    ),
    (
        "storage-directory",
        ["good.py", "--storage", "sqlite:///folder"],
        ["Optuna storage folder is a directory"],
    ),
    (
        "tracking-unreachable-postgres",
        ["good.py", "--tracking-uri", "postgresql://u:secret@127.0.0.1:1/db"],
        ["MLflow tracking store postgresql+psycopg://u:***@127.0.0.1:1/db"],
    ),
    ("truncated-mlflow-db", ["good.py"], ["MLflow tracking store mlflow.db is truncated", "move it away"]),
    ("random-bytes-optuna-db", ["good.py"], ["Optuna storage optuna.db is not an SQLite database"]),
    ("read-only-stores", ["good.py"], ["optuna.db is read-only", "make both writable"]),
    ("read-only-directory", ["good.py"], ["optuna.db cannot be created", "is read-only"]),
]
# What a case finds in its directory besides FILES (the stores it attacks).
SETUP: dict[str, Callable[[Path], None]] = {
    "truncated-mlflow-db": truncated,
    "random-bytes-optuna-db": random_bytes,
    "read-only-stores": read_only_stores,
    "read-only-directory": read_only_directory,
    "train-negative-lr": edited(lr=-1),
    "train-zero-batch": edited(batch_size=0),
    "train-zero-epochs": edited(epochs=0),
}
# `exp train` on a hand-edited config: refused before MLflow is touched (no run, no mlflow.db).
TRAIN_CASES = [
    ("train-negative-lr", ["trained.yaml"], ["trained.yaml: lr must be greater than 0, got -1"]),
    ("train-zero-batch", ["trained.yaml"], ["trained.yaml: batch_size must be at least 1, got 0"]),
    ("train-zero-epochs", ["trained.yaml"], ["trained.yaml: epochs must be at least 1, got 0"]),
]
if not torch.cuda.is_available():
    CASES.append(("cuda-without-cuda", ["good.py", "--device", "cuda"], ["no CUDA device", "--device cpu"]))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, object, set[str]]]:
    """Every case run once through the CLI's entry point, each in a directory of its own; without
    root's power to write any file, so a read-only store is read-only for real."""
    cases, before = [], []
    for case_id, args, _ in CASES + TRAIN_CASES:
        cwd = tmp_path_factory.mktemp(case_id)
        for name, text in FILES.items():
            (cwd / name).parent.mkdir(exist_ok=True)
            (cwd / name).write_text(text)
        if case_id in SETUP:
            SETUP[case_id](cwd)
        before.append({p.name for p in cwd.iterdir()})
        if case_id.startswith("train-"):
            cases.append((cwd, ["train", *args]))
        else:  # the case's own flags last, so they win over the small defaults
            cases.append((cwd, ["search", args[0], *SMALL, "--trials", "1", *args[1:]]))
    results = run_cli_batch(cases, without_root_override=True)
    return {
        case_id: (cwd, result, names)
        for (case_id, _, _), (cwd, _), result, names in zip(
            CASES + TRAIN_CASES, cases, results, before, strict=True
        )
    }


ALL = [(c, w) for c, _, w in CASES + TRAIN_CASES]


@pytest.mark.parametrize(("case_id", "words"), ALL, ids=[c for c, _ in ALL])
@pytest.mark.slow
def test_bad_input_exits_2_with_one_line_and_writes_nothing(outcomes, case_id: str, words: list[str]) -> None:  # type: ignore[no-untyped-def]
    cwd, result, before = outcomes[case_id]
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0]
    assert "secret" not in result.stdout + result.stderr
    written = {p.name for p in cwd.iterdir()} - before
    assert written == set(), written  # no optuna.db, no mlflow.db, no mlruns/
