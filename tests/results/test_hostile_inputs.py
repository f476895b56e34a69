"""Hostile input (issue 25, item 4): every input a user (or a script gone wrong) can hand `exp`
either runs or ends with exit code 2, one line naming the problem, and nothing written: no store,
no file. None prints a traceback; an unexpected error is one line and a file (exit 1).

The commands run through the CLI's real entry point (`exptrack.cli.main`) in one long-lived
interpreter, one at a time (`Cli`): torch and MLflow are imported once, not per example, which
keeps the property tests (hypothesis) to seconds. The tests that need a process of their own (bytes
on the command line, the last-resort traceback) are marked slow.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow import MlflowClient

from exptrack import config as cfg
from exptrack import records
from exptrack.errors import UserError
from tests.conftest import OFFLINE, exp_env, run_exp
from tests.faultkit import RUN_CASE, SMALL
from tests.search.test_bad_inputs import GOOD

FILES = {
    "good.py": GOOD,
    "space.yaml": "lr: {float: [1.0e-3, 1.0e-2], log: true}\n",
    "slash.py": GOOD.replace("name='good'", "name='team/good'"),
    "nul.py": GOOD.replace("'space.yaml'", "'sp\\x00ace.yaml'"),
}
# A trial of `good` at SMALL's size, with MLflow: the study the results commands read.
TEMPLATE_ARGS = ["search", "good.py", *SMALL, "--trials", "1", "--seed", "0"]
MARK = "@@exp-result@@"
# Reads (cwd, env, args) as JSON lines; answers each with the exit code and output of `exp ARGS`
# run through the real entry point, on a line of its own after MARK (a child process or a library
# writing to fd 1 cannot be taken for an answer).
_LOOP = RUN_CASE + r"""
for line in sys.stdin:
    case = json.loads(line)
    os.chdir(case["cwd"])
    os.environ.update(case["env"])
    answer = run_case(case["args"])
    sys.__stdout__.write("MARK" + json.dumps(answer) + "\n")
    sys.__stdout__.flush()
""".replace("MARK", MARK)


class Cli:
    """`exp ARGS` in `cwd`, one command at a time, in one interpreter that stays up."""

    def __init__(self, home: Path) -> None:
        env = {**exp_env(home), **OFFLINE, "OMP_NUM_THREADS": "1", "COLUMNS": "400"}
        self.log = (home / "cli.log").open("w")  # the interpreter's own stderr (Optuna's logger)
        self.process = subprocess.Popen(
            [sys.executable, "-c", _LOOP],
            cwd=home,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )

    def __call__(self, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
        assert self.process.stdin is not None and self.process.stdout is not None
        # The stores by absolute URL (their flags' environment variables): MLflow keeps one store
        # per URL in a process, so `sqlite:///mlflow.db` would stay the first directory's.
        env = {
            "MLFLOW_TRACKING_URI": f"sqlite:///{cwd}/mlflow.db",
            "OPTUNA_STORAGE": f"sqlite:///{cwd}/optuna.db",
        }
        self.process.stdin.write(json.dumps({"cwd": str(cwd), "env": env, "args": list(args)}) + "\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith(MARK):
                answer = json.loads(line[len(MARK) :])
                return subprocess.CompletedProcess(args, answer["code"], answer["stdout"], answer["stderr"])
        raise AssertionError(f"the CLI interpreter died: {self.log.name}")

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)
        self.log.close()


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    runner = Cli(tmp_path_factory.mktemp("cli"))
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def template(cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory where `exp search good.py` finished its one trial: both stores written."""
    cwd = tmp_path_factory.mktemp("template")
    write_files(cwd)
    done = cli(cwd, *TEMPLATE_ARGS)
    assert done.returncode == 0, done.stderr
    return cwd


def write_files(cwd: Path) -> None:
    for name, text in FILES.items():
        (cwd / name).write_text(text)


