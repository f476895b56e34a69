"""`Study`: what a study file declares (what to tune, not how), loading one by path, `--set` overrides."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from exptrack import config as cfg
from exptrack import records
from exptrack.config_values import check_text
from exptrack.errors import UserError, did_you_mean

# What an objective or a constraint may name: a figure training reports, by its bare name.
FIGURES = (*records.EPOCH_METRICS, *records.PROFILE_FIGURES)
DIRECTIONS = ("maximize", "minimize")
BUILT_IN_OBJECTIVE = "finetune"  # `Study.objective_name` of the built-in fine-tuning
# A study name is at most 200 bytes of UTF-8: it names the report file `NAME-dashboard.html`,
# and a file name stops at 255 bytes (ext4, xfs); MLflow's own limit on the experiment is 500
# characters, and `--new-study` may add `-2`.
MAX_NAME_BYTES = 200
# The dashboard a study names by default, and the copy of it that ships inside the package
# (dashboards/study.yaml is the user-facing copy, kept the same by a test): a study searched
# outside this repository still gets its dashboard.
DEFAULT_DASHBOARD = "dashboards/study.yaml"
PACKAGED_DASHBOARD = Path(__file__).with_name("default_dashboard.yaml")
_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")


@dataclasses.dataclass(frozen=True)
class Constraint:
    """`figure <= limit` or `figure >= limit` on a figure a trial reports."""

    figure: str
    op: str
    limit: float

    def violation(self, value: float) -> float:
        """How far `value` breaks the constraint (> 0), or how far inside it is (<= 0)."""
        return value - self.limit if self.op == "<=" else self.limit - value

    def __str__(self) -> str:  # the constraint's name in Optuna: `trainable_params <= 10500000`
        limit = int(self.limit) if self.limit.is_integer() and abs(self.limit) < 1e15 else self.limit
        return f"{self.figure} {self.op} {limit}"


def parse_constraint(text: str, where: str, custom: bool = False) -> Constraint:
    match = _CONSTRAINT.match(text) if isinstance(text, str) else None
    limit = _number(match.group(3)) if match else None
    if match is None or limit is None:
        raise UserError(f"{where}: constraint {text!r} is not `FIGURE <= NUMBER` or `FIGURE >= NUMBER`")
    _check_figure(match.group(1), "constraint", where, custom)
    return Constraint(match.group(1), match.group(2), limit)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _check_figure(name: str, role: str, where: str, custom: bool = False) -> None:
    """A figure the built-in fine-tuning reports; a study's own training function reports figures
    of its own (`val_f1`), so there any plain name will do."""
    if custom:
        if not isinstance(name, str) or not name.isidentifier():
            raise UserError(
                f"{where}: {role} {cfg.shown(name)} is not a plain name; use letters, digits and _"
            )
        return
    if name not in FIGURES:
        raise UserError(f"{where}: unknown {role} {name!r}{did_you_mean(name, FIGURES)}; use one of {', '.join(FIGURES)}")


def check_name(name: Any, where: str) -> str:
    """A study name, checked once before any store is written: non-empty printable text (no
    newline, control character or byte that is not UTF-8) of at most MAX_NAME_BYTES, and no path
    separator or `.`/`..`, since `exp report` writes `NAME-dashboard.html`. Quotes are fine: the
    tracker never puts a name inside an MLflow filter string."""
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"{where}: a study name must be a non-empty string, got {cfg.shown(name)}")
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        raise UserError(f"{where}: study name is {size} bytes long; the limit is {MAX_NAME_BYTES} (UTF-8)")
    check_text(name, f"{where}: study name")
    if "/" in name or "\\" in name or name in (".", ".."):
        raise UserError(f"{where}: study name {name!r} names a path; use letters, digits, - and _")
    return name


@dataclasses.dataclass(frozen=True)
class Study:
    """A study file's declaration. `fixed` holds the config values that are not searched.

    One objective is `metric=` + `direction=` (val_accuracy, maximize by default); several are
    `objectives={"val_accuracy": "maximize", "seconds_per_epoch": "minimize"}`, after which
    `metric`/`direction` are the first objective's. `constraints` are `FIGURE <= NUMBER` strings
    (or a mapping FIGURE -> "<= NUMBER"); `starting_points` are configs (searched keys as an
    exported file writes them) run first. `sampler=None` picks tpe (nsga2 for several objectives).
    """

    name: str
    search_space: str
    metric: str = ""
    direction: str = ""
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    pruner: str = "median"
    sampler: str | None = None
    dashboard: str | None = DEFAULT_DASHBOARD
    description: str = ""
    source_path: Path | None = None  # set by load_study_file
    objectives: Mapping[str, str] = dataclasses.field(default_factory=dict)
    constraints: Sequence[str] | Mapping[str, str] = ()
    starting_points: Sequence[Mapping[str, Any]] = ()
    sampler_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    pruner_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # the training function: None is the built-in fine-tuning; else a function of the study file
    # or "module:function" (a module beside the study file, or an installed one)
    objective: str | Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        check_name(self.name, "Study(name=...)")
        where = f"Study {self.name!r}"
        objectives = self._objectives(where)
        for figure, direction in objectives.items():
            _check_figure(figure, "objective" if self.objectives else "metric", where, self.custom_objective)
            if direction not in DIRECTIONS:
                raise UserError(f"{where}: direction must be maximize or minimize, got {direction!r}")
        first = next(iter(objectives.items()))
        object.__setattr__(self, "objectives", objectives)
        object.__setattr__(self, "metric", first[0])
        object.__setattr__(self, "direction", first[1])
        self.parsed_constraints()  # a bad constraint ends here, when the file is loaded
        for key in ("sampler_options", "pruner_options"):
            if not isinstance(getattr(self, key), Mapping):
                raise UserError(f"{where}: {key} must be a dict of option -> value")
        points = self.starting_points
        if isinstance(points, Mapping | str) or not all(isinstance(p, Mapping) for p in points):
            raise UserError(f"{where}: starting_points must be a list of dicts like {{'lr': 1e-3}}")
        self._check_paths(where)
        _check_objective(self.objective, where)
        cfg.from_dict(self.fixed, source=f"{where} fixed")  # type-check early

    def _check_paths(self, where: str) -> None:
        """The files it names are paths of printable text: a NUL byte raised ValueError from the
        file system, a number TypeError."""
        for key, value in (("search space", self.search_space), ("dashboard", self.dashboard)):
            if value is not None and not isinstance(value, str | Path):
                raise UserError(f"{where}: {key} must be a path, got {cfg.shown(value)}")
            if value is not None:
                check_text(str(value), f"{where} {key}")

    def _objectives(self, where: str) -> dict[str, str]:
        if not self.objectives:
            return {self.metric or "val_accuracy": self.direction or "maximize"}
        if not isinstance(self.objectives, Mapping):
            raise UserError(f"{where}: objectives must be a dict like {{'val_accuracy': 'maximize'}}")
        first = next(iter(self.objectives.items()))
        # metric/direction are the first objective's (a copy of a loaded Study has them set so)
        if (self.metric or first[0], self.direction or first[1]) != first:
            raise UserError(f"{where}: give metric=/direction= or objectives=, not both")
        return dict(self.objectives)

    @property
    def directions(self) -> tuple[str, ...]:
        return tuple(self.objectives.values())

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def parsed_constraints(self) -> list[Constraint]:
        where = f"Study {self.name!r}"
        items = self.constraints
        if isinstance(items, Mapping):
            items = [f"{figure} {bound}" for figure, bound in items.items()]
        elif isinstance(items, str):
            items = [items]
        return [parse_constraint(text, where, self.custom_objective) for text in items]

    @property
    def custom_objective(self) -> bool:
        """Does the study train with its own function instead of the built-in fine-tuning?"""
        return self.objective is not None

    @property
    def objective_name(self) -> str:
        """The training function's name as a changed study is told by it: `finetune` (the
        built-in), a study file's own function by its name (`train`: the file's module name is
        not stable), else the "module:function" as written."""
        if self.objective is None:
            return BUILT_IN_OBJECTIVE
        if callable(self.objective):
            return str(getattr(self.objective, "__qualname__", None) or repr(self.objective))
        return self.objective

    def objective_function(self) -> Callable[..., Any] | None:
        """The study's own training function (None: the built-in), a "module:function" name
        imported as the study file's own imports are, from the study file's folder first."""
        if self.objective is None or callable(self.objective):
            return self.objective
        folder = self.source_path.parent if self.source_path is not None else Path.cwd()
        return _import_objective(self.objective, folder, f"Study {self.name!r}")

    def with_overrides(self, overrides: Mapping[str, Any]) -> Study:
        """A copy whose fixed part has `--set` values merged in (checked against TrialConfig)."""
        fixed = cfg.apply_overrides(self.fixed, overrides)
        cfg.from_dict(fixed, source="--set")
        return dataclasses.replace(self, fixed=fixed)

    def resolve(self, relative: str) -> Path:
        """A path named in the study, found from the working directory or next to the study file."""
        path = Path(relative)
        if path.is_absolute():
            return path
        bases = [Path.cwd()]
        if self.source_path is not None:
            bases += [self.source_path.parent, self.source_path.parent.parent]
        for base in bases:
            if (base / path).exists():
                return base / path
        return bases[0] / path

    def dashboard_path(self) -> Path | None:
        """The dashboard file the study names, found as `resolve` finds files; None when it names
        none or the file is absent. The default one, absent here, is the package's own copy."""
        if not self.dashboard:
            return None
        path = self.resolve(self.dashboard)
        if not path.is_file() and str(self.dashboard) == DEFAULT_DASHBOARD:
            return PACKAGED_DASHBOARD
        return path.resolve() if path.is_file() else None

    def search_space_path(self) -> Path:
        path = self.resolve(self.search_space)
        if not path.is_file():
            raise UserError(
                f"Study {self.name!r}: search space {self.search_space} not found; fix search_space= in the study file"
            )
        return path


