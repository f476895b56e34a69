"""Bad inputs end before any trial with exit code 2 and one line naming the problem and the fix;
none writes a store (an unreachable database is tried before either is created); a password in a URL is never shown."""

from __future__ import annotations

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
}
# (case id, arguments after `exp search`, words the one-line message must contain)
CASES = [
    ("missing-file", ["nope.py"], ["does not exist"]),
    ("directory", ["folder"], ["is a directory"]),
    ("syntax-error", ["syntax.py"], ["syntax error"]),
    ("raises-on-import", ["raises.py"], ["raised RuntimeError on import", "no GPU quota"]),
    ("no-study", ["empty.py"], ["defines no Study"]),
    ("space-low-above-high", ["badspace.py"], ["lr"]),
    ("space-unknown-key", ["unknownkey.py"], ["learning_rate"]),
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
]
if not torch.cuda.is_available():
    CASES.append(("cuda-without-cuda", ["good.py", "--device", "cuda"], ["no CUDA device", "--device cpu"]))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, object]]:
    """Every case run once through the CLI's entry point, each in a directory of its own."""
    cases = []
    for case_id, args, _ in CASES:
        cwd = tmp_path_factory.mktemp(case_id)
        for name, text in FILES.items():
            (cwd / name).parent.mkdir(exist_ok=True)
            (cwd / name).write_text(text)
        # the case's own flags last, so they win over the small defaults
        cases.append((cwd, ["search", args[0], *SMALL, "--trials", "1", *args[1:]]))
    results = run_cli_batch(cases)
    return {
        case_id: (cwd, result)
        for (case_id, _, _), (cwd, _), result in zip(CASES, cases, results, strict=True)
    }


@pytest.mark.parametrize(("case_id", "words"), [(c, w) for c, _, w in CASES], ids=[c for c, _, _ in CASES])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(outcomes, case_id: str, words: list[str]) -> None:  # type: ignore[no-untyped-def]
    cwd, result = outcomes[case_id]
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0]
    assert "secret" not in result.stdout + result.stderr
    written = {p.name for p in cwd.iterdir()} - set(FILES) - {"folder"}
    assert written == set(), written  # no optuna.db, no mlflow.db