def copy_of(template: Path) -> Path:
    cwd = Path(tempfile.mkdtemp(dir=template.parent, prefix="case-"))
    shutil.copytree(template, cwd, dirs_exist_ok=True)
    return cwd


def snapshot(cwd: Path) -> dict[str, str]:
    """Every file under `cwd` (the stores, mlruns/, anything written) by its content's hash."""
    return {
        str(path.relative_to(cwd)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(cwd.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def assert_ran_or_refused(done: subprocess.CompletedProcess[str], before: dict[str, str], cwd: Path) -> None:
    """The property: exit 0, or exit 2 with one line and every file as it was; never a traceback."""
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert done.returncode in (0, 2), (done.returncode, done.stderr[-2000:])
    if done.returncode == 2:
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
        assert snapshot(cwd) == before


# --- each crash issue 25 names: one line, exit 2, nothing written ---------------------------------

NINES = "9" * 5000
# (case id, arguments after `exp search good.py`, words the one line must contain)
SEARCH_CASES = [
    ("epochs-1e9", ["--set", "epochs=1e9"], ["epochs must be at most 10000, got 1000000000"]),
    ("image-size-overflow", ["--set", "image_size=99999999"], ["image_size must be at most 1024"]),
    ("batch-size-bound", ["--set", "batch_size=1000000"], ["batch_size must be at most 65536"]),
    ("num-workers-bound", ["--set", "num_workers=100000"], ["num_workers must be at most 64"]),
    ("seed-bound", ["--set", "seed=4294967296"], ["seed must be at most 4294967295"]),
    ("lr-not-utf8", ["--set", "lr=\udcff"], ["--set 'lr' holds a byte that is not UTF-8"]),
    (
        "yaml-tag",
        ["--set", "lr=!!python/object/apply:os.system ['touch pwned']"],
        ["not valid YAML", "python/object/apply:os.system", "no tags"],
    ),
    ("dunder-loss-param", ["--set", "loss_params.__dict__=1"], ["'__dict__' is not a parameter name"]),
    (
        "4000-digit-seed",
        ["--set", "seed=" + "9" * 4000],
        ["seed must be a whole number of at most 19 digits"],
    ),
    ("5000-digit-lr", ["--set", f"lr={NINES}"], ["is 5000 characters long; the limit is 4096"]),
    ("enqueue-not-utf8", ["--enqueue", "bytes.yaml"], ["bytes.yaml: byte 0xff at offset 4 is not UTF-8"]),
    ("enqueue-5000-digits", ["--enqueue", "digits.yaml"], ["digits.yaml: a value YAML cannot hold"]),
    ("name-10000-chars", ["--study-name", "x" * 10000], ["study name is 10000 bytes long; the limit is 200"]),
    ("name-newline", ["--study-name", "a\nb"], ["study name holds a control character ('\\n'"]),
    ("name-dotdot", ["--study-name", "../x"], ["study name '../x' names a path"]),
    (
        "synthetic-terabytes",
        ["--set", "dataset=synthetic:1000000000000"],
        ["1,000,000,000,000 images at 8 px need 192,000.0 GB as uint8, more than this machine's"],
    ),
    ("workers-bound", ["--workers", "100000"], ["--workers must be at most 256 (a process each)"]),
    ("timeout-nan", ["--timeout", "nan"], ["--timeout must be positive seconds, got nan"]),
    ("name-in-study-file", [], ["Study(name=...): study name 'team/good' names a path"]),  # slash.py
    ("nul-in-study-file", [], ["Study 'good' search space holds a control character ('\\x00'"]),  # nul.py
]
# (case id, full arguments, words): commands on the template's stores
RESULT_CASES = [
    (
        "export-proc-self",
        ["export", "good", "--out", "/proc/self"],
        ["--out /proc/self/trial-000.yaml: cannot write"],
    ),
    ("export-sys", ["export", "good", "--out", "/sys/kernel/x"], ["--out /sys/kernel/x: cannot create it"]),
    ("export-empty-out", ["export", "good", "--out", ""], ["--out is empty"]),
    ("export-out-is-a-file", ["export", "good", "--out", "good.py"], ["--out good.py is a file"]),
    ("report-out-directory", ["report", "good", "--out", "mlruns"], ["--out mlruns is a directory"]),
    ("report-dotdot-name", ["report", "../good"], ["exp report: study name '../good' names a path"]),
    ("train-not-utf8", ["train", "bytes.yaml"], ["bytes.yaml: byte 0xff at offset 4 is not UTF-8"]),
    (  # the provenance block names the run's experiment: MLflow's 500-character limit came after training
        "train-provenance-study",
        ["train", "long-study.yaml"],
        ["long-study.yaml: provenance study: study name is 10000 bytes long"],
    ),
    (
        "train-provenance-threads",
        ["train", "threads.yaml"],
        ["provenance torch_threads must be a whole number from 1 to 1024, got 1000000000"],
    ),
    (
        "train-threads-flag",
        ["train", "trained.yaml", "--threads", "1000000000"],
        ["--threads must be from 1 to 1024"],
    ),
    ("train-register-slash", ["train", "trained.yaml", "--register", "a/b"], ["--register 'a/b'", "'/'"]),
]
TRAINED = "epochs: 1\nsubset: 32\nimage_size: 8\nweights: none\nlr: 0.01\nbatch_size: 16\n"
HOSTILE_FILES = {
    "bytes.yaml": b"lr: \xff\n",
    "digits.yaml": f"lr: {NINES}\n".encode(),
    "trained.yaml": TRAINED.encode(),
    "long-study.yaml": f"{TRAINED}provenance: {{study: {'x' * 10000}, trial: 0}}\n".encode(),
    "threads.yaml": f"{TRAINED}provenance: {{torch_threads: 1000000000}}\n".encode(),
}


@pytest.fixture(scope="module")
def outcomes(
    cli: Cli, template: Path
) -> dict[str, tuple[Path, subprocess.CompletedProcess[str], dict[str, str]]]:
    """Each case once, in a directory of its own: a fresh one for `exp search`, a copy of the
    template's stores for the results commands."""
    found = {}
    on_stores = {case_id for case_id, _, _ in RESULT_CASES}
    for case_id, args, _ in SEARCH_CASES + RESULT_CASES:
        if case_id in on_stores:
            cwd = copy_of(template)
        else:
            cwd = Path(tempfile.mkdtemp(dir=template.parent, prefix=f"{case_id}-"))
            write_files(cwd)
            study = {"name-in-study-file": "slash.py", "nul-in-study-file": "nul.py"}.get(case_id, "good.py")
            args = ["search", study, *SMALL, "--trials", "1", *args]
        for name, data in HOSTILE_FILES.items():
            (cwd / name).write_bytes(data)
        before = snapshot(cwd)
        found[case_id] = (cwd, cli(cwd, *args), before)
    return found


ALL = [(c, w) for c, _, w in SEARCH_CASES + RESULT_CASES]


@pytest.mark.parametrize(("case_id", "words"), ALL, ids=[c for c, _ in ALL])
@pytest.mark.slow
def test_each_hostile_input_is_one_line_exit_2_and_writes_nothing(
    outcomes, case_id: str, words: list[str]
) -> None:  # type: ignore[no-untyped-def]
    cwd, done, before = outcomes[case_id]
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for word in words:
        assert word in lines[0]
    assert snapshot(cwd) == before  # no store created or changed, no file written, no `pwned`


@pytest.mark.slow
def test_a_quote_in_a_study_name_runs_and_finds_its_mlflow_run_again(cli: Cli, tmp_path: Path) -> None:
    """`a'b` went into the MLflow filter the tracker built by interpolation: the query broke after
    both stores were made. Now a second search finds the same study run and continues it."""
    write_files(tmp_path)
    for trials in ("1", "2"):
        done = cli(tmp_path, "search", "good.py", *SMALL, "--study-name", "a'b\"c", "--trials", trials)
        assert done.returncode == 0, done.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("a'b\"c")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get(records.ROLE_TAG) == records.ROLE_STUDY]
    trials_runs = [r for r in runs if r.data.tags.get(records.ROLE_TAG) == records.ROLE_TRIAL]
    assert len(parents) == 1 and len(trials_runs) == 2
    assert {r.data.tags[records.PARENT_RUN_TAG] for r in trials_runs} == {parents[0].info.run_id}


@pytest.mark.slow
def test_export_replaces_a_symlink_instead_of_writing_through_it(cli: Cli, template: Path) -> None:
    cwd = copy_of(template)
    precious = cwd / "precious.txt"
    precious.write_text("not yours\n")
    (cwd / "best").mkdir()
    (cwd / "best" / "trial-000.yaml").symlink_to(precious)
    done = cli(cwd, "export", "good", "--out", "best")
    assert done.returncode == 0, done.stderr
    assert precious.read_text() == "not yours\n"
    written = cwd / "best" / "trial-000.yaml"
    assert written.is_file() and not written.is_symlink()
    assert cfg.read_yaml(written)[0].weights == "none"  # the exported config, readable by exp train
    assert sorted(p.name for p in (cwd / "best").iterdir()) == ["trial-000.yaml"]  # no temporary left


LAUGHS = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 10)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)  # nine lines that expand to 10^9 values


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"lr: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply for YAML"),
        (b"lr: &a [*a]\n", "a YAML alias refers to itself"),
        (LAUGHS.encode(), "expands to more than 100,000 values"),
        (b"lr: 0.001\n" + b"#" * (1 << 20), "is over 1024 KiB"),
        (b"lr: !!python/name:os.system\n", "no tags"),
        (b"\xfflr: 1\n", "byte 0xff at offset 0 is not UTF-8"),
        (b"- 1\n", "expected a mapping of config keys, got list"),
        (b"lr: 1\nprovenance: 3\n", "provenance: must be a mapping"),
        (b"? [1]\n: 2\n", "not valid YAML ('found unhashable key')"),
    ],
    ids=["deep", "self-alias", "laughs", "over-1-MiB", "tag", "not-utf8", "list", "provenance", "list-key"],
)
def test_a_file_yaml_cannot_take_is_one_line(tmp_path: Path, content: bytes, words: str) -> None:
    """The one reader every config, --enqueue, search-space and dashboard file goes through."""
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    with pytest.raises(UserError) as caught:
        cfg.read_mapping(path)
    assert words in str(caught.value) and "\n" not in str(caught.value)