def _check_objective(objective: Any, where: str) -> None:
    """`objective=` is a function or its "module:function" name; a metric's name there is the
    likeliest slip (the metric is `metric=`), so the message says which is which."""
    if objective is None or callable(objective):
        return
    if not isinstance(objective, str):
        raise UserError(
            f"{where}: objective must be a function or 'module:function', got {cfg.shown(objective)}"
        )
    if objective in FIGURES or not re.fullmatch(r"[A-Za-z_][\w.]*[.:][A-Za-z_]\w*", objective):
        raise UserError(
            f"{where}: objective={objective!r} is not 'module:function'; objective= names your training "
            "function (e.g. 'my_train:train'), metric= the figure to optimise"
        )


def _import_objective(name: str, folder: Path, where: str) -> Callable[..., Any]:
    """`module:function` (or `module.function`): the module is looked up beside the study file
    first, then where Python finds installed ones; the function must be callable."""
    module_name, sep, attr = name.partition(":")
    if not sep:
        module_name, _, attr = name.rpartition(".")
    sys.path.insert(0, str(folder))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(
            f"{where}: objective {name!r}: module {module_name!r} not found beside {folder} or installed ({exc})"
        ) from exc
    except Exception as exc:
        raise UserError(
            f"{where}: objective {name!r}: importing {module_name} raised {type(exc).__name__} ({exc})"
        ) from exc
    finally:
        sys.path.remove(str(folder))
    function = getattr(module, attr, None)
    if not callable(function):
        raise UserError(f"{where}: objective {name!r}: {module_name} has no function {attr!r}")
    return function


