"""Every shipped study file loads and every shipped search space validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from exptrack.search import space
from exptrack.study import load_study_file

REPO = Path(__file__).resolve().parents[2]
STUDIES = sorted((REPO / "studies").glob("**/*.py"))
SPACES = sorted((REPO / "search_spaces").glob("**/*.yaml"))


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_study_file_loads_with_its_search_space(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    study = load_study_file(path)
    assert study.description, "a study file opens with a docstring saying what it tunes"
    space.load(study.search_space_path(), own=study.custom_objective)


def own_spaces() -> set[Path]:
    """The spaces of studies with their own training function: their own keys are allowed."""
    studies = [load_study_file(path) for path in STUDIES]
    return {s.search_space_path().resolve() for s in studies if s.custom_objective}


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_search_space_validates(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    assert space.load(path, own=path.resolve() in own_spaces()).params
    assert path.read_text().startswith("# exp "), "a search space opens with the command that runs it"


def test_there_is_something_to_check() -> None:
    assert STUDIES and SPACES