# --- properties: any --set value, --enqueue file, search space or --out path ----------------------

PROPERTY = settings(
    max_examples=int(os.environ.get("EXPTRACK_HYPOTHESIS_EXAMPLES", "12")),
    deadline=None,
    database=None,  # no .hypothesis/ folder in the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# What a shell can put on a command line: any text but NUL, lone surrogates (bytes that are not
# UTF-8) included.
NOT_UTF8 = st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF)  # how Python keeps a stray byte
ARG_TEXT = st.text(st.one_of(st.characters(exclude_characters="\x00"), NOT_UTF8), max_size=30)
YAML_SNIPPETS = st.sampled_from(
    [
        "!!python/object/apply:os.system ['touch pwned']",
        "!!binary aGk=",
        "!!set {a: null}",
        "&a [*a]",
        "[" * 300,
        "[" * 2000 + "]" * 2000,
        "1e9",
        "1e400",
        "-1e400",
        ".inf",
        ".nan",
        "~",
        "2001-12-14",
        "0x7fffffffffffffff1",
        "1_000",
        "'unterminated",
        "{a: 1}",
        "[1, 2]",
        "true",
        NINES,
        "9" * 4000,
        "%YAML 1.1\n---\n1",
    ]
)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
SET_VALUES = st.one_of(YAML_SNIPPETS, NUMBERS, ARG_TEXT)
SET_KEYS = st.one_of(
    st.sampled_from(sorted(cfg.field_types())),
    st.sampled_from(["loss_params.gamma", "loss.focal.gamma", "loss_params.__class__", "lr.x", "", " "]),
    ARG_TEXT,
)


