"""The design's layering: training code never imports optuna or mlflow."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "exptrack"
TRAINING_SIDE = [
    "train.py",
    "data.py",
    "models.py",
    "losses.py",
    "profiling.py",
    "config.py",
    "batching.py",
    "imagefiles.py",
    "resolvers.py",
    "weight_sources.py",
    "signals.py",
    "registry.py",
]


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("module", [m for m in TRAINING_SIDE if (PACKAGE / m).exists()])
def test_training_modules_import_neither_optuna_nor_mlflow(module: str) -> None:
    assert not imported_roots(PACKAGE / module) & {"optuna", "mlflow"}