def load_study_file(path: Path) -> Study:
    """Import a study file and return the one `Study` it defines."""
    if not path.exists():
        raise UserError(f"study file {path} does not exist; pass a path like studies/finetune.py")
    if path.is_dir():
        raise UserError(f"{path} is a directory; pass a study file inside it, e.g. {path}/finetune.py")
    module = _import(path)
    found = [v for v in vars(module).values() if isinstance(v, Study)]
    if not found:
        raise UserError(f"{path} defines no Study; add `study = Study(name=..., search_space=...)`")
    if len(found) > 1:
        raise UserError(f"{path} defines {len(found)} Study objects; keep one per study file")
    study = found[0]
    description = study.description or (module.__doc__ or "").strip()
    loaded = dataclasses.replace(study, source_path=path.resolve(), description=description)
    loaded.objective_function()  # a name that imports nothing ends here, when the file is loaded
    return loaded


def _import(path: Path) -> ModuleType:
    name = f"exptrack_study_{abs(hash(path.resolve()))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"{path} cannot be imported as Python; a study file is a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise UserError(f"{path}:{exc.lineno}: syntax error ({exc.msg}); fix the study file") from exc
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from exc
    except Exception as exc:
        raise UserError(f"{path} raised {type(exc).__name__} on import ({exc}); fix the study file") from exc
    return module