@given(key=SET_KEYS, value=SET_VALUES)
@PROPERTY
@pytest.mark.slow
def test_any_set_value_runs_or_is_one_line_and_writes_nothing(
    cli: Cli, template: Path, key: str, value: str
) -> None:
    """On the template's finished study a valid `--set` runs to the end with nothing left to train."""
    cwd = copy_of(template)
    before = snapshot(cwd)
    done = cli(cwd, "search", "good.py", "--trials", "1", "--no-tracking", "--set", f"{key}={value}")
    assert_ran_or_refused(done, before, cwd)


CONFIG_KEYS = st.one_of(st.sampled_from(sorted(cfg.field_types())), ARG_TEXT, st.integers())
YAML_VALUES = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(), ARG_TEXT
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(ARG_TEXT, inner, max_size=3)),
    max_leaves=6,
)
RAW_YAML = st.one_of(
    YAML_SNIPPETS.map(lambda snippet: f"lr: {snippet}\n".encode()),
    st.binary(max_size=60),
    st.sampled_from(
        [b"lr: 0.005\n", b"lr: 0.005\nprovenance: 3\n", b"lr: \xff\n", b"\xef\xbb\xbflr: 0.005\n"]
    ),
)


def dumped(mapping: dict[object, object]) -> bytes:
    return yaml.safe_dump(mapping, allow_unicode=True).encode("utf-8", "surrogatepass")


