"""The suite's own scheduling (scripts/test.sh: `pytest -n 2 --dist loadgroup`): the tests of a
module that share a module-scoped fixture run in one pytest-xdist worker, so the fixture (a tiny
search, a benchmark rehearsal: 30 s each on CI) is built once, not once per worker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import exp_env

MODULE = '''
import os
from pathlib import Path

import pytest

LOG = Path(__file__).with_name("log.txt")


def write(line):
    with LOG.open("a") as log:
        log.write(line + "\\n")


@pytest.fixture(scope="module")
def built():
    write("built " + os.environ["PYTEST_XDIST_WORKER"])


@pytest.mark.parametrize("i", range(6))
def test_reads_the_fixture(built, i):
    write("reads " + os.environ["PYTEST_XDIST_WORKER"])


@pytest.mark.parametrize("i", range(6))
def test_alone(i):
    write("alone " + os.environ["PYTEST_XDIST_WORKER"])
'''


@pytest.mark.slow
def test_a_module_fixture_is_built_once_and_its_tests_share_one_worker(tmp_path: Path) -> None:
    (tmp_path / "test_grouped.py").write_text(MODULE)
    command = [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-n", "2", "--dist", "loadgroup"]
    command += ["-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), "test_grouped.py"]
    env = exp_env(tmp_path)
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = (tmp_path / "log.txt").read_text().split()
    built = [w for kind, w in zip(lines[::2], lines[1::2], strict=True) if kind == "built"]
    readers = {w for kind, w in zip(lines[::2], lines[1::2], strict=True) if kind == "reads"}
    assert len(built) == 1 and readers == set(built), lines
    assert lines.count("alone") == 6 and lines.count("reads") == 6
