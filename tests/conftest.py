"""Shared test fixtures: a scratch project directory with temporary stores, and a CLI runner.

Every test that trains uses tiny real data: a digits subset at 16 px, one epoch, random init.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Shrinks any study to seconds on a CPU: a digits subset at 16 px, one epoch, no weight download.
TINY = ["--set", "epochs=1", "--set", "subset=96", "--set", "image_size=16", "--set", "weights=none"]
# A process with these is offline for real: every download goes through a proxy on a closed
# loopback port and fails at once, while servers a test starts on loopback stay reachable.
OFFLINE = {
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost,::1",
}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working directory holding copies of studies/ and search_spaces/, with sqlite stores in it."""
    for folder in ("studies", "search_spaces", "dashboards"):
        if (REPO / folder).is_dir():
            shutil.copytree(REPO / folder, tmp_path / folder)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    yield tmp_path


def exp_env(cwd: Path) -> dict[str, str]:
    """Environment for a CLI subprocess: this checkout first on the path, stores in `cwd`."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "OPTUNA_STORAGE")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["TORCH_HOME"] = str(cwd / "torch-home")
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def run_exp(
    cwd: Path, *args: str, timeout: float = 600, check: bool = False, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `exp ARGS` as a user would (a real process), returning its exit code and output;
    `env` adds to the environment (e.g. OFFLINE)."""
    result = subprocess.run(
        [sys.executable, "-m", "exptrack", *args],
        cwd=cwd,
        env={**exp_env(cwd), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"exp {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


@pytest.fixture
def exp(project: Path):  # type: ignore[no-untyped-def]
    """`exp(*args)` runs the CLI in the scratch project."""

    def run(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return run_exp(project, *args, **kwargs)  # type: ignore[arg-type]

    return run


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> Iterator[None]:
    """Groups and GPU skips go on before the other plugins' hooks (xdist's reads the groups), and
    the groups into the node ids after them where xdist's did not take (see put_groups_in_ids)."""
    mark_groups_and_gpu_skips(items)
    yield
    if getattr(config.option, "loadgroup", False):  # set by xdist on its workers under --dist loadgroup
        put_groups_in_ids(items)


def mark_groups_and_gpu_skips(items: list[pytest.Item]) -> None:
    import torch

    group_by_module_fixtures(items)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def group_by_module_fixtures(items: list[pytest.Item]) -> None:
    """Under pytest-xdist's `--dist loadgroup` (scripts/test.sh) the tests of one module that share
    a module-scoped fixture (a tiny search, a trained model) run in one worker, so the fixture is
    built once, not once per worker; every other test goes to whichever worker is free."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        definitions = info.name2fixturedefs.values() if info is not None else ()
        if any(d[-1].scope in ("module", "class") for d in definitions if d):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))


def put_groups_in_ids(items: list[pytest.Item]) -> None:
    """pytest-xdist's loadgroup tells its scheduler an item's group by the suffix `@group` on its
    node id, which xdist 3.8 writes into `item._nodeid`; pytest 9.2 reads node ids from the
    structured `item._id` instead, so the suffix was lost and every group was split over both
    workers: each module-scoped fixture (a search, a benchmark rehearsal) was built twice on CI
    (pytest-dev/pytest-xdist#1386, fix open in #1388). Until xdist sets it, this does, on the
    workers only (they collect; the controller schedules by the ids they send)."""
    from _pytest.nodeid import coerce_node_id

    for item in items:
        marks = item.iter_markers("xdist_group")
        groups = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in marks})
        if groups and "@" not in item.nodeid and hasattr(item, "_id"):
            item._id = coerce_node_id(f"{item.nodeid}@{'_'.join(groups)}")



from tests.fixtures_postgres import postgres, tracking_server  # noqa: E402,F401  (session: PostgreSQL + mlflow server)
from tests.fixtures_search import searched  # noqa: E402,F401  (session fixture: one tiny real exp search)