ENQUEUE_FILES = st.one_of(st.dictionaries(CONFIG_KEYS, YAML_VALUES, max_size=4).map(dumped), RAW_YAML)


@given(content=ENQUEUE_FILES)
@PROPERTY
@pytest.mark.slow
def test_any_enqueue_file_runs_or_is_one_line_and_writes_nothing(
    cli: Cli, template: Path, content: bytes
) -> None:
    cwd = copy_of(template)
    (cwd / "start.yaml").write_bytes(content)
    before = snapshot(cwd)
    done = cli(cwd, "search", "good.py", "--trials", "1", "--no-tracking", "--enqueue", "start.yaml")
    assert_ran_or_refused(done, before, cwd)


# Keys a trial of SMALL's size trains quickly with (device, compile, workers and downloads left out:
# a valid value there costs minutes, not a verdict); epochs, subset and image_size are pinned by SMALL.
SPACE_KEYS = st.one_of(
    st.sampled_from(["lr", "weight_decay", "batch_size", "freeze_depth", "optimizer", "loss", "seed"]),
    st.sampled_from(["epochs", "image_size", "augment", "val_fraction", "loss_params", "compile "]),
    ARG_TEXT,
)
BOUND = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.floats(), ARG_TEXT, st.none())
SPECS = st.one_of(
    st.fixed_dictionaries({"float": st.lists(BOUND, max_size=3)}, optional={"log": YAML_VALUES}),
    st.fixed_dictionaries({"int": st.lists(BOUND, max_size=3)}, optional={"step": BOUND}),
    st.fixed_dictionaries({"choice": st.one_of(st.lists(YAML_VALUES, max_size=3), YAML_VALUES)}),
    YAML_VALUES,
)
SPACE_FILES = st.one_of(st.dictionaries(SPACE_KEYS, SPECS, max_size=3).map(dumped), RAW_YAML)


@given(content=SPACE_FILES)
@PROPERTY
@pytest.mark.slow
def test_any_search_space_runs_or_is_one_line_and_writes_nothing(
    cli: Cli, tmp_path_factory: pytest.TempPathFactory, content: bytes
) -> None:
    """A fresh directory: a valid space trains one tiny trial; anything else writes no store."""
    cwd = tmp_path_factory.mktemp("space")
    write_files(cwd)
    (cwd / "space.yaml").write_bytes(content)
    before = snapshot(cwd)
    done = cli(cwd, "search", "good.py", *SMALL, "--trials", "1", "--no-tracking")
    assert_ran_or_refused(done, before, cwd)


