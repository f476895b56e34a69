"""The design's shape, enforced: imports point down the package table, the package has no import
cycle, training never reaches optuna or mlflow (at any depth), MLflow is called only from
`tracking/`, torch only from `training/`, the fast results commands load no torch, record
names live in `records.py`, and no module grows past MAX_MODULE_LINES."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from exptrack import records

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "exptrack"
CORE = {
    "config",
    "config_values",
    "study",
    "records",
    "errors",
    "registry",
    "study_store",
    "processes",
    "yaml_files",
    "noise",
}
# package -> the packages it may import (DESIGN.md's table); core modules import only core ones
ALLOWED = {
    "cli": {"cli", "search", "results", "tracking", "training", "stores", "core"},
    "api": {
        "search",
        "results",
        "tracking",
        "training",
        "stores",
        "core",
    },  # exptrack.run_search(...), exptrack.trials(...)
    "search": {"search", "training", "tracking", "stores", "core"},
    "results": {"results", "training", "tracking", "stores", "core"},
    "tracking": {"tracking", "stores", "core"},
    "stores": {"stores", "core"},
    "training": {"training", "core"},
    "core": {"core"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path) -> list[str]:
    """Every module `path` imports (also inside functions), with `from pkg import mod` resolved to
    the module when `mod` is one."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.append(candidate if candidate in MODULES else node.module)
    return found