# --out: a relative path in the case's folder, or a name under a place nothing may be written
# (each component starts with x, so /proc/self/root and its like are never reached).
COMPONENT = ARG_TEXT.filter(lambda c: "/" not in c).map(lambda c: f"x{c}")
OUT_PATHS = st.one_of(
    st.sampled_from(["", " ", ".", "-", "good.py", "mlruns", "/proc/self", "/sys/kernel", "/dev/null"]),
    st.tuples(
        st.sampled_from(["", "out/", "/proc/self/", "/sys/kernel/", "good.py/"]),
        st.lists(COMPONENT, min_size=1, max_size=3),
    ).map(lambda parts: parts[0] + "/".join(parts[1])),
    st.just("x" * 300),  # past a file name's 255 bytes
)


@given(out=OUT_PATHS, command=st.sampled_from(["export", "report"]))
@PROPERTY
@pytest.mark.slow
def test_any_out_path_writes_there_or_is_one_line_and_never_touches_a_store(
    cli: Cli, template: Path, out: str, command: str
) -> None:
    cwd = copy_of(template)
    stores = {k: v for k, v in snapshot(cwd).items() if k.endswith(".db") or k.startswith("mlruns")}
    before = snapshot(cwd)
    done = cli(cwd, command, "good", "--out", out)
    assert_ran_or_refused(done, before, cwd)
    if command == "export":  # exp report logs its page on the study's run: a write it is for
        assert {k: v for k, v in snapshot(cwd).items() if k in stores} == stores


# --- real processes --------------------------------------------------------------------------------

BUGGY = """
from exptrack import Study
from exptrack.search.samplers import register_sampler


@register_sampler("buggy")
def buggy(setup, options):
    raise RuntimeError("bug in this sampler, reaching http://me:hunter2@example.org")


study = Study(name="buggy", search_space="space.yaml", sampler="buggy", fixed={"weights": "none"}, dashboard=None)
"""


@pytest.mark.slow
def test_bytes_that_are_not_utf8_on_a_real_command_line(tmp_path: Path) -> None:
    write_files(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "exptrack", "search", "good.py", "--set", b"lr=0.0\xff1"],
        cwd=tmp_path,
        env=exp_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert (
        done.stderr.strip()
        == "error: --set 'lr' holds a byte that is not UTF-8 ('\\udcff' in '0.0\\udcff1'); use printable UTF-8 text"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FILES)


@pytest.mark.slow
def test_an_unexpected_error_is_one_line_and_a_file_with_the_traceback(tmp_path: Path) -> None:
    """A study file's own sampler raising: exit 1, one line naming the error and the file that
    holds the whole traceback (password removed); EXPTRACK_DEBUG=1 and --debug print it."""
    write_files(tmp_path)
    (tmp_path / "buggy.py").write_text(BUGGY)
    done = run_exp(tmp_path, "search", "buggy.py", env={"TMPDIR": str(tmp_path)})
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: unexpected RuntimeError: bug in this sampler, reaching http://me:***@")
    saved = next(tmp_path.glob("exptrack-traceback-*.txt"))
    assert str(saved) in lines[0]
    text = saved.read_text()
    assert "Traceback (most recent call last)" in text and 'raise RuntimeError("bug in this sampler' in text
    assert "hunter2" not in done.stderr + text
    for how in ({"env": {"EXPTRACK_DEBUG": "1"}}, {}):
        args = ("search", "buggy.py") if how else ("--debug", "search", "buggy.py")
        shown = run_exp(tmp_path, *args, **how)  # type: ignore[arg-type]
        assert shown.returncode == 1
        assert "Traceback (most recent call last)" in shown.stderr and "buggy.py" in shown.stderr
        assert "hunter2" not in shown.stderr
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlflow.db").exists()