def layer(module: str) -> str | None:
    """cli, search, results, tracking, training or core; None for the entry points."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return None
    return "core" if parts[1] in CORE else parts[1]


GRAPH = {name: sorted({m for m in imports_of(path) if m in MODULES}) for name, path in MODULES.items()}


@pytest.mark.parametrize("module", [m for m in MODULES if layer(m)])
def test_imports_point_down_the_package_table(module: str) -> None:
    own = layer(module)
    assert own is not None
    wrong = [target for target in GRAPH[module] if layer(target) not in ALLOWED[own]]
    assert not wrong, f"{module} ({own}) imports {wrong}; it may import {sorted(ALLOWED[own])}"


# A module a reader can hold in mind: past 400 lines (issue 21) a file holds two things; split it
# along its seam (config.py's field table vs config_values' checks of one value).
MAX_MODULE_LINES = 400


def test_no_module_is_over_max_module_lines() -> None:
    lines = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    over = sorted(f"{name}: {count} lines" for name, count in lines.items() if count > MAX_MODULE_LINES)
    assert over == [], f"split these along a seam (at most {MAX_MODULE_LINES} lines a module): {over}"


def test_the_package_has_no_import_cycle() -> None:
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in GRAPH[module]:
            if state.get(target) == "open":
                cycle = [*path[path.index(target) :], target] if target in path else [module, target]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in GRAPH:
        if module not in state:
            visit(module, [module])


def loaded_after_import(modules: list[str]) -> set[str]:
    """Top-level names of every module a fresh interpreter holds after importing `modules`."""
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nprint(' '.join(sorted({{k.split('.')[0] for k in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(done.stdout.split())


@pytest.mark.slow
def test_nothing_training_imports_at_any_depth_is_optuna_or_mlflow() -> None:
    training = [m for m in MODULES if m.startswith("exptrack.training")]
    assert len(training) >= 8
    assert not loaded_after_import(training) & {"optuna", "mlflow"}


@pytest.mark.slow
def test_the_results_tables_export_sync_and_the_cli_load_no_torch_and_help_no_optuna() -> None:
    readers = ["exptrack.cli", "exptrack.results.tables", "exptrack.results.export", "exptrack.search.sync"]
    loaded = loaded_after_import(readers)
    assert "optuna" in loaded and "pandas" in loaded  # the imports really ran
    assert "torch" not in loaded
    assert not loaded_after_import(["exptrack.cli"]) & {"optuna", "numpy", "torch"}  # exp --help


def test_torch_is_imported_only_under_training() -> None:
    outside = [
        name
        for name, path in MODULES.items()
        if not name.startswith("exptrack.training")
        and any(m.split(".")[0] in ("torch", "torchvision") for m in imports_of(path))
    ]
    assert outside == [], "call torch through a function in exptrack/training/ instead"


def test_mlflow_is_imported_only_under_tracking() -> None:
    outside = [
        name
        for name, path in MODULES.items()
        if not name.startswith("exptrack.tracking")
        and any(m.split(".")[0] == "mlflow" for m in imports_of(path))
    ]
    assert outside == []


def record_names() -> set[str]:
    """Every key records.py names (not the values a key takes, such as a role or a status)."""
    keys = [v for k, v in vars(records).items() if k.isupper() and not k.startswith(("ROLE_", "RUN_STATUS"))]
    names = {v for v in keys if isinstance(v, str)}
    return names | {k for v in keys if isinstance(v, dict) for k in v}


RECORD_READERS = {"user_attrs", "tags", "params", "metrics", "provenance"}  # x.user_attrs["key"], .get("key")
RECORD_WRITERS = {"set_user_attr", "set_tag", "log_param", "log_metric"}


def key_literals(tree: ast.AST) -> list[str]:
    """String literals used as a record key: subscripts and `.get` of a record mapping, the key of
    a record writer."""
    found = []
    for node in ast.walk(tree):
        subscript = isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute)
        if subscript and node.value.attr in RECORD_READERS and isinstance(node.slice, ast.Constant):
            found.append(node.slice.value)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            first = node.args[0]
            owner = node.func.value
            reads = (
                node.func.attr == "get" and isinstance(owner, ast.Attribute) and owner.attr in RECORD_READERS
            )
            if (reads or node.func.attr in RECORD_WRITERS) and isinstance(first, ast.Constant):
                found.append(first.value)
    return [f for f in found if isinstance(f, str)]


def test_record_keys_are_spelled_only_in_records() -> None:
    names = record_names()
    assert {"mlflow_run_id", "exptrack.trial", "retry_of", "mlflow.parentRunId", "config"} <= names
    distinctive = {n for n in names if "." in n or "_" in n}  # never an ordinary word elsewhere
    spelled = []
    for name, path in MODULES.items():
        if name == "exptrack.records":
            continue
        tree = ast.parse(path.read_text())
        literals = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)}
        spelled += [f"{name}: {key!r}" for key in sorted(literals & distinctive)]
        spelled += [f"{name}: {key!r} as a key" for key in key_literals(tree) if key in names]
    assert spelled == []


# What parsing a store URL looks like (training/ parses only weight-download URLs, and may not import stores/): splitting at "://", urllib's or SQLAlchemy's parsers, or a test of
# a URL's scheme by its first characters. Building one (f"sqlite:///{path}") is not parsing.
_URL_PARSING = re.compile(r'"://"|urlsplit|urlparse|make_url|startswith\(\(?"(sqlite|https?|postgres|mysql)')


def test_no_module_outside_stores_parses_a_url() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0] not in ("stores", "training")  # training: weight downloads
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if _URL_PARSING.search(line)
    ]
    assert offenders == [], "parse store URLs in exptrack/stores/ (a StoreURL) instead:\n" + "\n".join(offenders)


_TAG_NAME = re.compile(r"(^|_)TAGS?$|TAG_PREFIX$")  # records' MLflow tag names: FAIL_REASON_TAG, ...


def test_mlflow_tag_names_are_used_only_under_tracking() -> None:
    """Other packages ask tracking/ (`runs.open_trial_run`, `queries.by_trial_number`, ...), so the
    tag layout can change in one package."""
    used = []
    for name, path in MODULES.items():
        if name.startswith("exptrack.tracking") or name == "exptrack.records":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            named = [node.attr] if isinstance(node, ast.Attribute) else []
            if isinstance(node, ast.ImportFrom) and node.module == "exptrack.records":
                named = [alias.name for alias in node.names]
            used += [f"{name}: {tag}" for tag in named if _TAG_NAME.search(tag)]
    assert used == [], "read and write MLflow tags through a function in exptrack/tracking/"
